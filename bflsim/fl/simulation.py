"""Run a federated experiment on Flower's simulation runtime with the Ray backend.

Each edge node is a virtual Flower SuperNode; Ray actors (``backend.client_num_cpus``
CPUs each) run the ClientApp, so with two cores two nodes train at once. A local Ray
instance binds to 127.0.0.1; ``backend.ray_address`` joins an existing cluster instead (see
the README). A run joins the :class:`bflsim.fl.runtime.Runtime` open in the process (a
sweep's: Ray and the actors stay warm between points) or opens and closes its own.

Stopping: SIGINT and SIGTERM raise :class:`bflsim.runfolder.RunInterrupted` in the main
thread (:func:`bflsim.runfolder.raise_on_signals`, set again after Ray's ``init`` replaced
the SIGTERM handler). On the way out the stop event is set; the ServerApp thread waits for
replies through a :class:`StoppableGrid`, so it ends within a poll interval instead of
after ``federation.client_timeout``, and is joined before the run folder is marked. The ids of the Ray processes this run started are kept in the manifest
(``helpers``), so that the next command that finds the run dead ends the ones a SIGKILL left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bflsim.config import ExperimentConfig
from bflsim.fl.runtime import Runtime, active_runtime
from bflsim.progress import Progress, verbose
from bflsim.runfolder import RunFolder, RunInterrupted, descendants, raise_on_signals

# How long the ServerApp thread may take to leave after the stop event (it polls every 0.1 s;
# a round's local evaluation or a chain call in progress finishes first).
SERVER_JOIN_SECONDS = 60.0


class StoppableGrid:
    """Flower's Grid, except that waiting for replies ends as soon as ``stop`` is set.

    Flower's in-memory grid polls for replies until all have come or ``timeout`` passed; a
    run stopped meanwhile would leave the ServerApp thread waiting (and later writing) for
    up to ``federation.client_timeout``. Here the wait raises :class:`RunInterrupted`.
    """

    def __init__(self, grid: Any, stop: threading.Event, pull_interval: float = 0.02) -> None:
        self._grid, self._stop, self._pull_interval = grid, stop, pull_interval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def _check(self) -> None:
        if self._stop.is_set():
            raise RunInterrupted()

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self._grid.get_node_ids()

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        self._check()
        waiting = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Any] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            self._check()
            received = list(self._grid.pull_messages(waiting))
            replies += received
            waiting -= {m.metadata.reply_to_message_id for m in received}
            if waiting:
                self._stop.wait(self._pull_interval)
        self._check()
        return replies


def run_federated(
    config: ExperimentConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
    resume: bool = False,
) -> RunFolder:
    """Run every round of ``config`` and return the run folder (rows written per round).

    ``run_dir`` and ``point`` place the run at a plan point's folder (:mod:`bflsim.plans`).
    With ``resume``, ``run_dir`` holds an interrupted run of ``config`` that carries on
    after its last checkpoint (:meth:`bflsim.runfolder.RunFolder.resume`).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray's node IP defaults to localhost, so its servers listen on 127.0.0.1 only; with
    # _node_ip_address alone, Ray 2.55 still listens on every interface.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from bflsim.fl.server_main import prepare_run

    if resume and run_dir is None:
        raise ValueError("resume needs the run folder")
    progress = progress or Progress(quiet=True)
    data_path, facts = prepare_run(config, data_dir)
    with contextlib.ExitStack() as stack:
        # Ray before the run folder: an unreachable backend.ray_address, or a cluster that
        # cannot hold a client, fails here and leaves no run behind.
        runtime = active_runtime()
        if runtime is None:
            runtime = stack.enter_context(Runtime(config))
        runtime.check(config)
        if resume:
            opened = RunFolder.resume(run_dir)
        else:
            opened = RunFolder.start(out_dir, config, path=run_dir, point=point, **facts)
        with opened as run:
            _simulate(config, run, data_path, progress, runtime, resume=resume, facts=facts)
    return run


def _simulate(config: ExperimentConfig, run: RunFolder, data_path: str | None, progress: Progress, runtime: Runtime,
              *, resume: bool, facts: dict[str, Any]) -> None:
    """The rounds of :func:`run_federated`, in its open run folder, on ``runtime``'s Ray."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from bflsim.fl.client_app import app as client_app
    from bflsim.fl.server_main import describe, serve

    if resume:
        check_same_data(run, facts)
        progress.say(f"{run.path.name}: resuming after round {run.resumed_from.server_round}")
    progress.say(describe(config))
    errors: list[BaseException] = []
    stop, served = threading.Event(), threading.Event()
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        try:
            serve(StoppableGrid(grid, stop), config, run, data_path, progress, checkpoint=run.resumed_from)
        except BaseException as err:  # noqa: BLE001 - surfaced after the simulation returns
            errors.append(err)
        finally:
            served.set()

    started = time.perf_counter()
    quiet_flower()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch_signals(run, stop)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=config.federation.num_nodes,
            backend_config=runtime.backend,
        )
    finally:
        stop.set()  # the ServerApp thread stops waiting for replies and leaves
        if not served.wait(SERVER_JOIN_SECONDS):
            progress.say(f"the server thread did not stop within {SERVER_JOIN_SECONDS:g} s; "
                         "it can no longer write to the run folder")
        restore_signals(previous)  # this run's handler no longer applies
    if errors:
        raise errors[0]
    run.write_manifest(ray=runtime.placements())
    if "final_model_digest" not in run.manifest:
        raise RuntimeError(f"{run.path}: the simulation ended before its last round")
    progress.say(f"done in {time.perf_counter() - started:.0f} s")


def check_same_data(run: RunFolder, facts: dict[str, Any]) -> None:
    """A resumed run must read the same data as before (same files, rows and classes)."""
    def fingerprint(data: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(json.dumps(data))
        return {**data, "sources": sorted(s.get("sha256") for s in data.get("sources", []))}

    if fingerprint(run.manifest.get("data", {})) != fingerprint(facts["data"]):
        raise ValueError(f"{run.path}: the data differs from what the run started with "
                         f"(manifest 'data'); it cannot be resumed on this data")


def watch_signals(run: RunFolder, stop: threading.Event) -> None:
    """On SIGINT/SIGTERM mark the run ``interrupted`` and tell the server thread to stop at
    once, before Ray's teardown (which, under a second signal, can end the process itself);
    set after Ray's ``init``, which replaces the SIGTERM handler. Records the ids of the Ray
    processes this command started (manifest ``helpers``).
    """
    def on_signal(signum: int) -> None:
        silence_flower()
        stop.set()
        run.interrupt(signum)

    raise_on_signals(on_signal=on_signal)
    record_helpers(run)


def restore_signals(handlers: dict[int, Any]) -> None:
    """Put back the handlers a run replaced (in the main thread; elsewhere none were set)."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def record_helpers(run: RunFolder) -> None:
    """Keep the ids and start times of this process's descendants (Ray's) in the manifest."""
    if not run.closed:
        run.write_manifest(helpers=descendants())


def quiet_flower() -> None:
    """Flower logs every message at INFO; keep warnings and errors only (or less, when the
    process asked for less). Its notice that ``run_simulation`` is deprecated (5 lines per
    run) is dropped, or shown once with ``--verbose``."""
    logger = logging.getLogger("flwr")
    logger.setLevel(max(logger.level, logging.WARNING))
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter("DEPRECATED FEATURE", times=1 if verbose() else 0))


class _OnceFilter(logging.Filter):
    """Lets the first ``times`` records containing ``text`` through, and drops the later ones."""

    def __init__(self, text: str, times: int = 1) -> None:
        super().__init__()
        self.text, self.left = text, times

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        self.left -= 1
        return self.left >= 0


def silence_flower() -> None:
    """On a stop, the node tasks in flight fail as Ray shuts down; Flower would log each
    with its traceback. The run is being interrupted: keep the terminal to one line."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", category=ResourceWarning)
