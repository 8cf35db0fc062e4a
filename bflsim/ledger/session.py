"""The server's side of the on-chain registry in a federated run (used by the strategy).

:class:`ChainSession` deploys the registry, enrolls the edge nodes' keys, relays the
transactions the nodes signed, opens and commits every round, and keeps the run's trail
(:mod:`bflsim.runfolder.trail`): every transaction, every round's outcome and every update
and global model in the blob store. :class:`NoChainSession` is the same interface for
Standard FL: nothing is registered. Neither knows Flower: the strategy hands them arrays and
the nodes' signed bytes.

Checks before a node's ``submitUpdate`` is relayed (DESIGN.md, "Why clients sign and the
server relays"): the server recomputes the digest of the weights it received
(:meth:`ChainSession.relay_updates`); the transaction must be signed by that node's key, for
this round and for the sample count the node reported, and name that digest. A signed claim
whose digest differs is still relayed (it is the node's own statement, on chain for the
audit) but the update is refused, and the round's commit counts a rejection against the
node. A transaction signed by another key is not relayed at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bflsim.aggregators import RoundDecision
from bflsim.config import ExperimentConfig
from bflsim.hashing import digest_hex, weights_digest
from bflsim.ledger.base import Ledger, LedgerError, TxRecord
from bflsim.ledger.identity import node_identities, read_update_tx
from bflsim.runfolder.trail import Trail, read_chain, read_transactions
from bflsim.vectors import Weights

__all__ = ["DATA_DIGEST_KEY", "DATA_TIMESTAMP_KEY", "ChainSession", "NoChainSession", "ReceivedUpdate", "open_session"]

# What :meth:`ChainSession.open_round` adds to each node's chain config, beside its TxContext.
DATA_DIGEST_KEY = "data-digest"
DATA_TIMESTAMP_KEY = "data-timestamp"


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
class ReceivedUpdate:
    """One node's training reply as the server sees it."""

    node: int
    weights: Weights
    num_samples: int
    raw_tx: bytes = b""
    train_loss: float | None = None
    refused: str | None = None  # why the update does not enter the aggregation
    digest: bytes = b""  # the server's own digest of ``weights``


class NoChainSession:
    """Standard FL: no registry, no trail; every node stays eligible."""

    enabled = False

    def setup(self) -> dict[str, Any] | None:
        return None

    def resume(self) -> None:
        return None

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        return {}

    def register_data(self, signed: dict[int, bytes], digests: dict[int, bytes]) -> dict[int, str]:
        return {}

    def active_nodes(self, nodes: list[int]) -> list[int]:
        return sorted(nodes)

    def open_round(self, server_round: int, global_weights: Weights, cohort: list[int]) -> dict[int, dict[str, Any]]:
        return {}

    def relay_updates(self, server_round: int, received: list[ReceivedUpdate]) -> None:
        return None

    def commit_round(
        self, server_round: int, cohort: list[int], received: list[ReceivedUpdate], decision: RoundDecision
    ) -> dict[str, float]:
        return {}


