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

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bflsim.config import (
    ConfigError,
    ExperimentConfig,
    config_digest,
    parse_recorded,
    to_dict,
)
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
    try:
        write_run_figures(run.path)
    except ValueError as err:  # the run's rows are complete: a figure that cannot be drawn does not undo it
        progress.say(f"figures not drawn: {err}")
    return run.path


def resume_run(run_dir: Path, data_dir: str | None, quiet: bool) -> Path:
    """Carry on the interrupted federated run at ``run_dir`` after its last completed round."""
    manifest = read_manifest(run_dir)
    state = examine_point(run_dir, stored_config(manifest))
    if state.action != "resume":
        raise ValueError(f"{run_dir}: cannot be resumed: {state.why}")
    Progress(quiet=quiet).say(f"{run_dir.name}: {state.why}")
    return run_experiment(stored_config(manifest), run_dir.parent, data_dir, quiet, run_dir=run_dir, resume=True)


SMALL_POINT_FLOPS = 1e12
"""A federated point whose training is estimated below this (about a minute of arithmetic on
two cores) is small: with ``parallel="auto"`` such points run several at once."""


def run_plan(plan: Plan, out: Path, data_dir: str | None, quiet: bool, parallel: int | str = "auto") -> list[Path]:
    """Run every point of a plan under ``out/<experiment>/``: skip complete ones, resume
    interrupted ones, re-run stale ones (:func:`examine_point`).

    Federated points share one Ray runtime (:func:`plan_runtime`). ``parallel`` points run at
    once (:func:`bflsim.fl.parallel.run_parallel`); ``"auto"`` picks as many as the cores
    hold when every point is small (:func:`auto_parallel`), else one at a time with all cores.
    A point that fails is recorded failed and the others go on; the error at the end names
    every failed point.
    """
    progress = Progress(quiet=quiet)
    out = Path(out)
    workers = choose_parallel(plan, data_dir, parallel)
    todo, done, failed = _examine_points(plan, out, progress)
    if workers > 1 and len(todo) > 1:
        done += _run_parallel(plan, out, data_dir, todo, workers, progress, failed)
    else:
        with plan_runtime(plan):
            done += _run_sequential(plan, out, data_dir, quiet, todo, progress, failed)
    order = {out / plan.name / point.name: i for i, (point, _) in enumerate(plan.points)}
    done.sort(key=lambda path: order.get(path, len(order)))  # the plan's order
    if failed:
        names = ", ".join(p.name for p, _ in failed)
        raise RuntimeError(f"{len(failed)} of {len(plan.points)} runs failed ({names}); re-run the same command to retry them")
    return done


def choose_parallel(plan: Plan, data_dir: str | None, parallel: int | str) -> int:
    """How many points run at once: ``parallel`` checked against the cores (a clear error when
    they cannot hold it), or :func:`auto_parallel`."""
    configs = [config for _, config in plan.points]
    if parallel == "auto":
        return auto_parallel(configs, data_dir)
    parallel = int(parallel)
    if parallel > 1 and any(c.kind != "federated" for c in configs):
        raise ValueError(f"--parallel {parallel}: only federated points run in parallel; "
                         f"{plan.name} has centralized ones")
    from bflsim.fl.parallel import check_parallel

    for config in configs:
        check_parallel(config, parallel)
    return parallel


