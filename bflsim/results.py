"""Run folders: tidy metric rows written as they happen, and a manifest.

A run folder holds

- ``manifest.json``: the config, seeds, package versions, git commit, data sources with
  their verified digests, start and end times, and the run's status;
- ``metrics.csv``: one row per (run, model, split, round, epoch, node, class, metric), appended
  and flushed as each value is known, so an interrupted run keeps what it computed;
- ``confusion.csv``: confusion-matrix counts in long form (model, split, true, predicted);
- ``figures/``: what :mod:`bflsim.plots` drew from the two tables.

Figures and tables are pure functions of these files; nothing re-runs an experiment.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRIC_COLUMNS = ("run_id", "model", "split", "round", "epoch", "node", "class_name", "metric", "value")
CONFUSION_COLUMNS = ("run_id", "model", "split", "true", "predicted", "count")
TRACKED_PACKAGES = (
    "bflsim", "flwr", "ray", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas",
    "scikit-learn", "matplotlib", "web3", "eth-tester", "py-evm", "eth-account",
)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit of the source tree (``+dirty`` when it has local changes)."""
    root = cwd or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit


@dataclass
class RunFolder:
    """Writes one run's tidy rows and manifest, incrementally."""

    path: Path
    run_id: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        parent: Path,
        name: str,
        config: Mapping[str, Any],
        seeds: Mapping[str, int],
        *,
        path: Path | None = None,
        point: Mapping[str, Any] | None = None,
    ) -> RunFolder:
        """Make a new folder and write its manifest.

        By default the folder is ``parent/<name>-<time>``, made unique; a sweep passes the
        exact ``path`` of its point instead (it must not exist yet) and the ``point``
        (name, label, overrides) it stands for.
        """
        if path is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path(parent) / f"{name}-{stamp}"
            suffix = 1
            while path.exists():
                suffix += 1
                path = Path(parent) / f"{name}-{stamp}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path=path, run_id=path.name)
        run.manifest = {
            "run_id": run.run_id,
            "status": "running",
            "started": utc_now(),
            "command": sys.argv,
            "config": dict(config),
            "seeds": dict(seeds),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
        }
        if point is not None:
            run.manifest["point"] = dict(point)
        run.write_manifest()
        with open(run.metrics_path, "w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)
        with open(run.confusion_path, "w", newline="") as fh:
            csv.writer(fh).writerow(CONFUSION_COLUMNS)
        return run

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def confusion_path(self) -> Path:
        return self.path / "confusion.csv"

    @property
    def figures_dir(self) -> Path:
        d = self.path / "figures"
        d.mkdir(exist_ok=True)
        return d

    def write_manifest(self, **updates: Any) -> None:
        """Merge ``updates`` into the manifest and rewrite it atomically."""
        self.manifest.update(updates)
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=_json_default) + "\n")
        tmp.replace(self.path / "manifest.json")

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

    def log_confusion(self, cm: np.ndarray, class_names: tuple[str, ...], *, model: str, split: str) -> None:
        """Append the confusion matrix in long form."""
        rows = [
            (self.run_id, model, split, class_names[t], class_names[p], int(cm[t, p]))
            for t in range(cm.shape[0])
            for p in range(cm.shape[1])
        ]
        with open(self.confusion_path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)

    def finish(self, status: str = "complete", **updates: Any) -> None:
        self.write_manifest(status=status, finished=utc_now(), **updates)


def read_metrics(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate the tidy metric rows of several run folders."""
    frames = [pd.read_csv(Path(d) / "metrics.csv") for d in run_dirs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)


def read_confusion(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(Path(d) / "confusion.csv") for d in run_dirs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONFUSION_COLUMNS)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
