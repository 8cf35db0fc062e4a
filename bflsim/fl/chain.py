"""The server's side of the on-chain registry in a federated run (used by the strategy).

:class:`ChainSession` deploys the registry, enrolls the edge nodes' keys, relays the
transactions the nodes signed, opens and commits every round, and keeps the run's trail
(:mod:`bflsim.trail`): every transaction, every round's outcome and every update and global
model in the blob store. It knows nothing of Flower: the strategy hands it arrays and the
nodes' signed bytes.

Checks before a node's ``submitUpdate`` is relayed (DESIGN.md, "Why clients sign and the
server relays"): the transaction must be signed by that node's key, for this round, chain and
registry, for the sample count the node reported, and for the digest the server recomputes
from the weights it received. A signed claim whose digest differs is still relayed (it is
the node's own statement, on chain for the audit) but the update is refused, and the round's
commit counts a rejection against the node. A transaction signed by another key is not
relayed at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.config import ExperimentConfig
from bflsim.fl.node import Weights, node_identities
from bflsim.hashing import digest_hex, scores_digest
from bflsim.ledger.base import Ledger, LedgerError, TxRecord
from bflsim.ledger.identity import read_update_tx
from bflsim.trail import Trail

__all__ = ["ChainSession", "Received"]


@contextmanager
def _on_chain(ledger: Ledger, what: str) -> Iterator[None]:
    """Any failure talking to the chain becomes a LedgerError naming the step and endpoint."""
    try:
        yield
    except LedgerError:
        raise
    except Exception as err:  # connection drops, timeouts, malformed answers
        raise LedgerError(f"{what} failed on {ledger.endpoint}: {type(err).__name__}: {err}") from err


@dataclass
class Received:
    """One node's training reply as the server sees it."""

    node: int
    weights: Weights
    num_samples: int
    raw_tx: bytes
    refused: str | None = None  # why the update does not enter the aggregation
    digest: bytes = b""


