"""Rebuild a run's chain from its trail: every recorded signed transaction sent again, in order.

The embedded py-evm chain and an anvil started for a run live as long as the run's process.
To carry on an interrupted run (or to audit a finished one) the chain is rebuilt on a fresh
node of the same kind: the trail keeps every transaction's signed bytes
(:mod:`bflsim.runfolder.trail`), the operator's included, so sending them again in order
gives the same accounts, nonces, registry address and contract state. A transaction that
hashes or ends differently than recorded means the trail is not this chain's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bflsim.ledger.base import Ledger, LedgerError

__all__ = ["ReplayMismatch", "replay_transactions"]


class ReplayMismatch(LedgerError):
    """A recorded transaction does not replay as it was recorded."""


def replay_transactions(ledger: Ledger, transactions: Sequence[dict[str, Any]], *, receipt_timeout: float = 30.0) -> int:
    """Send ``transactions`` (rows of ``trail/transactions.jsonl``) to ``ledger``'s chain in
    order; each must hash and end (success or revert) as recorded. Returns how many were sent.

    Rows of transactions the node refused (never mined: block -1) are skipped. Raises
    :class:`ReplayMismatch` at the first difference.
    """
    w3 = ledger.w3  # type: ignore[attr-defined]
    sent = 0
    for position, tx in enumerate(transactions):
        if int(tx.get("block", 0)) < 0:
            continue
        if not tx.get("raw"):
            raise ReplayMismatch(f"transaction {position} ({tx.get('kind')}, {tx.get('tx_hash')}) was recorded "
                                 "without its signed bytes; the chain cannot be rebuilt")
        try:
            tx_hash = "0x" + bytes(w3.eth.send_raw_transaction(bytes.fromhex(tx["raw"]))).hex()
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=receipt_timeout)
        except Exception as err:
            raise ReplayMismatch(f"transaction {position} ({tx.get('kind')}, round {tx.get('round')}) was refused "
                                 f"on replay: {str(err)[:200]}") from err
        if tx_hash != tx["tx_hash"]:
            raise ReplayMismatch(f"transaction {position} ({tx.get('kind')}) hashes to {tx_hash} on replay, "
                                 f"recorded {tx['tx_hash']}")
        if int(receipt["status"]) != int(tx["status"]):
            raise ReplayMismatch(f"transaction {tx['tx_hash']} ({tx.get('kind')}) ended with status "
                                 f"{receipt['status']} on replay, {tx['status']} in the run")
        sent += 1
    return sent
