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

``backend.ray_address`` joins a Ray cluster started by hand (``ray start``, one or many
machines; see the README). Before anything else the runtime checks that the head answers
(:func:`check_reachable`: Ray itself would retry for minutes) and that at least one node of
the cluster can hold a client of ``backend.client_num_cpus`` CPUs (:func:`check_cluster`).
The pool counts the messages it hands each actor, and :meth:`Runtime.placements` says on
which Ray node those actors ran: the run's manifest keeps it (``ray``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Self

from bflsim.config import ExperimentConfig
from bflsim.models import import_tensorflow_quietly

ACTOR_PING_SECONDS = 30.0
RAY_CONNECT_SECONDS = 15.0
"""How long a run waits for the Ray head at ``backend.ray_address`` to accept a connection."""


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
    pool: Any  # flwr's BasicActorPool, counting what it hands each actor (_counting_pool_class)


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
        """Start Ray or join the cluster, and check that it can hold a client; on an error,
        nothing is left open."""
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a bflsim runtime is already open in this process")
        init_args = {"address": self.address, "log_to_driver": False} if self.address else self.backend["init_args"]
        self._started_ray = True
        try:
            start_ray(init_args)
            check_cluster(init_args.get("address"), self.backend["client_resources"])
        except BaseException:
            self.close()
            raise
        # Flower's Ray backend imports TensorFlow: quietly, and only now that Ray is joined
        # (server-side: TensorFlow's default thread pools; edge nodes size theirs)
        import_tensorflow_quietly()
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

    def placements(self) -> dict[str, Any]:
        """Where the ClientApp messages of the last run went: the cluster's address and, per
        Ray node that holds an actor of the pool, its id, IP, resources, actors and how many
        messages those actors were handed (the run's manifest ``ray``)."""
        import ray

        address = self.backend["init_args"].get("address", "local")
        if self.warm is None:
            return {"address": address, "nodes": []}
        pool = self.warm.pool
        messages_per_actor = pool.messages_per_actor()
        node_of = actor_nodes({actor: ref for actor, ref in pool.node_asked.items() if actor in messages_per_actor})
        nodes = {node["NodeID"]: node for node in ray.nodes() if node.get("Alive")}
        found: dict[str | None, dict[str, Any]] = {}
        for actor, messages in messages_per_actor.items():
            node_id = node_of.get(actor)
            node = nodes.get(node_id, {})
            entry = found.setdefault(node_id, {
                "node_id": node_id, "ip": node.get("NodeManagerAddress"),
                "resources": {k: v for k, v in node.get("Resources", {}).items() if not k.startswith("node:")},
                "actors": 0, "messages": 0,
            })
            entry["actors"] += 1
            entry["messages"] += messages
        return {"address": address, "nodes": sorted(found.values(), key=lambda e: -e["messages"])}

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
    process's SIGINT/SIGTERM handlers. With an ``address``, join that cluster once its head
    answers (:func:`check_reachable`)."""
    import ray

    if ray.is_initialized():
        return
    if init_args.get("address"):
        check_reachable(init_args["address"])
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


def head_address(address: str) -> tuple[str, int]:
    """The head's (host, port) in ``backend.ray_address``: ``host:port`` (its GCS, what
    ``ray start --head`` prints), ``ray://host:port`` (Ray Client), or ``auto`` (as Ray finds
    it: ``$RAY_ADDRESS``, the cluster last started with ``ray start`` here, any running one)."""
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)  # raises when there is none
        return head_address(found)
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"backend.ray_address = {address!r}: expected host:port (the head's address that "
                         f"`ray start --head` prints), ray://host:port or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, seconds: float | None = None) -> None:
    """Wait up to ``seconds`` (:data:`RAY_CONNECT_SECONDS`) for the head at ``address`` to
    accept a TCP connection, then for its GCS to answer; raise a ``ValueError`` naming the
    address and the time waited. Ray's own ``init`` would retry a silent address for
    about 12 minutes (20 tries of 35 s)."""
    seconds = RAY_CONNECT_SECONDS if seconds is None else seconds
    started = time.monotonic()
    try:
        host, port = head_address(address)
    except ConnectionError as err:  # auto: no cluster found on this machine
        raise ValueError(f"backend.ray_address = {address!r}: {err}") from err
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(seconds, 0.1))):
                break
        except OSError as err:
            last = err
        if time.monotonic() - started >= seconds:
            reason = (last.strerror or str(last) or type(last).__name__) if last is not None else "no answer"
            raise ValueError(
                f"backend.ray_address = {address!r}: nothing answers at {host}:{port} (waited "
                f"{time.monotonic() - started:.0f} s; last error: {reason}); start the Ray head there first "
                f"(`ray start --head --port={port}`, see the README) or fix the address"
            )
        time.sleep(0.5)
    if address.startswith("ray://"):
        return  # a Ray Client server, not a GCS: ray.init's client connection checks it
    from ray._raylet import GcsClient

    try:
        GcsClient(address=f"{host}:{port}")  # gives up after Ray's own wait for the GCS (~35 s)
    except Exception as err:  # RpcError and the like: not a Ray head
        raise ValueError(
            f"backend.ray_address = {address!r}: {host}:{port} accepts connections but no Ray head answers there "
            f"(waited {time.monotonic() - started:.0f} s: {err}); give the port `ray start --head` printed"
        ) from err


def check_cluster(address: str | None, client_resources: dict[str, float]) -> None:
    """At least one alive node of the Ray cluster must hold one client's resources (Flower
    places each ClientApp actor on one node); else a ``ValueError`` naming the cluster, what
    its nodes have and what a client needs."""
    import ray

    need = client_resources["num_cpus"]
    nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources")]
    if any(node["Resources"].get("CPU", 0) >= need for node in nodes):
        return
    where = f"backend.ray_address = {address!r}" if address else "the local Ray instance (backend.num_cpus)"
    has = "; ".join(f"node {n['NodeID'][:8]} at {n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPUs"
                    for n in nodes) or "no alive node"
    total = sum(n["Resources"].get("CPU", 0) for n in nodes)
    more = "add a node with more CPUs (`ray start --num-cpus=N`)" if address else "raise backend.num_cpus"
    raise ValueError(
        f"{where}: no node of the Ray cluster can hold a client: each needs backend.client_num_cpus = {need:g} "
        f"CPUs on one node; the cluster has {total:g} CPUs ({has}); lower backend.client_num_cpus or {more}"
    )


def actor_nodes(asked: dict[Any, Any], seconds: float = ACTOR_PING_SECONDS) -> dict[Any, str]:
    """The id of the Ray node each actor runs on, from ``asked`` (actor -> the reference of
    its own answer, :func:`ask_node`); an actor that has not answered within ``seconds``
    (gone, or never started) is left out."""
    import ray

    by_ref = {ref: actor for actor, ref in asked.items()}
    ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=seconds)
    found = {}
    for ref in ready:
        try:
            found[by_ref[ref]] = ray.get(ref)
        except Exception:  # noqa: BLE001, S112 - RayActorError: the actor is gone
            continue
    return found


def ask_node(actor: Any) -> Any:
    """Ask ``actor`` which Ray node it runs on; the reference of its answer. Asked when the
    actor is made, it answers before its first message, so the answer is there even while
    the actor is busy later."""
    return actor.__ray_call__.remote(_own_node_id)


def _own_node_id(actor: Any) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _counting_pool_class() -> type:
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    class CountingActorPool(BasicActorPool):
        """Flower's pool, counting the messages it hands each actor since :meth:`reset_counts`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._counts: Counter = Counter()
            self._counts_lock = threading.Lock()
            self.node_asked: dict[Any, Any] = {}  # actor -> its answer to ask_node

        def add_actors_to_pool(self, num_actors: int) -> None:
            super().add_actors_to_pool(num_actors)
            for actor in self.pool:
                if actor not in self.node_asked:
                    self.node_asked[actor] = ask_node(actor)

        def submit(self, actor_fn: Any, job: Any) -> Any:
            future = super().submit(actor_fn, job)
            with self._counts_lock:
                self._counts[self._future_to_actor[future]] += 1
            return future

        def reset_counts(self) -> None:
            with self._counts_lock:
                self._counts.clear()

        def messages_per_actor(self) -> dict[Any, int]:
            with self._counts_lock:
                return {actor: self._counts[actor] for actor in {*self.pool, *self._future_to_actor.values(),
                                                                 *self._counts}}

    return CountingActorPool


def _warm_backend_class(runtime: Runtime) -> type:
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import ClientAppActor

    class WarmRayBackend(RayBackend):
        """Flower's ``RayBackend`` whose actor pool is kept by the runtime between runs."""

        def build(self, app_fn: Any) -> None:
            warm = runtime.warm
            if warm is not None and (warm.resources != self.client_resources or not _all_idle_and_alive(warm.pool)):
                _end_actors(warm.pool)
                warm = runtime.warm = None
            if warm is None:
                pool = _counting_pool_class()(
                    actor_type=ClientAppActor, client_resources=self.client_resources, actor_kwargs=self.actor_kwargs,
                )
                pool.add_actors_to_pool(runtime.actors or pool.actors_capacity)
                warm = runtime.warm = _Pool(dict(self.client_resources), pool)
            warm.pool.reset_counts()  # this run's messages only
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
