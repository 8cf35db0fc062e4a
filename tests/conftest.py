"""Shared fixtures. Real-data tests read $BFLSIM_DATA_DIR (CI: ../shared/datasets)."""

import os
import socket
from pathlib import Path

import pytest

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
