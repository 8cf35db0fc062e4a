"""Run folders: one place creates them, one context manager sets their status, one reader.

A run folder holds

- ``manifest.json``: the config, seeds, package versions, git commit, data sources with
  their verified digests, start and end times, and the run's status;
- ``metrics.csv``: one row per (run, model, split, round, epoch, node, class, metric),
  appended and flushed as each value is known, so an interrupted run keeps what it computed;
- ``confusion.csv``: confusion-matrix counts in long form (model, split, round, true, predicted);
- ``final_model.npz`` (federated runs), ``trail/`` and ``blobs/`` (ledger-backed runs,
  :mod:`bflsim.runfolder.trail`), ``figures/``.

:meth:`RunFolder.start` is the lifecycle: ``running`` while its block runs, then
``complete``, ``stopped`` (a :class:`RunStopped`: the rule or the chain cannot go on; the
completed rounds stand), ``interrupted`` (Ctrl-C) or ``failed`` (anything else).
:func:`read_run` gives a folder back as a typed :class:`Run`. Figures and tables are pure
functions of these files; nothing re-runs an experiment.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bflsim.config import ExperimentConfig, parse_experiment, to_dict
from bflsim.runfolder.blobs import load_arrays, save_arrays
from bflsim.runfolder.provenance import git_commit, package_versions, utc_now
from bflsim.vectors import Weights

MANIFEST = "manifest.json"
METRICS = "metrics.csv"
CONFUSION = "confusion.csv"
FINAL_MODEL = "final_model.npz"
FIGURES = "figures"
METRIC_COLUMNS = ("run_id", "model", "split", "round", "epoch", "node", "class_name", "metric", "value")
CONFUSION_COLUMNS = ("run_id", "model", "split", "round", "true", "predicted", "count")
STATUSES = ("running", "complete", "stopped", "interrupted", "failed")
INTERRUPTED_MARK = ".interrupted-"  # a plan's unfinished point, kept aside: <point>.interrupted-<time>


class RunStopped(RuntimeError):
    """The run cannot go on (too few usable updates, a failing chain): it ends ``stopped``."""


@dataclass
class RunFolder:
    """Writes one run's tidy rows and manifest, incrementally."""

    path: Path
    run_id: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        parent: str | Path,
        config: ExperimentConfig,
        *,
        path: Path | None = None,
        point: Mapping[str, Any] | None = None,
        **manifest: Any,
    ) -> RunFolder:
        """Make a new folder for ``config`` and write its manifest (plus ``manifest`` entries).

        By default the folder is ``parent/<name>-<time>``, made unique; a plan passes the
        exact ``path`` of its point instead (it must not exist yet) and the ``point``
        (name, label, overrides) it stands for.
        """
        if path is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path(parent) / f"{config.name}-{stamp}"
            suffix = 1
            while path.exists():
                suffix += 1
                path = Path(parent) / f"{config.name}-{stamp}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path=path, run_id=path.name)
        run.manifest = {
            "run_id": run.run_id,
            "status": "running",
            "started": utc_now(),
            "command": sys.argv,
            "config": to_dict(config),
            "seeds": config.seeds(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            **({"point": dict(point)} if point is not None else {}),
            **manifest,
        }
        run.write_manifest()
        with open(run.metrics_path, "w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)
        with open(run.confusion_path, "w", newline="") as fh:
            csv.writer(fh).writerow(CONFUSION_COLUMNS)
        return run

    @classmethod
    @contextmanager
    def start(
        cls,
        parent: str | Path,
        config: ExperimentConfig,
        *,
        path: Path | None = None,
        point: Mapping[str, Any] | None = None,
        **manifest: Any,
    ) -> Iterator[RunFolder]:
        """Create the folder (:meth:`create`) and keep its status for the length of the block."""
        run = cls.create(parent, config, path=path, point=point, **manifest)
        try:
            yield run
        except KeyboardInterrupt:
            run.finish("interrupted", error="interrupted (Ctrl-C)")
            raise
        except RunStopped as err:
            run.finish("stopped", error=str(err))
            raise
        except BaseException as err:
            run.finish("failed", error=f"{type(err).__name__}: {err}")
            raise
        run.finish("complete")

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def confusion_path(self) -> Path:
        return self.path / CONFUSION

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    def write_manifest(self, **updates: Any) -> None:
        """Merge ``updates`` into the manifest and rewrite it atomically."""
        self.manifest.update(updates)
        tmp = self.path / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=_json_default) + "\n")
        tmp.replace(self.path / MANIFEST)

    def log(
        self,
        metrics: Mapping[str, float],
        *,
        model: str = "",
        split: str = "",
        round: int | None = None,
        epoch: int | None = None,
        node: int | None = None,
        class_name: str = "",
    ) -> None:
        """Append one row per metric and flush."""
        rows = [
            (self.run_id, model, split, _blank(round), _blank(epoch), _blank(node), class_name, name, float(value))
            for name, value in metrics.items()
        ]
        with open(self.metrics_path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)

    def log_confusion(
        self, cm: np.ndarray, class_names: tuple[str, ...], *, model: str, split: str, round: int | None = None
    ) -> None:
        """Append the confusion matrix in long form."""
        rows = [
            (self.run_id, model, split, _blank(round), class_names[t], class_names[p], int(cm[t, p]))
            for t in range(cm.shape[0])
            for p in range(cm.shape[1])
        ]
        with open(self.confusion_path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)

    def save_final_model(self, weights: Weights) -> None:
        save_arrays(self.path / FINAL_MODEL, weights)

    def finish(self, status: str, **updates: Any) -> None:
        """Set the run's final status (only :meth:`start` should call this)."""
        if status not in STATUSES[1:]:
            raise ValueError(f"run status must be one of {list(STATUSES[1:])}; got {status!r}")
        self.write_manifest(status=status, finished=utc_now(), **updates)


@dataclass(frozen=True)
class Run:
    """A run folder as it is on disk: the manifest, the typed config, the tidy tables."""

    path: Path
    manifest: dict[str, Any]

    @cached_property
    def config(self) -> ExperimentConfig:
        return parse_experiment(self.manifest["config"])

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    @property
    def status(self) -> str:
        return str(self.manifest.get("status"))

    @property
    def point(self) -> dict[str, Any]:
        return self.manifest.get("point") or {}

    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.path / METRICS)

    def confusion(self) -> pd.DataFrame:
        table = pd.read_csv(self.path / CONFUSION)
        return table if "round" in table else table.assign(round=np.nan)  # folders before rounds were logged

    def final_model(self) -> Weights:
        return load_arrays(self.path / FINAL_MODEL)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a run folder")
    return json.loads(path.read_text())


def read_run(run_dir: str | Path) -> Run:
    """The run folder ``run_dir`` (its config parsed, old keys upgraded)."""
    return Run(Path(run_dir), read_manifest(run_dir))


def read_metrics(runs: Iterable[Run]) -> pd.DataFrame:
    """Concatenate the tidy metric rows of several runs."""
    frames = [run.metrics() for run in runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)


def read_confusion(runs: Iterable[Run]) -> pd.DataFrame:
    frames = [run.confusion() for run in runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONFUSION_COLUMNS)


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
