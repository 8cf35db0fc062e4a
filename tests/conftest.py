"""Shared fixtures. Real-data tests read $BFLSIM_DATA_DIR (CI: ../shared/datasets)."""

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from bflsim.runfolder.lifecycle import processes_with_env, stop_processes

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(scope="session")
def experiments_dir() -> Path:
    return REPO / "experiments"


def require_anvil() -> None:
    """Skip when no anvil is installed; fail instead under BFLSIM_REQUIRE_NODE=1 (CI)."""
    from bflsim.ledger.anvil import find_anvil

    if find_anvil() is None:
        message = "anvil missing: npm ci --prefix contracts --ignore-scripts"
        if os.environ.get("BFLSIM_REQUIRE_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def anvil():
    """A fresh anvil on 127.0.0.1 for the module's tests; stopped (its port freed) after them."""
    require_anvil()
    from bflsim.ledger.anvil import AnvilNode

    node = AnvilNode()
    node.start()
    yield node
    node.stop()
    assert not node.running and not port_is_open(node.port)


@pytest.fixture(scope="module", autouse=True)
def warm_runtime(request):
    """One Ray runtime for all the in-process federated runs of a module that sets
    ``RUNTIME_BACKEND`` (its runs' ``[backend]`` table), as a sweep shares one: Ray and the
    ClientApp actors start once, and every run after the first also checks that warm actors
    (cached data, traced model) give what fresh ones give."""
    backend = getattr(request.module, "RUNTIME_BACKEND", None)
    if backend is None:
        yield None
        return
    from bflsim.config import parse_experiment
    from bflsim.fl.runtime import Runtime

    config = parse_experiment({"experiment": {"name": "runtime", "kind": "federated"},
                               "data": {"dataset": "synthetic"}, "backend": backend})
    with Runtime(config) as runtime:
        yield runtime


def stop_experiment(folder: Path, *, delay_seconds: float, points: str, federation: str = "") -> Path:
    """``folder/stop.toml``: a small federated experiment whose node 1 stalls ``delay_seconds``
    in every round (or those ``federation`` lines say), for the tests that stop a sweep with
    a signal; ``points``: its ``[[scenarios]]`` or ``[sweep]`` table."""
    experiment = folder / "stop.toml"
    experiment.write_text(f"""
[experiment]
name = "stop"
kind = "federated"
[data]
dataset = "synthetic"
[data.synthetic]
num_samples = 1000
[models]
names = ["dnn"]
[models.dnn]
hidden_units = [8]
dropout = 0.0
[federation]
num_nodes = 4
rounds = 3
slow_nodes = [1]
delay_seconds = {delay_seconds}
{federation}
[aggregator]
name = "fedavg"
[backend]
num_cpus = 2
{points}
""")
    return experiment


# --- processes and sockets a test started (Flower's SuperLink/SuperNodes, a Ray cluster) -------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


processes_with = processes_with_env  # ids of the live processes whose environment holds a marker
stop = stop_processes  # SIGTERM, then SIGKILL after a grace period, each process by its id


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets that ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                hex_address, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                address = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((str(ipaddress.ip_address(address)), int(hex_port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
