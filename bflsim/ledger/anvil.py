"""Start and stop a local anvil node (Foundry) for RpcLedger runs and tests.

The binary comes from the npm package pinned in contracts/package.json (``npm ci --prefix
contracts --ignore-scripts``); ``$BFLSIM_ANVIL`` or an ``anvil`` on PATH also work. The node
listens on 127.0.0.1 only. With ``block_time`` it mines every N seconds instead of per
transaction, which emulates a PoA chain's block finality.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Self

__all__ = ["AnvilNode", "find_anvil"]

_CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def find_anvil() -> str | None:
    """Path of an anvil binary: $BFLSIM_ANVIL, contracts/node_modules, then PATH."""
    if os.environ.get("BFLSIM_ANVIL"):
        return os.environ["BFLSIM_ANVIL"]
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    exe = "anvil.exe" if system == "windows" else "anvil"
    system = "win32" if system == "windows" else system
    local = _CONTRACTS_DIR / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / exe
    if local.is_file():
        return str(local)
    return shutil.which("anvil")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rpc(url: str, method: str, timeout: float = 1.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["result"]


class AnvilNode:
    """An anvil process on 127.0.0.1; use as a context manager or call start()/stop().

    Parameters
    ----------
    port : int, optional
        Default: a free port.
    block_time : float, optional
        Seconds per block; default automine (one block per transaction).
    chain_id : int, optional
        Default anvil's 31337.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        block_time: float | None = None,
        chain_id: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.port = port
        self.block_time = block_time
        self.chain_id = chain_id
        self.binary = binary or find_anvil()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> str:
        """Start anvil and wait until it answers JSON-RPC; returns its URL."""
        if self.binary is None:
            raise FileNotFoundError(
                "anvil not found: run `npm ci --prefix contracts --ignore-scripts`, "
                "or set $BFLSIM_ANVIL"
            )
        if self.running:
            return self.url
        self.port = self.port or _free_port()
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        # anvil's banner and log, kept for the error message should it fail to start
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                log = self._read_log()
                self.stop()
                raise RuntimeError(f"anvil exited at start ({' '.join(cmd)}):\n{log}")
            try:
                _rpc(self.url, "eth_chainId", timeout=0.5)
                return self.url
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                log = self._read_log()
                self.stop()
                raise TimeoutError(
                    f"anvil did not answer on {self.url} within {self.startup_timeout} s:\n{log}"
                )
            time.sleep(0.05)

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        """Terminate anvil (kill after 5 s) and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
