"""Shared fixtures. Real-data tests read $BFLSIM_DATA_DIR (CI: ../shared/datasets)."""

import os
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
