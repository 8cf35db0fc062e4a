"""Running experiments: one run of any kind, or every point of a plan, resumable.

A plan's points run under ``<out>/<experiment>/<point>/``. Before a point runs, its folder
is examined (:func:`examine_point`):

- none yet: the point runs;
- a run of another config (its ``config_digest`` differs from the one requested now, e.g.
  after ``--set federation.rounds=...`` or an edited experiment file): moved aside
  (``<point>.interrupted-<time>``, nothing deleted), with a message naming both digests and
  the keys that differ, and the point runs again;
- complete: skipped;
- interrupted (by a signal, or its process gone) with a checkpoint: resumed after its last
  completed round (the processes a killed run left behind are ended first);
- still running in a live process: left alone, and the plan reports it;
- anything else (stopped, failed, interrupted before round 1): moved aside and run again.

So re-running the same command resumes a sweep. A single run resumes with
:func:`resume_run` (``bflsim resume RUN_DIR``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bflsim.config import ConfigError, ExperimentConfig, config_digest, parse_experiment, to_dict
from bflsim.plans import Plan, check_config
from bflsim.progress import Progress
from bflsim.runfolder import (
    FIGURES,
    INTERRUPTED_MARK,
    effective_status,
    read_checkpoint,
    read_manifest,
    status_line,
    stop_leftovers,
)


@dataclass(frozen=True)
class PointState:
    """What to do with a plan point's folder: ``run``, ``skip``, ``resume``, ``rerun`` (move the
    old run aside first) or ``busy`` (a live process runs it); ``why`` says it in words."""

    action: str
    why: str = ""


def run_experiment(
    config: ExperimentConfig,
    out: Path,
    data_dir: str | None,
    quiet: bool,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
    resume: bool = False,
) -> Path:
    """Run one experiment of any kind (``resume``: carry on the interrupted run at ``run_dir``);
    return its run folder."""
    progress = Progress(quiet=quiet)
    if config.kind == "federated":
        from bflsim.fl.simulation import run_federated

        return run_federated(config, out, data_dir=data_dir, progress=progress, run_dir=run_dir, point=point,
                             resume=resume).path
    if resume:
        raise ValueError(f"{run_dir}: only federated runs can be resumed (kind = {config.kind!r}); run it again")
    from bflsim.centralized import run_centralized

    run = run_centralized(config, out, data_dir=data_dir, progress=progress, run_dir=run_dir, point=point)
    write_run_figures(run.path)
    return run.path


def resume_run(run_dir: Path, data_dir: str | None, quiet: bool) -> Path:
    """Carry on the interrupted federated run at ``run_dir`` after its last completed round."""
    manifest = read_manifest(run_dir)
    state = examine_point(run_dir, stored_config(manifest))
    if state.action != "resume":
        raise ValueError(f"{run_dir}: cannot be resumed: {state.why}")
    Progress(quiet=quiet).say(f"{run_dir.name}: {state.why}")
    return run_experiment(stored_config(manifest), run_dir.parent, data_dir, quiet, run_dir=run_dir, resume=True)


def run_plan(plan: Plan, out: Path, data_dir: str | None, quiet: bool) -> list[Path]:
    """Run every point of a plan under ``out/<experiment>/``: skip complete ones, resume
    interrupted ones, re-run stale ones (:func:`examine_point`)."""
    progress = Progress(quiet=quiet)
    root = Path(out) / plan.name
    done, failed = [], []
    for index, (point, config) in enumerate(plan.points, start=1):
        tag = f"[{index}/{len(plan.points)}] {point.label}"
        run_dir = root / point.name
        state = examine_point(run_dir, config)
        if state.action == "skip":
            progress.say(f"{tag}: complete, skipped")
            done.append(run_dir)
            continue
        if state.action == "busy":
            progress.say(f"{tag}: {state.why}; left alone")
            failed.append((point, RuntimeError(state.why)))
            continue
        if state.action == "rerun":
            progress.say(f"{tag}: {state.why}; kept as {move_aside(run_dir).name}")
        elif state.action == "resume":
            progress.say(f"{tag}: {state.why}")
        progress.say(tag)
        try:
            done.append(run_experiment(config, out, data_dir, quiet, run_dir=run_dir, point=point.as_dict(),
                                       resume=state.action == "resume"))
        except (ValueError, RuntimeError) as err:
            progress.say(f"{tag}: failed: {err}")
            failed.append((point, err))
    if failed:
        names = ", ".join(p.name for p, _ in failed)
        raise RuntimeError(f"{len(failed)} of {len(plan.points)} runs failed ({names}); re-run the same command to retry them")
    return done


def examine_point(run_dir: Path, config: ExperimentConfig) -> PointState:
    """What a plan does with the folder of a point whose config is ``config`` (module docstring).

    A run counts as done only if its stored config digest equals ``config``'s. A run whose
    process is gone has the processes it recorded ended (:func:`bflsim.runfolder.stop_leftovers`).
    """
    if not run_dir.exists():
        return PointState("run")
    try:
        manifest = read_manifest(run_dir)
    except (FileNotFoundError, ValueError):
        return PointState("rerun", "folder without a readable manifest")
    status = effective_status(manifest)
    if status == "running" and manifest.get("writer"):
        return PointState("busy", f"{run_dir.name} is {status_line(manifest)}")
    if status != manifest.get("status"):
        stopped = stop_leftovers(manifest)
        if stopped:
            names = ", ".join(f"{p.get('name')} ({p['pid']})" for p in stopped)
            Progress().say(f"{run_dir.name}: ended {len(stopped)} processes its dead run left: {names}")
    stored, requested = stored_digest(manifest), config_digest(config)
    if stored != requested:
        return PointState("rerun", stale_message(manifest, config, stored, requested))
    if status == "complete":
        return PointState("skip", "complete")
    if status == "interrupted" and config.kind == "federated":
        checkpoint = read_checkpoint(run_dir)
        if checkpoint is not None:
            return PointState("resume", f"{status_line(manifest)}; resuming after round {checkpoint.server_round}")
    return PointState("rerun", f"{status_line(manifest)} run")


def stored_config(manifest: dict[str, Any]) -> ExperimentConfig:
    """The config a run folder's manifest records, parsed and checked."""
    return check_config(parse_experiment(manifest["config"]))


