"""The closed loop's side of a run's registry (v4): devices, the edge nodes' alerts, disputes.

After training, the server registers the devices behind every edge node and the quarantine
rule (:meth:`LoopSession.setup`). Each slice of traffic, every edge node returns the alerts
it raised, each with the window it saw and its signed ``alert`` transaction;
:meth:`LoopSession.settle` then, per alert and in each node's order:

1. recomputes the window's digest from the rows and verdicts the node sent, and checks the
   signed transaction against it and against the context the node was given (signer,
   registry, run, nonce, ...: :func:`bflsim.ledger.identity.check_alert_tx`); a transaction
   that fails is refused, never relayed (and so are the node's later alerts of the slice,
   whose nonces follow it);
2. asks ``genuine(alert)`` whether the window justifies an alert (the server scores the
   window's rows with the same global model); a false one is not relayed but disputed
   (``disputeAlert``: a rejection of the node, revoked at ``ledger.max_rejections``);
3. relays the rest and reads which devices the registry quarantined.

Every transaction goes to the trail under round ``federation.rounds + 1`` (the loop comes
after the last round), so the audit replays it with the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bflsim.ledger.identity import TxContext, check_alert_tx
from bflsim.ledger.session import ChainSession, _on_chain
from bflsim.traffic import window_digest

OUTCOMES = ("relayed", "quarantined", "disputed", "refused", "reverted")


@dataclass
class ReceivedAlert:
    """An edge node's alert as the server receives it, and what became of it."""

    node: int
    device: int
    time: float  # seconds into the traffic when the window crossed the threshold
    rows: tuple[int, ...]
    verdicts: tuple[bool, ...]
    score: int
    raw_tx: bytes
    digest: bytes = b""  # the server's own digest of the window
    outcome: str = ""  # one of OUTCOMES
    reason: str = ""
    tx_hash: str = ""
    gas_used: int = 0


class LoopSession:
    """The loop's registry calls, on a run's :class:`ChainSession` (per-node mode)."""

    def __init__(self, session: ChainSession) -> None:
        self.session = session
        self.ledger = session.ledger
        self.loop_round = session.config.federation.rounds + 1
        self.seconds = 0.0

    def setup(self, behind: Sequence[tuple[int, int]], alerts_to_quarantine: int) -> None:
        """The quarantine rule and every ``(device, edge node)`` pair, from the owner's key."""
        started = time.perf_counter()
        with _on_chain(self.ledger, "registering the devices and the quarantine rule"):
            self.ledger.set_quarantine_rule(alerts_to_quarantine, 1)
            self.ledger.register_devices(list(behind))
        self.session._write_transactions(self.loop_round)
        self.seconds += time.perf_counter() - started

    def contexts(self, nodes: list[int]) -> tuple[dict[int, TxContext], dict[int, dict]]:
        """Each node's transaction context for its first alert of a slice (a node signs its
        k-th alert with the nonce after it), as objects and as message configs."""
        contexts = self.session.tx_contexts(nodes)
        return contexts, {i: ctx.to_config(prefix="") for i, ctx in contexts.items()}

    def settle(
        self, alerts: Sequence[ReceivedAlert], given: dict[int, TxContext],
        genuine: Callable[[ReceivedAlert], bool],
    ) -> set[int]:
        """Check, dispute or relay ``alerts`` (each node's in the order it signed them); the
        devices the registry quarantined. Sets every alert's ``outcome``."""
        started = time.perf_counter()
        relay: list[ReceivedAlert] = []
        sent: dict[int, int] = {}  # node -> alerts of this slice checked so far (its nonce offset)
        gap: set[int] = set()  # nodes with an alert that was not relayed: their later nonces cannot mine
        for alert in alerts:
            alert.digest = window_digest(alert.device, alert.rows, alert.verdicts)
            offset = sent.get(alert.node, 0)
            sent[alert.node] = offset + 1
            ctx = given.get(alert.node)
            if alert.node in gap:
                alert.outcome, alert.reason = "refused", "follows an alert of the same slice that was not relayed (nonce gap)"
                continue
            if ctx is None:
                alert.outcome, alert.reason = "refused", f"node {alert.node} was given no transaction context"
                gap.add(alert.node)
                continue
            refusal = check_alert_tx(alert.raw_tx, node_address=self.session.addresses[alert.node],
                                     ctx=replace(ctx, nonce=ctx.nonce + offset), device=alert.device,
                                     window_digest=alert.digest, score=alert.score)
            if refusal is None and not genuine(alert):
                alert.outcome, alert.reason = "disputed", "the window does not reach the threshold when the server scores it"
                gap.add(alert.node)
                with _on_chain(self.ledger, "disputing a false alert"):
                    record = self.ledger.dispute_alert(alert.device, alert.node, alert.digest)
                alert.tx_hash, alert.gas_used = record.tx_hash, record.gas_used
                continue
            if refusal is not None:
                alert.outcome, alert.reason = "refused", refusal[1]
                gap.add(alert.node)
                continue
            relay.append(alert)
        with _on_chain(self.ledger, "relaying the alerts"):
            records = self.ledger.send_raw_many([a.raw_tx for a in relay], kind="alert")
            mined = [r.block for r in records if r.block >= 0]
            events = self.ledger.events(from_block=min(mined)) if mined else []
        by_tx = {e.tx_hash.lower(): int(e.args["device"]) for e in events if e.name == "DeviceQuarantined"}
        quarantined: set[int] = set()
        for alert, record in zip(relay, records, strict=True):
            alert.tx_hash, alert.gas_used = record.tx_hash, record.gas_used
            if record.status != 1:
                alert.outcome, alert.reason = "reverted", f"alert {record.tx_hash} failed on chain: {record.error}"
            elif record.tx_hash.lower() in by_tx:
                alert.outcome = "quarantined"
                quarantined.add(alert.device)
            else:
                alert.outcome = "relayed"
        self.session._write_transactions(self.loop_round)
        self.seconds += time.perf_counter() - started
        return quarantined
