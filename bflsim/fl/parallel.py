"""Several federated runs at once: worker processes that share one Ray cluster.

A small run (the attacker sweep's: 20 nodes, 440 rows each, a DNN) spends most of its
wall time waiting: for Flower's message queues, for the round's slowest node, for the
engine to wind down. Two such runs side by side fill the cores that one leaves idle.

:func:`run_parallel` starts Ray once (all the cores, bound to 127.0.0.1) and a pool of
``parallel`` worker processes. Each worker attaches to that cluster and keeps a warm
:class:`bflsim.fl.runtime.Runtime` with its share of the ClientApp actors (the cores over
``parallel``, over ``backend.client_num_cpus``), then runs whole plan points one after
another, each through :func:`bflsim.fl.simulation.run_federated`: Flower's simulation
engine on Ray, exactly as a point run alone. Ray places every actor on the CPUs it holds;
the pool only decides which point a worker runs next.

Results come back as each point ends. A point that fails is recorded failed in its run
folder (its own lifecycle) and the others go on. SIGINT/SIGTERM: the workers run in their
own process group, so the signal reaches them once, passed on by this process; each marks
the run it holds ``interrupted`` (completed rounds kept, as a run alone) and takes no
other point; the points not started are dropped and Ray is shut down. The interrupt then
carries the interrupted points (``err.points``: their :class:`PointResult`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bflsim.config import ExperimentConfig
from bflsim.fl.runtime import Runtime, backend_config, start_ray
from bflsim.fl.simulation import SERVER_JOIN_SECONDS
from bflsim.models import configure_tensorflow


@dataclass(frozen=True)
class PointTask:
    """One plan point for a worker: what :func:`run_federated` needs."""

    index: int
    config: ExperimentConfig
    out: Path
    data_dir: str | None
    run_dir: Path
    point: dict
    resume: bool = False


@dataclass(frozen=True)
class PointResult:
    """How a point ended: its folder, or the error that ended it."""

    index: int
    path: Path
    seconds: float
    final_accuracy: float | None = None
    error: str | None = None
    interrupted: bool = False
    rounds_kept: int = 0


def ray_cpus(config: ExperimentConfig) -> float:
    """The CPUs the local Ray cluster gets: ``backend.num_cpus``, else every core."""
    return float(config.backend.num_cpus or os.cpu_count() or 1)


def check_parallel(config: ExperimentConfig, parallel: int) -> int:
    """The number of actors each of ``parallel`` workers gets; refuses what cannot be scheduled.

    Every worker needs at least one actor of ``backend.client_num_cpus`` CPUs on the cluster's
    ``backend.num_cpus`` (all cores when unset).
    """
    cpus, per_client = ray_cpus(config), config.backend.client_num_cpus
    source = "backend.num_cpus" if config.backend.num_cpus else f"all {os.cpu_count()} cores"
    if per_client > cpus:
        raise ValueError(f"backend.client_num_cpus = {per_client:g} cannot be scheduled: Ray has {cpus:g} CPUs "
                         f"({source})")
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1; got {parallel}")
    if parallel * per_client > cpus:
        raise ValueError(
            f"--parallel {parallel}: {parallel} runs at once need at least {parallel} x backend.client_num_cpus "
            f"{per_client:g} = {parallel * per_client:g} CPUs; Ray has {cpus:g} ({source}); "
            f"use --parallel {max(1, int(cpus // per_client))} or fewer"
        )
    if config.backend.ray_address and parallel > 1:
        raise ValueError(f"--parallel {parallel} starts its own local Ray cluster; backend.ray_address = "
                         f"{config.backend.ray_address!r} joins another one: run the points one at a time")
    if config.ledger.backend == "rpc" and parallel > 1:
        raise ValueError(f"--parallel {parallel}: ledger.backend = 'rpc' sends every run's transactions from one "
                         f"operator account, whose nonces two runs at once would race; use --parallel 1")
    return max(1, int(cpus / parallel // per_client))


def run_parallel(tasks: Sequence[PointTask], parallel: int, on_result: Callable[[PointResult], None]) -> None:
    """Run ``tasks`` on ``parallel`` workers sharing one Ray cluster; ``on_result`` gets each
    point's result as it ends (in this process's main thread)."""
    if not tasks:
        return
    first = tasks[0].config
    actors = check_parallel(first, parallel)
    backend = backend_config(first)
    import ray

    ours = not ray.is_initialized()  # a caller's Ray (a test's runtime) is left running
    start_ray(backend["init_args"])
    address = ray.get_runtime_context().gcs_address
    pool = ProcessPoolExecutor(
        max_workers=min(parallel, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(address, actors, first),
    )
    futures: dict[Future, PointTask] = {}
    try:
        futures = {pool.submit(_run_point, task): task for task in tasks}
        for future in as_completed(futures):
            on_result(future.result())
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            err.points = _stop_workers(pool, futures, getattr(err, "signum", signal.SIGINT))  # type: ignore[attr-defined]
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if ours:
            ray.shutdown()


def _stop_workers(pool: ProcessPoolExecutor, futures: dict[Future, PointTask], signum: int) -> list[PointResult]:
    """Pass the signal on to the workers, wait for the points they held to be marked
    interrupted; those points' results."""
    for future in futures:
        future.cancel()  # not started yet: dropped
    _signal_workers(pool, signum)
    stopped = []
    for future in futures:
        if future.cancelled():
            continue
        try:
            result = future.result(timeout=SERVER_JOIN_SECONDS + 30)
        except Exception:  # noqa: BLE001, S112 - an idle worker ends at once; its pool reports it broken
            continue
        if result.interrupted:
            stopped.append(result)
    return sorted(stopped, key=lambda r: r.index)


