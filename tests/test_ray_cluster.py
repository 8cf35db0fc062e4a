"""A real two-node Ray cluster on 127.0.0.1, joined with ``backend.ray_address``.

The module starts a Ray head with ``ray start --head`` and a second Ray node (its own
raylet, object store and workers) in a private temp dir, runs a short experiment on that
cluster, and checks from the run's manifest (``ray``: which actor each ClientApp message
went to, and the node each actor reports it runs on) that both nodes ran clients. Then the
bad inputs: an address where nothing answers, and a cluster none of whose nodes can hold a
client. Every process the cluster started carries a marker in its environment; the
fixture ends them all by process id (never ``ray stop``, which ends every Ray on the
machine) and checks that nothing is left and that everything listened on loopback only.

Why the second node is not ``ray start --address``: on Linux that command refuses to join
unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is on, and with it on Ray replaces
``--node-ip-address=127.0.0.1`` by the machine's outward IP and listens on every interface.
So the node is started with the same call ``ray start`` makes (``ray._private.node.Node``),
its IP kept at 127.0.0.1.
"""

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port, is_loopback, listening_addresses, processes_with, stop

from bflsim.config import parse_experiment
from bflsim.fl import runtime
from bflsim.fl.simulation import run_federated

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MARKER = "BFLSIM_RAY_CLUSTER_TEST"

# The second node: what `ray start --address=... --node-ip-address=127.0.0.1` runs, then
# waits until the head lists it (and the head) alive; it ends when killed.
SECOND_NODE = """
import sys, time
import ray
from ray._private.node import Node
from ray._private.parameter import RayParams
from ray._raylet import GcsClient

address, temp_dir = sys.argv[1], sys.argv[2]
params = RayParams(node_ip_address="127.0.0.1", gcs_address=address, num_cpus=1, resources={"bflsim_second": 1},
                   temp_dir=temp_dir, object_store_memory=80 * 1024**2, min_worker_port=0, max_worker_port=0)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
gcs, alive = GcsClient(address=address), ray.core.generated.gcs_pb2.GcsNodeInfo.ALIVE
deadline = time.monotonic() + 60
while sum(info.state == alive for info in gcs.get_all_node_info(timeout=5).values()) < 2:
    if time.monotonic() > deadline:
        sys.exit("the head does not list two alive nodes after 60 s")
    time.sleep(0.2)
print("ready", node.node_id, flush=True)
while True:
    time.sleep(3600)
"""


def experiment(address: str, **backend) -> dict:
    return {
        "experiment": {"name": "ray_cluster", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 800}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "federation": {"num_nodes": 4, "rounds": 2},
        "aggregator": {"name": "fedavg"},
        "ledger": {"backend": "embedded"},
        "backend": {"ray_address": address, "client_num_cpus": 1.0, **backend},
    }


# --- where the cluster listens (conftest finds the processes and sockets) -------------------


