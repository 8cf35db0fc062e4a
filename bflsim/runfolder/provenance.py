"""Where a result came from: the time, the installed packages, the source commit."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

TRACKED_PACKAGES = (
    "bflsim", "flwr", "ray", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas",
    "scikit-learn", "matplotlib", "web3", "eth-tester", "py-evm", "eth-account",
)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit of the source tree (``+dirty`` when it has local changes)."""
    root = cwd or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit
