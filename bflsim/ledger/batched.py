"""The server's side of the registry's batched mode (``ledger.mode = "batched"``, registry v3).

Nodes send no transactions. Each signs EIP-712 typed data instead
(:func:`bflsim.ledger.identity.sign_data_typed` before round 1,
:func:`~bflsim.ledger.identity.sign_update_typed` every round), and the aggregator commits
Merkle roots (:mod:`bflsim.ledger.merkle`): the federation's ``(index, address)`` leaves at
set-up, the verified data registrations before round 1, and per round the cohort
(``openBatch``) and the verified updates with whether each was accepted (``commitBatch``). Gas
per round does not depend on the cohort.

What the chain no longer does, this session does and the trail keeps for ``bflsim audit``:
every signature is checked before its leaf enters a tree (an update whose signature does not
recover to its node's key for the round, the digest of the weights received and the node's
registered sample count is refused, check ``"signature"``); the rejection counts and
revocations at ``ledger.max_rejections`` are kept here (revoked nodes leave the cohorts);
trail/rounds.jsonl holds every signature, the roots, and each leaf's inclusion proof, so a
node can show its update was (or was not) accepted against the root on chain
(``FederatedRegistry.proves``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bflsim.aggregators import RoundDecision
from bflsim.hashing import digest_hex
from bflsim.ledger.identity import TxContext, recover_data_typed, recover_update_typed
from bflsim.ledger.merkle import MerkleTree, cohort_leaf, data_leaf, node_leaf, update_leaf
from bflsim.ledger.session import (
    DATA_DIGEST_KEY,
    DATA_TIMESTAMP_KEY,
    ChainSession,
    ReceivedUpdate,
    _on_chain,
    decision_record,
)
from bflsim.runfolder.trail import read_chain, read_rounds, read_transactions
from bflsim.vectors import Weights

__all__ = ["BatchedChainSession", "node_tree", "rejections_after"]


def node_tree(addresses: Mapping[int, str]) -> MerkleTree:
    """The federation's tree: one ``(index, address)`` leaf per node, by index."""
    return MerkleTree(tuple(node_leaf(i, addresses[i]) for i in sorted(addresses)))


def rejections_after(rounds: list[dict[str, Any]], max_rejections: int) -> tuple[dict[int, int], dict[int, int]]:
    """``(rejections, revoked)`` after the trail's ``rounds``, by the registry's rule: every
    candidate not accepted gets one rejection; at ``max_rejections`` (0 = never) the node is
    revoked in that round (``revoked``: node -> round)."""
    rejections: dict[int, int] = {}
    revoked: dict[int, int] = {}
    for record in sorted(rounds, key=lambda r: int(r["round"])):
        if int(record["round"]) < 1:
            continue
        accepted = {int(i) for i in record.get("accepted", [])}
        for node in (int(i) for i in record.get("candidates", [])):
            if node in accepted:
                continue
            rejections[node] = rejections.get(node, 0) + 1
            if max_rejections and rejections[node] >= max_rejections and node not in revoked:
                revoked[node] = int(record["round"])
    return rejections, revoked


