"""One Ray session and one warm actor pool for every run of a command.

Flower's simulation engine builds a ``RayBackend`` per ``run_simulation``: it creates its
ClientApp actors (each a new process that imports TensorFlow and traces the model) and
ends by killing them and shutting Ray down. For one run that costs ~10 s of a ~20 s run;
for a sweep of 75 small runs it is most of the sweep.

:class:`Runtime` starts Ray once and, while it is open, hands Flower's engine a
:class:`WarmRayBackend`: Flower's own ``RayBackend`` (same actor class, same pool, same
message path) whose pool outlives the run. The next run of the command finds the actors
already started, their TensorFlow imported, their model traced and their prepared data
cached (:mod:`bflsim.edge_node` caches per process). Flower still schedules every message
on Ray; only the teardown between runs is skipped. The pool is ended, and Ray shut down,
when the runtime closes (a sweep's last point, an error, a signal).

Before a run reuses the pool, every actor must be idle and answer; otherwise (a crashed
actor process, one still stuck in a node's call) the pool is ended and a fresh one built.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Self

from bflsim.config import ExperimentConfig

ACTOR_PING_SECONDS = 30.0


def backend_config(config: ExperimentConfig) -> dict:
    """Flower's Ray backend settings for this experiment."""
    backend = config.backend
    init_args: dict = {"include_dashboard": False, "log_to_driver": False}
    if backend.ray_address:
        init_args["address"] = backend.ray_address
    else:
        init_args["num_cpus"] = backend.num_cpus or os.cpu_count() or 1
        init_args["_node_ip_address"] = "127.0.0.1"
    return {
        "client_resources": {"num_cpus": backend.client_num_cpus, "num_gpus": 0.0},
        "init_args": init_args,
    }


@dataclass
class _Pool:
    resources: dict[str, Any]
    pool: Any  # flwr's BasicActorPool


_ACTIVE: Runtime | None = None


def active_runtime() -> Runtime | None:
    """The runtime open in this process, if any."""
    return _ACTIVE


class Runtime:
    """Ray started once, Flower's Ray backend kept warm between runs (module docstring).

    ``actors``: how many ClientApp actors the pool holds (default: as many as Flower's own
    ``RayBackend`` would make, the cluster's CPUs over ``backend.client_num_cpus``).
    ``address``: attach to this running Ray cluster (a worker of
    :func:`bflsim.fl.parallel.run_parallel`) instead of starting one.
    """

    def __init__(self, config: ExperimentConfig, actors: int | None = None, address: str | None = None) -> None:
        self.backend = backend_config(config)
        self.actors, self.address = actors, address
        self.warm: _Pool | None = None
        self.runs = 0
        self._original: Any = None
        self._started_ray = False

    def __enter__(self) -> Self:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a bflsim runtime is already open in this process")
        start_ray({"address": self.address, "log_to_driver": False} if self.address else self.backend["init_args"])
        self._started_ray = True
        from flwr.server.superlink.fleet.vce.backend import raybackend

        self._original = raybackend.RayBackend
        raybackend.RayBackend = _warm_backend_class(self)
        _ACTIVE = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the actors and Ray (idempotent)."""
        global _ACTIVE
        if self._original is not None:
            from flwr.server.superlink.fleet.vce.backend import raybackend

            raybackend.RayBackend = self._original
            self._original = None
        if self.warm is not None:
            _end_actors(self.warm.pool)
            self.warm = None
        if _ACTIVE is self:
            _ACTIVE = None
        if self._started_ray:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            self._started_ray = False

    def check(self, config: ExperimentConfig) -> None:
        """A run joining this runtime must ask for the same Ray resources it was started with."""
        wanted = backend_config(config)
        if wanted != self.backend:
            raise ValueError(
                f"{config.name}: backend settings {wanted} differ from {self.backend}, which the runtime "
                f"of this command was started with; the backend section must be the same for every "
                f"point of one command (run the others separately)"
            )


def start_ray(init_args: dict[str, Any]) -> None:
    """Start Ray as Flower's ``RayBackend`` would (it then finds Ray running), keeping the
    process's SIGINT/SIGTERM handlers."""
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PYTHONPATH"] = pythonpath  # what Flower's Ray backend does, for the actors
    # Ray's notice about a future default for GPU visibility: these actors use no GPU
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, logging_level=logging.WARNING, **init_args)
    for sig, handler in handlers.items():  # Ray's init replaces SIGTERM's: bflsim's own decide
        signal.signal(sig, handler)
    # Ray's Popen objects of processes it has already ended warn at exit; nothing is left running
    warnings.filterwarnings("ignore", message="subprocess .* is still running", category=ResourceWarning)


def _warm_backend_class(runtime: Runtime) -> type:
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool, ClientAppActor

    class WarmRayBackend(RayBackend):
        """Flower's ``RayBackend`` whose actor pool is kept by the runtime between runs."""

        def build(self, app_fn: Any) -> None:
            warm = runtime.warm
            if warm is not None and (warm.resources != self.client_resources or not _all_idle_and_alive(warm.pool)):
                _end_actors(warm.pool)
                warm = runtime.warm = None
            if warm is None:
                pool = BasicActorPool(
                    actor_type=ClientAppActor, client_resources=self.client_resources, actor_kwargs=self.actor_kwargs,
                )
                pool.add_actors_to_pool(runtime.actors or pool.actors_capacity)
                warm = runtime.warm = _Pool(dict(self.client_resources), pool)
            self.pool, self.app_fn = warm.pool, app_fn
            runtime.runs += 1

        def terminate(self) -> None:
            """Keep the actors and Ray for the next run (the runtime ends them)."""
            self.pool = None

    return WarmRayBackend


def _all_idle_and_alive(pool: Any) -> bool:
    """Every actor of the pool is back in it and answers (none crashed or is still busy)."""
    import ray

    if len(pool.pool) != pool.num_actors:
        return False
    try:
        ray.get([actor.__ray_ready__.remote() for actor in pool.pool], timeout=ACTOR_PING_SECONDS)
    except Exception:  # noqa: BLE001 - RayActorError, GetTimeoutError: an actor is gone or stuck
        return False
    return True


def _end_actors(pool: Any) -> None:
    import ray

    for actor in {*pool.pool, *pool._future_to_actor.values()}:
        ray.kill(actor)
    pool.pool.clear()
    pool._future_to_actor.clear()
