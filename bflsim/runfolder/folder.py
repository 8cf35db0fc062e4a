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
completed rounds stand), ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (anything else).
:meth:`RunFolder.resume` reopens an interrupted run at its last checkpoint
(:mod:`bflsim.runfolder.checkpoint`). The manifest names its writer (a random token, the
process id, host and start time; :mod:`bflsim.runfolder.lifecycle`): every write checks that
the folder still holds this writer's running run, so a leftover thread of a finished or
interrupted run cannot write into it, nor into a newer run at the same path.
:func:`read_run` gives a folder back as a typed :class:`Run`. Figures and tables are pure
functions of these files; nothing re-runs an experiment.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bflsim.config import ExperimentConfig, config_digest, parse_recorded, to_dict
from bflsim.runfolder import checkpoint as ckpt
from bflsim.runfolder import tracking
from bflsim.runfolder.blobs import load_arrays, save_arrays
from bflsim.runfolder.checkpoint import reference_path
from bflsim.runfolder.lifecycle import (
    RunInterrupted,
    StaleWriter,
    check_writer,
    descendants,
    effective_status,
    new_token,
    process_identity,
    status_line,
)
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
    token: str = ""  # this writer's, as the manifest's writer.token (default: the manifest's, else new)
    closed: bool = False  # finished: nothing more is written
    resumed_from: ckpt.Checkpoint | None = None  # the checkpoint a resumed run carries on from

    def __post_init__(self) -> None:
        self.token = self.token or (self.manifest.get("writer") or {}).get("token") or new_token()
        self._lock = threading.RLock()  # the server thread writes while a signal may mark the run

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
            "writer": process_identity(run.token),
            "command": sys.argv,
            "config": to_dict(config),
            "config_digest": config_digest(config),
            "seeds": config.seeds(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            **({"point": dict(point)} if point is not None else {}),
            **manifest,
        }
        run._write_manifest()
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
        with run.lifecycle():
            yield run

    @classmethod
    @contextmanager
    def resume(cls, path: str | Path) -> Iterator[RunFolder]:
        """Reopen the interrupted run at ``path`` at its last checkpoint (:attr:`resumed_from`);
        keep its status as :meth:`start` does.

        The run must be ``interrupted`` (by a signal, or its process gone) and hold a
        checkpoint. Rows and trail lines written after the checkpoint (the round in progress
        at the stop) are dropped; the manifest lists each resumption under ``resumed``.
        """
        path = Path(path)
        manifest = read_manifest(path)
        status = effective_status(manifest)
        if status == "running":
            writer = manifest.get("writer") or {}
            raise RuntimeError(
                f"{path}: the run is still running (pid {writer.get('pid')} on {writer.get('host')}); "
                "stop it first (Ctrl-C or SIGTERM)"
            )
        if status != "interrupted":
            raise ValueError(f"{path}: only an interrupted run can be resumed; this one is {status_line(manifest)}")
        checkpoint = ckpt.read_checkpoint(path)
        if checkpoint is None:
            raise ValueError(f"{path}: no round was completed before the interruption (no {ckpt.STATE}); run it again")
        run = cls(path=path, run_id=str(manifest.get("run_id", path.name)), manifest=manifest,
                  token=new_token(), resumed_from=checkpoint)  # a new writer: the old one's objects are stale
        dropped = ckpt.truncate_to(path, checkpoint)
        previous = {k: manifest.get(k) for k in ("status", "error", "finished", "writer")}
        for stale in ("finished", "error", "final_accuracy", "final_model_digest", "wall_seconds"):
            run.manifest.pop(stale, None)
        for key in ckpt.BOOKKEEPING:  # the bookkeeping as it was at the checkpoint
            run.manifest.pop(key, None)
        run.manifest.update(checkpoint.manifest)
        run.manifest["resumed"] = [
            *manifest.get("resumed", []),
            {"at": utc_now(), "from_round": checkpoint.server_round, "dropped_lines": dropped,
             "command": sys.argv, "previous": previous},
        ]
        run.manifest.update(status="running", writer=process_identity(run.token))
        run._write_manifest()
        with run.lifecycle():
            yield run

    @contextmanager
    def lifecycle(self) -> Iterator[None]:
        """``running`` while the block runs, then the status of what ended it."""
        try:
            yield
        except KeyboardInterrupt as err:
            how = err.args[0] if isinstance(err, RunInterrupted) else "SIGINT"
            self._finish_quietly("interrupted", error=f"interrupted ({how})")
            if not hasattr(err, "run_dir"):  # for the one line the command line prints
                checkpoint = ckpt.read_checkpoint(self.path)
                err.run_dir = self.path  # type: ignore[attr-defined]
                err.rounds_kept = checkpoint.server_round if checkpoint else 0  # type: ignore[attr-defined]
                err.in_plan = "point" in self.manifest  # type: ignore[attr-defined]
            raise
        except StaleWriter:
            self.closed = True
            raise
        except RunStopped as err:
            self._finish_quietly("stopped", error=str(err))
            raise
        except BaseException as err:
            self._finish_quietly("failed", error=f"{type(err).__name__}: {err}")
            raise
        self.finish("complete")

    def interrupt(self, signum: int) -> None:
        """Mark the run ``interrupted`` now (from a signal handler, before any teardown that
        might take the process down); later writes are refused, the lifecycle's too."""
        if not self.closed:
            self._finish_quietly("interrupted", error=f"interrupted ({signal.Signals(signum).name})")

    def _finish_quietly(self, status: str, **updates: Any) -> None:
        """:meth:`finish` while another exception is on its way (it must not be masked)."""
        try:
            self.finish(status, **updates)
        except StaleWriter:
            self.closed = True

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def confusion_path(self) -> Path:
        return self.path / CONFUSION

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    def check_writer(self, *, finishing: bool = False) -> None:
        """Refuse (:class:`~bflsim.runfolder.lifecycle.StaleWriter`) unless this writer still owns the running run."""
        if self.closed:
            raise StaleWriter(f"{self.path}: the run has finished ({self.manifest.get('status')}); "
                              "nothing more is written to it")
        check_writer(self.path, self.token, finishing=finishing)

    def write_manifest(self, **updates: Any) -> None:
        """Merge ``updates`` into the manifest and rewrite it atomically."""
        with self._lock:
            self.check_writer()
            self.manifest.update(updates)
            self._write_manifest()

    def _write_manifest(self) -> None:
        tmp = self.path / f"{MANIFEST}.{self.token}.tmp"
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
        with self._lock:
            self.check_writer()
            with open(self.metrics_path, "a", newline="") as fh:
                csv.writer(fh).writerows(rows)
            if self.scalar_sink is not None:
                self.scalar_sink.write(rows)

    def log_confusion(
        self, cm: np.ndarray, class_names: tuple[str, ...], *, model: str, split: str, round: int | None = None
    ) -> None:
        """Append the confusion matrix in long form."""
        rows = [
            (self.run_id, model, split, _blank(round), class_names[t], class_names[p], int(cm[t, p]))
            for t in range(cm.shape[0])
            for p in range(cm.shape[1])
        ]
        with self._lock:
            self.check_writer()
            with open(self.confusion_path, "a", newline="") as fh:
                csv.writer(fh).writerows(rows)

    def append_rows(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
        """Append ``rows`` to the table ``name`` (a CSV path inside the run folder, e.g.
        ``loop/alerts.csv``), writing ``columns`` first when it is new; flushed per call."""
        path = self.path / name
        with self._lock:
            self.check_writer()
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with open(path, "a", newline="") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(columns)
                writer.writerows(rows)
        return path

    def save_final_model(self, weights: Weights) -> None:
        with self._lock:
            self.check_writer()
            save_arrays(self.path / FINAL_MODEL, weights)

    def save_reference(self, server_round: int, reference: np.ndarray) -> None:
        """The server's reference update of ``server_round`` (FLTrust): ``defence/reference-RRRR.npy``."""
        with self._lock:
            self.check_writer()
            path = self.path / reference_path(server_round)
            path.parent.mkdir(exist_ok=True)
            np.save(path, np.asarray(reference, dtype=np.float64), allow_pickle=False)

    def save_checkpoint(self, server_round: int, weights: Weights, state: Mapping[str, Any],
                        defence: Sequence[np.ndarray] | None = None) -> None:
        """What resuming after ``server_round`` needs (:mod:`bflsim.runfolder.checkpoint`):
        the global weights, the strategy's ``state``, the defence's carried arrays, the
        manifest's bookkeeping, file sizes."""
        with self._lock:
            self.check_writer()
            ckpt.write_checkpoint(self.path, server_round, weights, state, self.manifest, defence)
        if "helpers" in self.manifest:  # Ray starts workers as the run goes: keep their ids too
            known = {p["pid"]: p for p in self.manifest["helpers"]}
            self.write_manifest(helpers=sorted({**known, **{p["pid"]: p for p in descendants()}}.values(),
                                               key=lambda p: p["pid"]))

    def finish(self, status: str, **updates: Any) -> None:
        """Set the run's final status (only the lifecycle should call this); nothing is written after."""
        if status not in STATUSES[1:]:
            raise ValueError(f"run status must be one of {list(STATUSES[1:])}; got {status!r}")
        with self._lock:
            self.check_writer(finishing=True)
            self.manifest.update(status=status, finished=utc_now(), **updates)
            self._write_manifest()
            self.closed = True
            if self.scalar_sink is not None:
                self.scalar_sink.close()

    @cached_property
    def scalar_sink(self) -> tracking.ScalarSink | None:
        """This run's TensorBoard writer when ``--tensorboard`` is on (:mod:`.tracking`)."""
        root = tracking.root()
        if root is None:
            return None
        logdir = root / self.path.parent.name / self.path.name if self.manifest.get("point") else root / self.path.name
        names = ((self.manifest.get("config") or {}).get("models") or {}).get("names") or ()
        return tracking.ScalarSink(logdir, several_models=len(names) > 1)


@dataclass(frozen=True)
class Run:
    """A run folder as it is on disk: the manifest, the typed config, the tidy tables."""

    path: Path
    manifest: dict[str, Any]

    @cached_property
    def config(self) -> ExperimentConfig:
        return parse_recorded(self.manifest["config"])

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    @property
    def status(self) -> str:
        """The manifest's status, ``interrupted`` for a ``running`` run whose process is gone."""
        return effective_status(self.manifest)

    @property
    def status_line(self) -> str:
        return status_line(self.manifest)

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