@dataclass
class ChainSession:
    """Registry, keys and trail of one run on ``ledger`` (any :class:`Ledger` but NoLedger)."""

    config: ExperimentConfig
    ledger: Ledger
    run_dir: Path
    trail: Trail = field(init=False)
    addresses: dict[int, str] = field(init=False)
    seconds: float = 0.0  # wall time spent in chain calls this round
    enabled = True

    def __post_init__(self) -> None:
        self.trail = Trail(self.run_dir)
        self.identities = {i.index: i for i in node_identities(self.config)}
        self.addresses = {i: identity.address for i, identity in self.identities.items()}
        self._senders = {address: i for i, address in self.addresses.items()}
        self._written = 0  # ledger records already in the trail

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
                "data_digest": "v2",  # features and labels (bflsim.hashing.DATA_DIGEST_VERSIONS)
            }
            self.trail.write_chain(info)
            self._write_transactions(0)
            self.seconds = time.perf_counter() - started
            return info

    def resume(self) -> None:
        """Carry on an interrupted run's registry (its trail cut back to the checkpoint).

        The embedded chain and an anvil started for the run died with it: the chain is
        rebuilt by replaying the trail's transactions (:func:`bflsim.ledger.replay.replay_transactions`).
        On an external endpoint the recorded registry is attached, and must not have opened
        a round after the checkpoint's.
        """
        from bflsim.ledger.replay import replay_transactions

        info = read_chain(self.run_dir)
        if int(info["chain_id"]) != self.ledger.chain_id:
            raise LedgerError(f"the run's chain id was {info['chain_id']}; {self.ledger.endpoint} serves "
                              f"{self.ledger.chain_id}: the run cannot carry on there")
        transactions = read_transactions(self.run_dir)
        with _on_chain(self.ledger, "rebuilding the run's chain from its trail"):
            if self.config.ledger.backend in ("embedded", "anvil"):
                replay_transactions(self.ledger, transactions)
            self.ledger.attach(str(info["contract"]))
            last = max((int(t["round"]) for t in transactions), default=0)
            if self.config.ledger.backend == "rpc" and self.ledger.round_info(last + 1).status != "none":
                raise LedgerError(f"round {last + 1} was opened on {self.ledger.endpoint} after the checkpoint; "
                                  "the registry cannot open it again, so the run cannot be resumed")

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        """Each node's transaction context (to sign its next transaction), by node."""
        with _on_chain(self.ledger, "reading the nodes' nonces"):
            contexts = self.ledger.tx_contexts({i: self.addresses[i] for i in nodes})
            return {i: ctx.to_config(prefix="") for i, ctx in contexts.items()}

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
            self._write_transactions(0)
            self.trail.write_round({
                "round": 0, "data": {str(i): digest_hex(d) for i, d in sorted(digests.items())},
                "failed": {str(i): why for i, why in failed.items()},
            })
            self.seconds += time.perf_counter() - started
            return failed

    # --- rounds ----------------------------------------------------------------------

    def active_nodes(self, nodes: list[int]) -> list[int]:
        """Those of ``nodes`` the contract still counts as active (revoked ones are out)."""
        with _on_chain(self.ledger, "reading the active nodes"):
            active = set(self.ledger.active_nodes())
        return sorted(i for i in nodes if i in active)

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
                configs[node].update({DATA_DIGEST_KEY: digest, DATA_TIMESTAMP_KEY: int(timestamp)})
            self.seconds = time.perf_counter() - started
            return configs

    def relay_updates(self, server_round: int, received: list[ReceivedUpdate]) -> None:
        """Check each signed ``submitUpdate`` against the update received, store it, relay it.

        Sets ``digest`` (the server's own) on every update, and ``refused`` on those that
        must not be aggregated.
        """
        started = time.perf_counter()
        relay: list[ReceivedUpdate] = []
        for update in received:
            update.digest = weights_digest(update.weights)  # what the node must have signed
            self.trail.blobs.put(update.weights, update.digest)
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
        self, server_round: int, cohort: list[int], received: list[ReceivedUpdate], decision: RoundDecision
    ) -> dict[str, float]:
        """Store the new global model, commit the round, write the trail; returns round metrics.

        Accepted on chain: the aggregated nodes the rule did not reject (every candidate's
        submitUpdate was relayed; the contract reverts a commit that accepts a node without
        a submission).
        """
        started = time.perf_counter()
        new_digest = self.trail.blobs.put(decision.new_weights)
        with _on_chain(self.ledger, "committing the round"):
            self.ledger.commit_round(server_round, new_digest, list(decision.accepted), decision.scores_digest)
            active = len(self.ledger.active_nodes())
        self.seconds += time.perf_counter() - started
        records: list[TxRecord] = self.ledger.records[self._round_start:]
        self._write_transactions(server_round)
        self.trail.write_round({
            "round": server_round,
            "global_digest": digest_hex(self.global_digest),
            "cohort": cohort,
            "updates": [
                {"node": u.node, "digest": digest_hex(u.digest), "num_samples": u.num_samples, "refused": u.refused}
                for u in received
            ],
            "candidates": list(decision.nodes),
            "selected": list(decision.selected),
            "rejected": list(decision.rejected),
            "accepted": list(decision.accepted),
            "scores": [float(s) for s in decision.selection.scores],
            "scores_digest": digest_hex(decision.scores_digest),
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

    def _write_transactions(self, server_round: int) -> None:
        """Append the ledger's transactions since the last call to the trail."""
        new = self.ledger.records[self._written:]
        self._written = len(self.ledger.records)
        self.trail.append_transactions(
            {
                "round": server_round, "kind": r.kind, "node": self._senders.get(r.sender), "tx_hash": r.tx_hash,
                "sender": r.sender, "status": r.status, "error": r.error, "gas_used": r.gas_used,
                "block": r.block, "seconds": round(r.seconds, 6), "raw": r.raw.hex() if r.raw else None,
            }
            for r in new
        )


def open_session(config: ExperimentConfig, ledger: Ledger, run_dir: Path) -> ChainSession | NoChainSession:
    """The session for ``ledger``: a :class:`ChainSession` unless the run has no ledger."""
    return ChainSession(config, ledger, run_dir) if ledger.enabled else NoChainSession()