def _signal_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    for process in list((pool._processes or {}).values()):
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signum)


# --- in a worker process ----------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _start_worker(address: str, actors: int, config: ExperimentConfig) -> None:
    """Attach to the sweep's Ray cluster with a warm runtime of ``actors`` actors."""
    import logging

    os.setpgrp()  # a terminal's Ctrl-C reaches the parent, which passes it on once
    # Between runs a signal ends the worker at once (it holds no run); during a run
    # run_federated's own handler marks the run interrupted first.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_now)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    configure_tensorflow(load=False)  # quiet TensorFlow; it loads after Ray is joined (Runtime)
    import flwr.common.logger  # noqa: F401 - sets the "flwr" logger to DEBUG on import: before ours

    logging.getLogger("flwr").setLevel(logging.ERROR)  # the sweep process shows Flower's notices
    runtime = Runtime(config, actors=actors, address=address)
    runtime.__enter__()
    _WORKER["runtime"] = runtime
    atexit.register(runtime.close)


def _exit_now(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


def _run_point(task: PointTask) -> PointResult:
    from bflsim.fl.simulation import run_federated
    from bflsim.progress import Progress

    started = time.perf_counter()
    if _WORKER.get("stopping"):  # interrupted before: this point was already queued to it
        return PointResult(task.index, task.run_dir, 0.0, interrupted=True)
    try:
        run = run_federated(task.config, task.out, task.data_dir, Progress(quiet=True), run_dir=task.run_dir,
                            point=task.point, resume=task.resume)
    except (ValueError, RuntimeError) as err:
        return PointResult(task.index, task.run_dir, time.perf_counter() - started, error=str(err))
    except KeyboardInterrupt as err:  # the run is marked interrupted; no other point after it
        _WORKER["stopping"] = True
        return PointResult(task.index, task.run_dir, time.perf_counter() - started, interrupted=True,
                           rounds_kept=int(getattr(err, "rounds_kept", 0)))
    accuracy = run.manifest.get("final_accuracy")
    return PointResult(task.index, run.path, time.perf_counter() - started,
                       None if accuracy is None else float(accuracy))