class Listening(threading.Thread):
    """Collects, every second until stopped, where the cluster's processes listen."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(daemon=True)
        self.marker, self.found, self.done = marker, set(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.found |= listening_addresses([*processes_with(self.marker), os.getpid()])
            self.done.wait(1.0)

    def stop(self) -> set[tuple[str, int]]:
        self.done.set()
        self.join()
        return self.found


# --- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A Ray head (1 CPU, resource bflsim_head) and a second node (1 CPU, bflsim_second) on
    127.0.0.1; yields the head's address and the listening watcher; ends every process they
    started and checks that none is left and no port stays open."""
    temp_dir = Path(tempfile.mkdtemp(prefix="bflsim-ray-", dir="/tmp"))  # short: Ray's socket paths
    marker = f"{MARKER}={temp_dir}".encode()
    env = {
        **os.environ,
        MARKER: str(temp_dir),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP 127.0.0.1: Ray listens on loopback only
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    watcher = Listening(marker)
    second = None
    try:
        started = time.perf_counter()
        head = subprocess.run(
            [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=1", '--resources={"bflsim_head": 1}', f"--temp-dir={temp_dir}",
             "--include-dashboard=false", f"--dashboard-port={free_port()}", "--disable-usage-stats",
             f"--ray-client-server-port={free_port()}", f"--object-store-memory={80 * 1024**2}",
             "--min-worker-port=0", "--max-worker-port=0"],  # ports the OS picks: none shared with another Ray
            check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=90,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        second = subprocess.Popen([sys.executable, "-c", SECOND_NODE, address, str(temp_dir)], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        answered, _, _ = select.select([second.stdout], [], [], 90)  # it exits if the head never lists it
        ready = second.stdout.readline() if answered else "no answer in 90 s"
        assert ready.startswith("ready"), ready
        watcher.start()
        print(f"two-node cluster up in {time.perf_counter() - started:.1f} s")
        yield address, watcher, env
    finally:
        watcher.done.set()
        stop(processes_with(marker), grace=3.0)
        if second is not None:
            second.wait(timeout=10)
        left = processes_with(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the Ray cluster survived: {left}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the Ray head still listens"


FRESH_RUN = """
import json, sys
from bflsim.config import parse_experiment
from bflsim.fl.simulation import run_federated
try:
    run = run_federated(parse_experiment(json.loads(sys.argv[1])), sys.argv[2])
except ValueError as err:
    import ray
    sys.exit(f"ray still initialized: {ray.is_initialized()}; refused: {err}")
print(run.path)
"""


def run_fresh(config: dict, out: Path, env: dict) -> subprocess.CompletedProcess:
    """``run_federated`` in a fresh process, as ``bflsim run`` is: the test process has loaded
    TensorFlow with earlier tests, and Ray's GCS client, created by ``ray.init`` after it, has
    hung for ever in this worker (py-spy: ``Node._init_gcs_client``) on 2 of 3 CI runs."""
    parse_experiment(config)  # a bad config fails here, not in the child
    return subprocess.run([sys.executable, "-c", FRESH_RUN, json.dumps(config), str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_run_on_two_ray_nodes_spreads_its_clients_over_both(cluster, tmp_path):
    address, watcher, env = cluster

    started = time.perf_counter()
    done = run_fresh(experiment(address), tmp_path / "runs", env)
    seconds = time.perf_counter() - started
    listened = watcher.stop()

    assert done.returncode == 0, done.stderr[-3000:]
    run_path = Path(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_path / "manifest.json").read_text())
    metrics = pd.read_csv(run_path / "metrics.csv")
    rounds = metrics[metrics["split"] == "round"]
    nodes = manifest["ray"]["nodes"]
    by_resource = {next(k for k in n["resources"] if k.startswith("bflsim_")): n for n in nodes}
    assert manifest["status"] == "complete" and manifest["ray"]["address"] == address
    assert rounds[rounds["metric"] == "updates_received"]["value"].tolist() == [4.0, 4.0]
    assert manifest["ledger"]["backend"] == "embedded" and manifest.get("final_model_digest")
    # Each node ran one actor and handed it messages: 4 identify + 4 register_data + 2 x 4 train.
    assert set(by_resource) == {"bflsim_head", "bflsim_second"}, nodes
    assert all(n["ip"] == "127.0.0.1" and n["actors"] == 1 and n["messages"] > 0 for n in nodes), nodes
    assert sum(n["messages"] for n in nodes) == 16, nodes
    assert len({n["node_id"] for n in nodes}) == 2
    assert listened and all(is_loopback(a) for a, _ in listened), sorted(listened)
    print(f"run on two Ray nodes: {seconds:.1f} s; messages per node "
          f"{ {k: n['messages'] for k, n in by_resource.items()} }; listened on {len(listened)} loopback ports")


def test_a_cluster_too_small_for_one_client_is_refused_before_the_run(cluster, tmp_path):
    address, _, env = cluster

    done = run_fresh(experiment(address, client_num_cpus=2.0), tmp_path / "runs", env)

    assert done.returncode == 1 and "refused: " in done.stderr, done.stderr[-3000:]
    message = done.stderr.split("refused: ", 1)[1]
    assert f"backend.ray_address = '{address}'" in message
    assert "each needs backend.client_num_cpus = 2 CPUs on one node; the cluster has 2 CPUs" in message
    assert message.count(": 1 CPUs") == 2 and "127.0.0.1" in message  # both nodes, with what each has
    assert not (tmp_path / "runs").exists()  # refused before the run folder
    assert "ray still initialized: False;" in done.stderr  # and the runtime let go of the cluster
    print(message)


def test_an_address_where_nothing_answers_fails_naming_it_and_the_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "RAY_CONNECT_SECONDS", 2.0)
    address = f"127.0.0.1:{free_port()}"  # bound and closed again: nothing listens there
    config = parse_experiment(experiment(address))

    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"backend.ray_address = '{address}': nothing answers at {address} "
                                         r"\(waited 2 s; last error: Connection refused\)"):
        run_federated(config, tmp_path / "runs")

    assert time.monotonic() - started < 20  # Ray's own init would retry for about 12 minutes
    assert not (tmp_path / "runs").exists()


def test_a_port_that_is_no_ray_head_is_told_apart(monkeypatch):
    import ray._raylet

    def no_gcs(address: str) -> None:  # what Ray's GcsClient raises after ~35 s of silence
        raise RuntimeError("Timed out while waiting for GCS to become available.")

    monkeypatch.setattr(ray._raylet, "GcsClient", no_gcs)
    with socket.socket() as server:  # accepts connections, never speaks Ray's protocol
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ValueError, match=rf"{address} accepts connections but no Ray head answers there "
                                             r"\(waited 0 s: Timed out while waiting for GCS"):
            runtime.check_reachable(address)


def test_the_head_address_is_parsed_or_refused():
    assert runtime.head_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert runtime.head_address("ray://head.lan:10001") == ("head.lan", 10001)
    assert runtime.head_address("[::1]:6379") == ("::1", 6379)
    with pytest.raises(ValueError, match=r"backend.ray_address = 'head.lan': expected host:port"):
        runtime.head_address("head.lan")


@pytest.mark.parametrize("address", ["head.lan", "head.lan:", "head.lan:99999", "local", "ray://head.lan"])
def test_a_ray_address_of_another_shape_is_refused_when_the_config_is_read(address):
    from bflsim.config import ConfigError

    with pytest.raises(ConfigError, match=rf"backend.ray_address must be host:port .*; got '{address}'"):
        parse_experiment(experiment(address))
