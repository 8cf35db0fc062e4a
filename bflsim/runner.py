"""Running experiments: one run of any kind, or every point of a plan, resumable.

A plan's points run under ``<out>/<experiment>/<point>/``. A point whose folder holds a
complete run is skipped; an interrupted, stopped or failed one is moved aside
(``<point>.interrupted-<time>``, nothing deleted) and run again, so re-running the same
command resumes a sweep.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bflsim.config import ExperimentConfig
from bflsim.plans import Plan
from bflsim.progress import Progress
from bflsim.runfolder import FIGURES, INTERRUPTED_MARK, read_manifest


def run_experiment(
    config: ExperimentConfig,
    out: Path,
    data_dir: str | None,
    quiet: bool,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
) -> Path:
    """Run one experiment of any kind; return its run folder."""
    progress = Progress(quiet=quiet)
    if config.kind == "federated":
        from bflsim.fl.simulation import run_federated

        return run_federated(config, out, data_dir=data_dir, progress=progress, run_dir=run_dir, point=point).path
    from bflsim.centralized import run_centralized

    run = run_centralized(config, out, data_dir=data_dir, progress=progress, run_dir=run_dir, point=point)
    write_run_figures(run.path)
    return run.path


def run_plan(plan: Plan, out: Path, data_dir: str | None, quiet: bool) -> list[Path]:
    """Run every point of a plan under ``out/<experiment>/``; skip complete ones."""
    progress = Progress(quiet=quiet)
    root = Path(out) / plan.name
    done, failed = [], []
    for index, (point, config) in enumerate(plan.points, start=1):
        tag = f"[{index}/{len(plan.points)}] {point.label}"
        run_dir = root / point.name
        if is_complete(run_dir):
            progress.say(f"{tag}: complete, skipped")
            done.append(run_dir)
            continue
        if run_dir.exists():
            progress.say(f"{tag}: interrupted run kept as {move_aside(run_dir).name}")
        progress.say(tag)
        try:
            done.append(run_experiment(config, out, data_dir, quiet, run_dir=run_dir, point=point.as_dict()))
        except (ValueError, RuntimeError) as err:
            progress.say(f"{tag}: failed: {err}")
            failed.append((point, err))
    if failed:
        names = ", ".join(p.name for p, _ in failed)
        raise RuntimeError(f"{len(failed)} of {len(plan.points)} runs failed ({names}); re-run the same command to retry them")
    return done


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that completed."""
    try:
        return read_manifest(run_dir).get("status") == "complete"
    except FileNotFoundError:
        return False


def move_aside(run_dir: Path) -> Path:
    """Keep an unfinished run's files under a new name, so the point can run again."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}{INTERRUPTED_MARK}{stamp}")
    run_dir.rename(target)
    return target


def write_run_figures(run_dir: Path) -> list[Path]:
    """A centralized run's own tables and figures, in its ``figures/`` folder."""
    from bflsim.report import write_report

    return write_report([run_dir], run_dir / FIGURES)
