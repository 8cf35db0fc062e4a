"""Rebuild a run's chain from its trail: every recorded signed transaction sent again, in order.

The embedded py-evm chain and an anvil started for a run live as long as the run's process.
To carry on an interrupted run (or to audit a finished one) the chain is rebuilt on a fresh
node of the same kind: the trail keeps every transaction's signed bytes
(:mod:`bflsim.runfolder.trail`), the operator's included, so sending them again in order
gives the same accounts, nonces, registry address and contract state. A transaction that
hashes or ends differently than recorded means the trail is not this chain's history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bflsim.ledger.base import Ledger, LedgerError

__all__ = ["NotReplayable", "ReplayMismatch", "replay_findings", "replay_transactions"]


class ReplayMismatch(LedgerError):
    """A recorded transaction does not replay as it was recorded."""


class NotReplayable(ReplayMismatch):
    """A recorded transaction kept no signed bytes: the chain cannot be rebuilt from the trail."""


def replay_findings(
    ledger: Ledger, transactions: Sequence[dict[str, Any]], *, receipt_timeout: float = 30.0,
    skip_unmined: bool = False,
) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Send ``transactions`` (rows of ``trail/transactions.jsonl``) to ``ledger``'s chain in
    order and yield ``(position, row, finding)`` for every way one differs from its record:
    refused, another hash, another gas use, another status (success or revert).

    ``skip_unmined`` leaves out rows of transactions the node refused (never mined: block
    -1). A row without signed bytes raises :class:`NotReplayable`.
    """
    w3 = ledger.w3  # type: ignore[attr-defined]
    for position, tx in enumerate(transactions):
        if skip_unmined and int(tx.get("block", 0)) < 0:
            continue
        kind, server_round = tx.get("kind"), tx.get("round")
        if not tx.get("raw"):
            raise NotReplayable(f"transaction {position} ({kind}, {tx.get('tx_hash')}) was recorded without its "
                                "signed bytes")
        try:
            tx_hash = "0x" + bytes(w3.eth.send_raw_transaction(bytes.fromhex(tx["raw"]))).hex()
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=receipt_timeout)
        except Exception as err:  # noqa: BLE001 - a refused replay is the finding
            yield position, tx, f"transaction {position} ({kind}, round {server_round}) refused on replay: {str(err)[:160]}"
            continue
        if tx_hash != tx["tx_hash"]:
            yield position, tx, f"transaction {position} ({kind}) hashes to {tx_hash} on replay, recorded {tx['tx_hash']}"
        if "gas_used" in tx and int(receipt["gasUsed"]) != int(tx["gas_used"]):
            yield position, tx, (f"transaction {position} ({kind}, round {server_round}) used {receipt['gasUsed']} gas "
                                 f"on replay, the trail records {tx['gas_used']}")
        if int(receipt["status"]) != int(tx["status"]):
            yield position, tx, (f"transaction {tx['tx_hash']} ({kind}, round {server_round}) ended with status "
                                 f"{receipt['status']} on replay, {tx['status']} in the run")


def replay_transactions(ledger: Ledger, transactions: Sequence[dict[str, Any]], *, receipt_timeout: float = 30.0) -> None:
    """Rebuild the chain from ``transactions``: every mined one must replay as recorded
    (:func:`replay_findings`); raises :class:`ReplayMismatch` at the first difference."""
    for _, _, finding in replay_findings(ledger, transactions, receipt_timeout=receipt_timeout, skip_unmined=True):
        raise ReplayMismatch(finding)
