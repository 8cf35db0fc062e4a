"""Run a federated experiment on Flower's simulation runtime with the Ray backend.

Each edge node is a virtual Flower SuperNode; Ray actors (``backend.client_num_cpus``
CPUs each) run the ClientApp, so with two cores two nodes train at once. A local Ray
instance binds to 127.0.0.1 and is shut down afterwards; ``backend.ray_address`` joins an
existing cluster instead (see the README).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from bflsim.config import ExperimentConfig
from bflsim.progress import Progress
from bflsim.runfolder import RunFolder


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


def run_federated(
    config: ExperimentConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
) -> RunFolder:
    """Run every round of ``config`` and return the run folder (rows written per round).

    ``run_dir`` and ``point`` place the run at a plan point's folder (:mod:`bflsim.plans`).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray's node IP defaults to localhost, so its servers listen on 127.0.0.1 only; with
    # _node_ip_address alone, Ray 2.55 still listens on every interface.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from bflsim.fl.client_app import app as client_app
    from bflsim.fl.server_main import describe, prepare_run, serve

    progress = progress or Progress(quiet=True)
    data_path, facts = prepare_run(config, data_dir)
    with RunFolder.start(out_dir, config, path=run_dir, point=point, **facts) as run:
        progress.say(describe(config))
        errors: list[BaseException] = []
        server_app = ServerApp()

        @server_app.main()
        def main(grid, context) -> None:
            try:
                serve(grid, config, run, data_path, progress)
            except BaseException as err:  # noqa: BLE001 - surfaced after the simulation returns
                errors.append(err)

        started = time.perf_counter()
        quiet_flower()
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=config.federation.num_nodes,
                backend_config=backend_config(config),
            )
        finally:
            shutdown_ray(config)
        if errors:
            raise errors[0]
        if "final_model_digest" not in run.manifest:
            raise RuntimeError(f"{run.path}: the simulation ended before its last round")
        progress.say(f"done in {time.perf_counter() - started:.0f} s")
    return run


def quiet_flower() -> None:
    """Flower logs every message at INFO; keep warnings and errors only."""
    logging.getLogger("flwr").setLevel(logging.WARNING)


def shutdown_ray(config: ExperimentConfig) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