def stored_digest(manifest: dict[str, Any]) -> str | None:
    """The manifest's ``config_digest``, or the digest of its stored config (folders written
    before the digest was recorded); None when that config no longer parses."""
    if manifest.get("config_digest"):
        return str(manifest["config_digest"])
    try:
        return config_digest(parse_experiment(manifest["config"]))
    except (ConfigError, KeyError, TypeError):
        return None


def stale_message(manifest: dict[str, Any], config: ExperimentConfig, stored: str | None, requested: str) -> str:
    """``config changed (stored 0x1234abcd, requested 0x5678ef01: federation.rounds differs)``."""
    try:
        before = _dotted(to_dict(parse_experiment(manifest["config"])))
    except (ConfigError, KeyError, TypeError):
        before = _dotted(manifest.get("config") or {})
    now = _dotted(to_dict(config))
    keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    what = (", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")) if keys else "no key"
    return (f"config changed (stored {(stored or 'none')[:10]}, requested {requested[:10]}: "
            f"{what} {'differs' if len(keys) == 1 else 'differ'})")


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def move_aside(run_dir: Path) -> Path:
    """Keep an unfinished run's files under a new name, so the point can run again."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}{INTERRUPTED_MARK}{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = run_dir.with_name(f"{run_dir.name}{INTERRUPTED_MARK}{stamp}-{suffix}")
    run_dir.rename(target)
    return target


def write_run_figures(run_dir: Path) -> list[Path]:
    """A centralized run's own tables and figures, in its ``figures/`` folder."""
    from bflsim.report import write_report

    return write_report([run_dir], run_dir / FIGURES)