def auto_parallel(configs: list[ExperimentConfig], data_dir: str | None) -> int:
    """As many points at once as the cores hold (``backend.num_cpus`` over
    ``backend.client_num_cpus``) when every point is federated, asks for the same backend, may
    run beside others (:func:`bflsim.fl.parallel.check_parallel`: a local Ray cluster, no RPC
    ledger) and is small (:data:`SMALL_POINT_FLOPS`); else 1."""
    if len(configs) < 2 or any(c.kind != "federated" for c in configs):
        return 1
    from bflsim.fl.parallel import check_parallel, ray_cpus
    from bflsim.fl.runtime import backend_config

    first = configs[0]
    if any(backend_config(c) != backend_config(first) for c in configs):
        return 1
    slots = min(int(ray_cpus(first) // first.backend.client_num_cpus), len(configs))
    try:
        for config in configs:
            check_parallel(config, slots)
    except ValueError:
        return 1
    if slots < 2 or max(point_flops(c, data_dir) for c in configs) > SMALL_POINT_FLOPS:
        return 1
    return slots


def point_flops(config: ExperimentConfig, data_dir: str | None) -> float:
    """Estimated arithmetic of a federated point's local training (every node, epoch and round)."""
    from bflsim.data import run_data_dir
    from bflsim.edge_node import load_data
    from bflsim.models import training_flops

    root = run_data_dir(config.data, data_dir)
    data = load_data(config.data, str(root) if root is not None else None)  # as prepare_run loads it: cached
    fed = config.federation
    rows = len(data.y_train) * fed.local_epochs * fed.rounds
    return training_flops(config.models, data.num_features, data.num_classes, rows)


def plan_runtime(plan: Plan) -> contextlib.AbstractContextManager:
    """One Ray runtime for every federated point of the plan (:class:`bflsim.fl.runtime.Runtime`:
    Ray, the actors and their caches stay warm between points), when they all ask for the same
    backend; otherwise each point opens its own."""
    from bflsim.fl.runtime import Runtime, active_runtime, backend_config

    federated = [config for _, config in plan.points if config.kind == "federated"]
    if len(federated) < 2 or active_runtime() is not None:  # one open already (a caller's): the runs join it
        return contextlib.nullcontext()

    if any(backend_config(c) != backend_config(federated[0]) for c in federated[1:]):
        return contextlib.nullcontext()
    return Runtime(federated[0])


@dataclass(frozen=True)
class _Todo:
    index: int
    point: Any
    config: ExperimentConfig
    run_dir: Path
    resume: bool


def _examine_points(plan: Plan, out: Path, progress: Progress) -> tuple[list[_Todo], list[Path], list]:
    """The points to run (old runs of other configs moved aside), the complete ones, the busy ones."""
    root = out / plan.name
    todo, done, failed = [], [], []
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
        todo.append(_Todo(index, point, config, run_dir, state.action == "resume"))
    return todo, done, failed


def _run_sequential(plan: Plan, out: Path, data_dir: str | None, quiet: bool, todo: list[_Todo],
                    progress: Progress, failed: list) -> list[Path]:
    done = []
    for item in todo:
        tag = f"[{item.index}/{len(plan.points)}] {item.point.label}"
        progress.say(tag)
        try:
            done.append(run_experiment(item.config, out, data_dir, quiet, run_dir=item.run_dir,
                                       point=item.point.as_dict(), resume=item.resume))
        except (ValueError, RuntimeError) as err:
            progress.say(f"{tag}: failed: {err}")
            failed.append((item.point, err))
    return done


def _run_parallel(plan: Plan, out: Path, data_dir: str | None, todo: list[_Todo], workers: int,
                  progress: Progress, failed: list) -> list[Path]:
    from bflsim.fl.parallel import PointResult, PointTask, run_parallel

    progress.say(f"{len(todo)} runs, {workers} at a time")
    tasks = [PointTask(t.index, t.config, out, data_dir, t.run_dir, t.point.as_dict(), t.resume) for t in todo]
    by_index = {t.index: t for t in todo}
    done: list[Path] = []

    def tag(result: PointResult) -> str:
        return f"[{result.index}/{len(plan.points)}] {by_index[result.index].point.label}"

    def on_result(result: PointResult) -> None:
        if result.error is not None:
            progress.say(f"{tag(result)}: failed after {result.seconds:.0f} s: {result.error}")
            failed.append((by_index[result.index].point, RuntimeError(result.error)))
            return
        accuracy = "" if result.final_accuracy is None else f", accuracy {result.final_accuracy:.4f}"
        progress.say(f"{tag(result)}: complete in {result.seconds:.1f} s{accuracy}")
        done.append(result.path)

    try:
        run_parallel(tasks, workers, on_result)
    except KeyboardInterrupt as err:
        stopped = getattr(err, "points", [])
        for result in stopped:
            kept = {0: "no round completed", 1: "round 1 kept"}.get(result.rounds_kept,
                                                                     f"rounds 1-{result.rounds_kept} kept")
            progress.say(f"{tag(result)}: interrupted, {kept}")
        runs = "1 run" if len(stopped) == 1 else f"{len(stopped)} runs"
        err.summary = (f"{runs} stopped, {len(done)} completed in this call, under {out / plan.name}; "  # type: ignore[attr-defined]
                       f"to carry on: re-run the same command")
        raise
    return done  # in the order the points ended (run_plan puts them in the plan's)


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
    return check_config(parse_recorded(manifest["config"]))


def stored_digest(manifest: dict[str, Any]) -> str | None:
    """The manifest's ``config_digest``, or the digest of its stored config (folders written
    before the digest was recorded); None when that config no longer parses."""
    if manifest.get("config_digest"):
        return str(manifest["config_digest"])
    try:
        return config_digest(parse_recorded(manifest["config"]))
    except (ConfigError, KeyError, TypeError):
        return None


def stale_message(manifest: dict[str, Any], config: ExperimentConfig, stored: str | None, requested: str) -> str:
    """``config changed (stored 0x1234abcd, requested 0x5678ef01: federation.rounds differs)``."""
    try:
        before = _dotted(to_dict(parse_recorded(manifest["config"])))
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