class BatchedChainSession(ChainSession):
    """A run's registry in batched mode: roots on chain, signatures and proofs in the trail."""

    registers_at_identify = True  # one context for every node: deployed first, signed with "who are you"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data: dict[int, tuple[bytes, int, bytes]] = {}  # node -> (digest, timestamp, signature)
        self.rejections: dict[int, int] = {}
        self.revoked: dict[int, int] = {}  # node -> the round it was revoked in

    # --- setup -----------------------------------------------------------------------

    def _enroll(self) -> dict[str, Any]:
        """The federation as one root: nobody is funded, no node sends a transaction."""
        tree = node_tree(self.addresses)
        self.ledger.register_node_root(tree.root, len(self.addresses))  # type: ignore[attr-defined]
        return {"nodes_root": digest_hex(tree.root)}

    def context(self) -> TxContext:
        """What every node signs under: chain, registry and run (no nonce or fees: nothing is sent)."""
        return TxContext(chain_id=self.ledger.chain_id, contract_address=str(self.ledger.address), nonce=0,
                         run_digest=self.run_digest)

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        ctx = self.context().to_config(prefix="")
        return {i: dict(ctx) for i in nodes}

    def register_data(
        self, signed: dict[int, bytes], digests: dict[int, bytes], sizes: Mapping[int, int] | None = None,
        timestamps: Mapping[int, int] | None = None,
    ) -> dict[int, str]:
        """Check every node's ``Data`` signature (its digest, timestamp and the size it gave
        when it said who it is) and register the root of those that verify."""
        started = time.perf_counter()
        ctx, failed = self.context(), {}
        for node in sorted(signed):
            digest, size = digests.get(node), (sizes or {}).get(node)
            timestamp = (timestamps or {}).get(node)
            if digest is None or size is None or timestamp is None:
                failed[node] = "the data registration lacks its digest, size or timestamp"
                continue
            signer = recover_data_typed(signed[node], ctx, node, digest, timestamp, size)
            if signer != self.addresses[node]:
                failed[node] = (f"the EIP-712 Data signature does not recover to node {node}'s key "
                                f"{self.addresses[node]} for digest 0x{digest.hex()}, timestamp {timestamp} and "
                                f"{size} samples (recovered {signer})")
                continue
            self.data[node] = (digest, timestamp, bytes(signed[node]))
            self.registered_samples[node] = size
        tree = self._data_tree()
        with _on_chain(self.ledger, "registering the data root"):
            self.ledger.register_data_root(tree.root, len(self.data))  # type: ignore[attr-defined]
        self._write_transactions(0)
        order = sorted(self.data)
        self.trail.write_round({
            "round": 0, "data": {str(i): digest_hex(d) for i, d in sorted(digests.items())},
            "num_samples": {str(i): n for i, n in sorted(self.registered_samples.items())},
            "failed": {str(i): why for i, why in sorted(failed.items())},
            "timestamps": {str(i): self.data[i][1] for i in order},
            "signatures": {str(i): self.data[i][2].hex() for i in order},
            "refused_signatures": {str(i): bytes(signed[i]).hex() for i in sorted(failed) if i in signed},
            "data_root": digest_hex(tree.root),
            "proofs": {str(i): [digest_hex(h) for h in tree.proof(k)] for k, i in enumerate(order)},
        })
        self.seconds += time.perf_counter() - started
        return failed

    def _data_tree(self) -> MerkleTree:
        return MerkleTree(tuple(data_leaf(i, d, t, self.registered_samples[i], sig)
                                for i, (d, t, sig) in sorted(self.data.items())))

    def resume(self) -> None:
        """Rebuild the chain (replay) and the state the chain does not hold: the data
        registrations and the rejection counts, from the trail (cut back to the checkpoint)."""
        from bflsim.ledger.replay import replay_transactions

        info = read_chain(self.run_dir)
        with _on_chain(self.ledger, "rebuilding the run's chain from its trail"):
            if self.config.ledger.backend in ("embedded", "anvil"):
                replay_transactions(self.ledger, read_transactions(self.run_dir))
            self.ledger.attach(str(info["contract"]))
        rounds = read_rounds(self.run_dir)
        for record in rounds:
            if int(record["round"]) == 0:
                for key, signature in record.get("signatures", {}).items():
                    node = int(key)
                    self.data[node] = (bytes.fromhex(record["data"][key].removeprefix("0x")),
                                       int(record["timestamps"][key]), bytes.fromhex(signature))
                    self.registered_samples[node] = int(record["num_samples"][key])
        self.rejections, self.revoked = rejections_after(rounds, self.config.ledger.max_rejections)

    # --- rounds ----------------------------------------------------------------------

    def active_nodes(self, nodes: list[int]) -> list[int]:
        return sorted(i for i in nodes if i not in self.revoked)

    def open_round(self, server_round: int, global_weights: Weights, cohort: list[int]) -> dict[int, dict[str, Any]]:
        started = time.perf_counter()
        self._round_start = len(self.ledger.records)
        self.global_digest = self.trail.blobs.put(global_weights)
        members = sorted(cohort)
        self._cohort_root = MerkleTree(tuple(cohort_leaf(i) for i in members)).root
        with _on_chain(self.ledger, "opening the round"):
            self.ledger.open_batch(server_round, self.global_digest, self._cohort_root, len(members))  # type: ignore[attr-defined]
        ctx = self.context()
        self._given = dict.fromkeys(cohort, ctx)
        configs = {}
        for node in cohort:
            digest, timestamp, _ = self.data.get(node, (bytes(32), 0, b""))
            configs[node] = {**ctx.to_config(prefix=""), DATA_DIGEST_KEY: digest, DATA_TIMESTAMP_KEY: timestamp}
        self.seconds = time.perf_counter() - started
        return configs

    def relay_updates(self, server_round: int, received: list[ReceivedUpdate]) -> None:
        """Check each update's signature against the weights received; nothing is sent."""
        from bflsim.hashing import weights_digest

        started = time.perf_counter()
        for update in received:
            update.digest = weights_digest(update.weights)
            self.trail.blobs.put(update.weights, update.digest)
            if update.refused is None:
                refusal = self.check_update(server_round, update)
                if refusal is not None:
                    update.refuse(*refusal)
        self.seconds += time.perf_counter() - started

    def check_update(self, server_round: int, update: ReceivedUpdate) -> tuple[str, str] | None:
        registered = self.registered_samples.get(update.node)
        if registered is None:
            return "num_samples", f"node {update.node} has no data registered"
        if len(update.raw_tx) != 65:
            return "malformed", f"not a 65-byte EIP-712 signature ({len(update.raw_tx)} bytes)"
        signer = recover_update_typed(update.raw_tx, self.context(), update.node, server_round, update.digest,
                                      registered)
        if signer != self.addresses[update.node]:
            return "signature", (f"the EIP-712 Update signature does not recover to node {update.node}'s key for "
                                 f"round {server_round}, the digest of the weights received "
                                 f"0x{update.digest.hex()} and its {registered} registered samples")
        if update.num_samples != registered:
            return "num_samples", f"reported {update.num_samples} samples; the node registered {registered}"
        return None

    def commit_round(
        self, server_round: int, cohort: list[int], received: list[ReceivedUpdate], decision: RoundDecision,
        evaluation_digest: bytes = bytes(32),
    ) -> dict[str, float]:
        """Commit the root of the verified updates (each with whether it was accepted), count
        the rejections, write the trail with every leaf's proof; returns round metrics."""
        started = time.perf_counter()
        new_digest = self.trail.blobs.put(decision.new_weights)
        accepted = {int(i) for i in decision.accepted}
        leaves = [u for u in sorted(received, key=lambda u: u.node) if u.refused is None]
        tree = MerkleTree(tuple(
            update_leaf(u.node, u.digest, self.registered_samples[u.node], u.raw_tx, u.node in accepted)
            for u in leaves
        ))
        with _on_chain(self.ledger, "committing the round"):
            self.ledger.commit_batch(  # type: ignore[attr-defined]
                server_round, new_digest, tree.root, len(leaves), len(accepted & {u.node for u in leaves}),
                decision.scores_digest, evaluation_digest,
            )
        for node in (int(n) for n in decision.nodes):
            if node not in accepted:
                self.rejections[node] = self.rejections.get(node, 0) + 1
                limit = self.config.ledger.max_rejections
                if limit and self.rejections[node] >= limit and node not in self.revoked:
                    self.revoked[node] = server_round
        self.seconds += time.perf_counter() - started
        records = self.ledger.records[self._round_start:]
        self._write_transactions(server_round)
        proofs = {u.node: tree.proof(k) for k, u in enumerate(leaves)}
        self.trail.write_round({
            "round": server_round,
            "global_digest": digest_hex(self.global_digest),
            "cohort": cohort,
            "cohort_root": digest_hex(self._cohort_root),
            "updates": [self._batched_update(u, proofs.get(u.node)) for u in received],
            **decision_record(decision, new_digest, evaluation_digest),
            "updates_root": digest_hex(tree.root),
            "revoked": sorted(n for n, r in self.revoked.items() if r == server_round),
        })
        return self._round_metrics(records, len(self.addresses) - len(self.revoked))

    def _batched_update(self, update: ReceivedUpdate, proof: list[bytes] | None) -> dict[str, Any]:
        """An update's line in trail/rounds.jsonl: its signature always; its leaf's proof when
        it entered the round's tree."""
        entry: dict[str, Any] = {
            "node": update.node, "digest": digest_hex(update.digest), "num_samples": update.num_samples,
            "refused": update.refused, "refusal": update.refusal, "signature": update.raw_tx.hex(),
        }
        if proof is not None:
            entry["proof"] = [digest_hex(h) for h in proof]
        return entry
