"""The audit trail a ledger-backed run leaves in its run folder, written as the run goes.

::

    <run>/trail/chain.json           chain id, endpoint, registry address, operator, node keys' addresses
    <run>/trail/transactions.jsonl   every mined transaction: round, kind, node, hash, gas, latency,
                                     and its signed bytes (so the audit can replay the chain)
    <run>/trail/rounds.jsonl         per committed round: cohort, opened global digest, every update
                                     received (digest recomputed by the server), the aggregation's
                                     candidates, selection, rejections, scores and the committed
                                     global digest
    <run>/blobs/<digest>.npz         every update and global model, named by its weights digest

Lines are appended and flushed when a round ends, so a run stopped midway keeps its trail.
A trail opened in a run folder writes only while the folder holds the same running run as
when it was opened (:func:`bflsim.runfolder.lifecycle.check_writer`).
The trail takes plain rows; what a row holds is the ledger session's business
(:mod:`bflsim.ledger.session`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bflsim.runfolder.blobs import BlobStore
from bflsim.runfolder.lifecycle import MANIFEST, check_writer

__all__ = ["BLOBS", "CHAIN", "ROUNDS", "TRANSACTIONS", "Trail", "read_chain", "read_rounds", "read_transactions"]

CHAIN = "trail/chain.json"
TRANSACTIONS = "trail/transactions.jsonl"
ROUNDS = "trail/rounds.jsonl"
BLOBS = "blobs"


class Trail:
    """Writer of a run's trail; :attr:`blobs` is its content-addressed store."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        manifest = self.run_dir / MANIFEST
        # the writer whose run the folder holds now; every write checks it still does
        self.token = (json.loads(manifest.read_text()).get("writer") or {}).get("token") if manifest.is_file() else None
        self.check_writer()
        (self.run_dir / "trail").mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.run_dir / BLOBS, guard=self.check_writer)

    def check_writer(self) -> None:
        if self.token is not None:
            check_writer(self.run_dir, self.token)

    def write_chain(self, info: dict[str, Any]) -> None:
        self.check_writer()
        (self.run_dir / CHAIN).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def append_transactions(self, rows: Iterable[dict[str, Any]]) -> None:
        self.check_writer()
        with open(self.run_dir / TRANSACTIONS, "a") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)

    def write_round(self, record: dict[str, Any]) -> None:
        self.check_writer()
        with open(self.run_dir / ROUNDS, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not the run folder of a ledger-backed run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_chain(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHAIN
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not the run folder of a ledger-backed run")
    return json.loads(path.read_text())


def read_transactions(run_dir: str | Path) -> list[dict[str, Any]]:
    return _jsonl(Path(run_dir) / TRANSACTIONS)


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    return _jsonl(Path(run_dir) / ROUNDS)
