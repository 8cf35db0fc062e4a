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
