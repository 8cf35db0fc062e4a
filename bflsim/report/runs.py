"""Finding run folders to report on.

A run's status is :attr:`bflsim.runfolder.Run.status`, which does not trust ``running``: a
run whose process is gone (SIGKILL, crash) reads ``interrupted``
(:func:`bflsim.runfolder.effective_status`), so a dead run is never reported as in progress.
"""

from __future__ import annotations

from pathlib import Path

from bflsim.runfolder import INTERRUPTED_MARK, MANIFEST, Run, read_run


def find_runs(root: str | Path, kind: str | None = "federated", include_interrupted: bool = False) -> list[Run]:
    """Runs (folders holding ``manifest.json``) at or below ``root``.

    They come in the order they were started (ties by path): the order in which an
    experiment lists its scenarios or grid points, unless a point was run again later.
    ``kind`` keeps only runs whose config has that ``kind`` (``None`` keeps all). Runs that
    a resumed plan moved aside (``<point>.interrupted-<time>``) were run again under the
    point's own folder, so they are skipped unless ``include_interrupted``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = sorted(p.parent for p in root.rglob(MANIFEST))
    if not include_interrupted:
        found = [d for d in found if not any(INTERRUPTED_MARK in part for part in d.relative_to(root).parts)]
    runs = [read_run(d) for d in found]
    if kind is not None:
        runs = [r for r in runs if r.manifest.get("config", {}).get("kind") == kind]
    return sorted(runs, key=lambda r: (str(r.manifest.get("started", "")), str(r.path)))


def find_run_dirs(root: str | Path, kind: str | None = "federated", include_interrupted: bool = False) -> list[Path]:
    """The folders of :func:`find_runs`."""
    return [run.path for run in find_runs(root, kind, include_interrupted)]