@dataclass
class ChainSession:
    """Registry, keys and trail of one run on ``ledger`` (any :class:`Ledger` but NoLedger)."""

    config: ExperimentConfig
    ledger: Ledger
    run_dir: Path
    trail: Trail = field(init=False)
    addresses: dict[int, str] = field(init=False)
    seconds: float = 0.0  # wall time spent in chain calls this round

    def __post_init__(self) -> None:
        self.trail = Trail(self.run_dir)
        self.identities = {i.index: i for i in node_identities(self.config)}
        self.addresses = {i: identity.address for i, identity in self.identities.items()}
        self._senders = {address: i for i, address in self.addresses.items()}

    # --- setup -----------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        """Deploy a fresh registry and enroll every node; returns the manifest's ``ledger`` entry."""
        with _on_chain(self.ledger, "deploying the registry and enrolling the nodes"):
            started = time.perf_counter()
            self.ledger.deploy(self.config.ledger.max_rejections)
            self.ledger.enroll(list(self.identities.values()))
            deploy = self.ledger.records[0]
            info = {
                "backend": self.config.ledger.backend,
                "endpoint": self.ledger.endpoint,
                "chain_id": self.ledger.chain_id,
                "contract": self.ledger.address,
                "operator": self.ledger.operator,
                "deploy_tx": deploy.tx_hash,
                "deploy_block": deploy.block,
                "max_rejections": self.config.ledger.max_rejections,
                "block_time": self.config.ledger.block_time,
                "nodes": {str(i): address for i, address in self.addresses.items()},
            }
            self.trail.write_chain(info)
            self.trail.journal(self.ledger, 0, self._senders)
            self.seconds = time.perf_counter() - started
            return info

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        """The ConfigRecord entries each node needs to sign its next transaction."""
        with _on_chain(self.ledger, "reading the nodes' nonces"):
            contexts = self.ledger.tx_contexts({i: self.addresses[i] for i in nodes})
            return {i: ctx.to_config() for i, ctx in contexts.items()}

    def register_data(self, signed: dict[int, bytes], digests: dict[int, bytes]) -> dict[int, str]:
        """Relay the nodes' ``registerData`` transactions; returns {node: why it failed}."""
        with _on_chain(self.ledger, "relaying the data registrations"):
            started = time.perf_counter()
            failed = {}
            nodes = sorted(signed)
            records = self.ledger.send_raw_many([signed[i] for i in nodes], kind="register_data")
            for node, record in zip(nodes, records, strict=True):
                if record.sender != self.addresses[node]:
                    failed[node] = f"registerData signed by {record.sender}, not by node {node}'s key"
                elif record.status != 1:
                    failed[node] = f"registerData {record.tx_hash} failed: {record.error}"
            self.trail.journal(self.ledger, 0, self._senders)
            self.trail.write_round({
                "round": 0, "data": {str(i): digest_hex(d) for i, d in sorted(digests.items())},
                "failed": {str(i): why for i, why in failed.items()},
            })
            self.seconds += time.perf_counter() - started
            return failed

    # --- rounds ----------------------------------------------------------------------

    def eligible(self) -> list[int]:
        """Nodes the contract still counts as active (revoked ones are out)."""
        with _on_chain(self.ledger, "reading the active nodes"):
            return sorted(self.ledger.active_nodes())

    def open_round(self, server_round: int, global_weights: Weights, cohort: list[int]) -> dict[int, dict[str, Any]]:
        """Store the global model, open the round on chain, and return each node's chain config:
        its transaction context and the data digest it registered (read back from the chain)."""
        with _on_chain(self.ledger, "opening the round"):
            started = time.perf_counter()
            self._round_start = len(self.ledger.records)
            self.global_digest = self.trail.blobs.put(global_weights)
            self.ledger.open_round(server_round, self.global_digest, cohort)
            configs = self.contexts(cohort)
            for node in cohort:
                digest, timestamp = self.ledger.data_digest(self.addresses[node])
                configs[node].update({"chain.data-digest": digest, "chain.data-timestamp": int(timestamp)})
            self.seconds = time.perf_counter() - started
            return configs

    def relay_updates(self, server_round: int, received: list[Received]) -> None:
        """Check each signed ``submitUpdate`` against the update received, store it, relay it.

        Sets ``refused`` on every update that must not be aggregated.
        """
        started = time.perf_counter()
        relay: list[Received] = []
        for update in received:
            update.digest = self.trail.blobs.put(update.weights)
            try:
                claim = read_update_tx(update.raw_tx)
            except ValueError as err:
                update.refused = f"not a signed submitUpdate: {err}"
                continue
            expected = self.addresses[update.node]
            if claim.sender != expected:
                update.refused = f"submitUpdate signed by {claim.sender}, not by node {update.node} ({expected})"
                continue
            relay.append(update)
            if claim.update_digest != update.digest:
                update.refused = (
                    f"update digest mismatch: signed 0x{claim.update_digest.hex()}, "
                    f"received weights hash to 0x{update.digest.hex()}"
                )
            elif claim.server_round != server_round:
                update.refused = f"submitUpdate signed for round {claim.server_round}, not {server_round}"
            elif claim.num_samples != update.num_samples:
                update.refused = f"signed {claim.num_samples} samples but reported {update.num_samples}"
        with _on_chain(self.ledger, "relaying the updates"):
            records = self.ledger.send_raw_many([u.raw_tx for u in relay], kind="submit_update")
        for update, record in zip(relay, records, strict=True):
            if record.status != 1:
                update.refused = f"submitUpdate {record.tx_hash} failed on chain: {record.error}"
        self.seconds += time.perf_counter() - started

    def commit_round(
        self,
        server_round: int,
        cohort: list[int],
        received: list[Received],
        candidates: list[int],
        selected: list[int],
        rejected: list[int],
        scores: np.ndarray,
        new_weights: Weights,
    ) -> dict[str, float]:
        """Store the new global model, commit the round, write the trail; returns round metrics.

        ``candidates`` are the aggregated nodes in the aggregator's row order, ``selected`` and
        ``rejected`` node ids, ``scores`` one per candidate. Accepted on chain: the aggregated
        nodes not rejected (every candidate's submitUpdate was relayed; the contract reverts
        a commit that accepts a node without a submission).
        """
        started = time.perf_counter()
        new_digest = self.trail.blobs.put(new_weights)
        digest_of_scores = scores_digest(selected, scores)
        accepted = sorted(set(candidates) - set(rejected))  # candidates: updates relayed without refusal
        with _on_chain(self.ledger, "committing the round"):
            self.ledger.commit_round(server_round, new_digest, accepted, digest_of_scores)
            active = len(self.ledger.active_nodes())
        self.seconds += time.perf_counter() - started
        records: list[TxRecord] = self.ledger.records[self._round_start:]
        self.trail.journal(self.ledger, server_round, self._senders)
        self.trail.write_round({
            "round": server_round,
            "global_digest": digest_hex(self.global_digest),
            "cohort": cohort,
            "updates": [
                {"node": u.node, "digest": digest_hex(u.digest), "num_samples": u.num_samples, "refused": u.refused}
                for u in received
            ],
            "candidates": candidates,
            "selected": selected,
            "rejected": rejected,
            "accepted": accepted,
            "scores": [float(s) for s in scores],
            "scores_digest": digest_hex(digest_of_scores),
            "new_global_digest": digest_hex(new_digest),
        })
        return {
            "gas_used": float(sum(r.gas_used for r in records)),
            "transactions": float(len(records)),
            "chain_latency_seconds": float(sum(r.seconds for r in records)),
            "ledger_seconds": self.seconds,
            "refused_updates": float(sum(u.refused is not None for u in received)),
            "active_nodes": float(active),
        }
