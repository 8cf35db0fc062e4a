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
