"""The server's side of the on-chain registry in a federated run (used by the strategy).

:class:`ChainSession` deploys the registry for the run (bound to its run digest, see
:func:`make_run_facts`), enrolls the edge nodes' keys, relays the transactions the nodes
signed, opens and commits every round, and keeps the run's trail
(:mod:`bflsim.runfolder.trail`): every transaction, every round's outcome and every update
and global model in the blob store. :class:`NoChainSession` is the same interface for
Standard FL: nothing is registered. Neither knows Flower: the strategy hands them arrays and
the nodes' signed bytes.

Checks before a node's ``submitUpdate`` is relayed (DESIGN.md, "Why clients sign and the
server relays"; :func:`bflsim.ledger.identity.check_update_tx`): the server recomputes the
digest of the weights it received, and the signed transaction must be exactly the one the
node was asked for: signed by that node's key, for this chain, to this registry, with the
nonce and fees the node was given, the protocol's gas limit and no value, for this run and
this round, naming that digest and the sample count the node registered with its data. A
transaction that fails any check is never relayed: the update is refused as that node's
failure of the round (the trail keeps the reason and the signed bytes, so an audit can
re-check the refusal), and the round's commit cannot revert over it. Only updates whose
submission was mined successfully are aggregated.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from bflsim.aggregators import RoundDecision
from bflsim.config import ExperimentConfig, config_digest
from bflsim.hashing import digest_hex, run_digest, split_digest, weights_digest
from bflsim.ledger.base import REGISTRY_VERSION, Ledger, LedgerError, TxRecord
from bflsim.ledger.identity import TxContext, check_update_tx, node_identities, read_data_tx
from bflsim.runfolder.trail import Trail, read_chain, read_transactions
from bflsim.vectors import Weights

__all__ = [
    "DATA_DIGEST_KEY", "DATA_TIMESTAMP_KEY", "REGISTRY_VERSION", "ChainSession", "NoChainSession", "ReceivedUpdate",
    "data_sources_digest", "make_run_facts", "open_session",
]

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


def data_sources_digest(sources: Sequence[Mapping[str, str]]) -> str:
    """``0x`` + sha256 of the canonical JSON (sorted keys, no spaces) of a manifest's verified
    data files (``data.sources``: ``[{"path": ..., "sha256": ...}]``), or "" for none."""
    if not sources:
        return ""
    text = json.dumps([dict(s) for s in sources], sort_keys=True, separators=(",", ":"))
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


def make_run_facts(
    config: ExperimentConfig, *, run_id: str, git_commit: str | None, sources: Sequence[Mapping[str, str]],
    x_test: ArrayLike, y_test: ArrayLike, run_nonce: str | None = None,
) -> dict[str, str]:
    """A run's identifying facts, whose :func:`bflsim.hashing.run_digest` the registry records at
    deploy (the manifest and trail/chain.json keep them as ``run_facts``).

    ``run_nonce`` (default: 32 fresh random bytes) makes every run's digest unique, so a signed
    update of one run never verifies in another, even with the same seed, chain and keys.
    """
    return {
        "config": config_digest(config),
        "git_commit": git_commit or "",
        "data": data_sources_digest(sources),
        "test_split": digest_hex(split_digest(x_test, y_test)),
        "run_nonce": run_nonce or "0x" + secrets.token_bytes(32).hex(),
        "run_id": run_id,
    }


@dataclass
class ReceivedUpdate:
    """One node's training reply as the server sees it."""

    node: int
    weights: Weights
    num_samples: int
    raw_tx: bytes = b""
    train_loss: float | None = None
    refused: str | None = None  # why the update does not enter the aggregation
    refusal: str | None = None  # which check refused it (identity.REFUSAL_CHECKS, "non_finite", "reverted", ...)
    digest: bytes = b""  # the server's own digest of ``weights``
    relayed: bool = False  # its submitUpdate was sent to the chain

    def refuse(self, check: str, reason: str) -> None:
        """Mark the update refused by ``check`` (the first refusal stands)."""
        if self.refused is None:
            self.refused, self.refusal = reason, check


class NoChainSession:
    """Standard FL: no registry, no trail; every node stays eligible."""

    enabled = False
    registers_at_identify = False

    def setup(self) -> dict[str, Any] | None:
        return None

    def resume(self) -> None:
        return None

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        return {}

    def register_data(
        self, signed: dict[int, bytes], digests: dict[int, bytes], sizes: Mapping[int, int] | None = None,
        timestamps: Mapping[int, int] | None = None,
    ) -> dict[int, str]:
        return {}

    def active_nodes(self, nodes: list[int]) -> list[int]:
        return sorted(nodes)

    def open_round(self, server_round: int, global_weights: Weights, cohort: list[int]) -> dict[int, dict[str, Any]]:
        return {}

    def relay_updates(self, server_round: int, received: list[ReceivedUpdate]) -> None:
        return None

    def commit_round(
        self, server_round: int, cohort: list[int], received: list[ReceivedUpdate], decision: RoundDecision,
        evaluation_digest: bytes = bytes(32),
    ) -> dict[str, float]:
        return {}


@dataclass
class ChainSession:
    """Registry, keys and trail of one run on ``ledger`` (any :class:`Ledger` but NoLedger).

    ``run_facts`` (:func:`make_run_facts`) bind the registry to the run; without them (unit
    tests) the facts are the config digest, the folder name and a fresh nonce.
    """

    config: ExperimentConfig
    ledger: Ledger
    run_dir: Path
    run_facts: dict[str, str] | None = None
    trail: Trail = field(init=False)
    addresses: dict[int, str] = field(init=False)
    seconds: float = 0.0  # wall time spent in chain calls this round
    enabled = True
    registers_at_identify = False  # per-node mode: each node's registerData needs its own nonce

    def __post_init__(self) -> None:
        self.trail = Trail(self.run_dir)
        self.identities = {i.index: i for i in node_identities(self.config)}
        self.addresses = {i: identity.address for i, identity in self.identities.items()}
        self._senders = {address: i for i, address in self.addresses.items()}
        self._written = 0  # ledger records already in the trail
        if self.run_facts is None:
            self.run_facts = {"config": config_digest(self.config), "run_id": self.run_dir.name,
                              "run_nonce": "0x" + secrets.token_bytes(32).hex()}
        self.run_digest = run_digest(self.run_facts)
        self.registered_samples: dict[int, int] = {}  # node -> sample count registered on chain
        self._given: dict[int, TxContext] = {}  # node -> the context it was given this round

    # --- setup -----------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        """Deploy a fresh registry and enroll every node; returns the manifest's ``ledger`` entry."""
        with _on_chain(self.ledger, "deploying the registry and enrolling the nodes"):
            started = time.perf_counter()
            self.ledger.deploy(self.config.ledger.max_rejections, self.run_digest)
            enrolled = self._enroll()
            deploy = self.ledger.records[0]
            info = {
                "registry_version": REGISTRY_VERSION,
                "mode": self.config.ledger.mode,
                **enrolled,
                "backend": self.config.ledger.backend,
                "endpoint": self.ledger.endpoint,
                "chain_id": self.ledger.chain_id,
                "contract": self.ledger.address,
                "operator": self.ledger.operator,
                "aggregator": self.ledger.aggregator,
                "run_facts": dict(self.run_facts or {}),
                "run_digest": digest_hex(self.run_digest),
                "deploy_tx": deploy.tx_hash,
                "deploy_block": deploy.block,
                "max_rejections": self.config.ledger.max_rejections,
                "block_time": self.config.ledger.block_time,
                "nodes": {str(i): address for i, address in self.addresses.items()},
                "data_digest": "v2",  # features and labels (bflsim.hashing.DATA_DIGEST_VERSIONS)
                "distances": "v2",  # how Krum-family scores are computed (bflsim.aggregators.DISTANCE_VERSIONS)
            }
            self.trail.write_chain(info)
            self._write_transactions(0)
            self.seconds = time.perf_counter() - started
            return info

    def _enroll(self) -> dict[str, Any]:
        """Register the federation (per-node mode: fund and register every node's account);
        returns entries for trail/chain.json."""
        self.ledger.enroll(list(self.identities.values()))
        return {}

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
            for node, address in self.addresses.items():  # what every later update must claim
                registered = self.ledger.node_info(address).num_samples
                if registered:
                    self.registered_samples[node] = registered
            last = max((int(t["round"]) for t in transactions), default=0)
            if self.config.ledger.backend == "rpc" and self.ledger.round_info(last + 1).status != "none":
                raise LedgerError(f"round {last + 1} was opened on {self.ledger.endpoint} after the checkpoint; "
                                  "the registry cannot open it again, so the run cannot be resumed")

    def tx_contexts(self, nodes: list[int]) -> dict[int, TxContext]:
        """Each node's transaction context (to sign its next transaction), by node."""
        with _on_chain(self.ledger, "reading the nodes' nonces"):
            return self.ledger.tx_contexts({i: self.addresses[i] for i in nodes})

    def contexts(self, nodes: list[int]) -> dict[int, dict[str, Any]]:
        """:meth:`tx_contexts` as message configs."""
        return {i: ctx.to_config(prefix="") for i, ctx in self.tx_contexts(nodes).items()}

    def register_data(
        self, signed: dict[int, bytes], digests: dict[int, bytes], sizes: Mapping[int, int] | None = None,
        timestamps: Mapping[int, int] | None = None,
    ) -> dict[int, str]:
        """Check and relay the nodes' ``registerData`` transactions; returns {node: why it failed}.

        A transaction is relayed only if it is a registerData signed by the node, to this
        registry, for the digest the node reported and for ``sizes[node]`` samples (the size
        it gave when it said who it is). The sample count each node registered is read back
        from the chain: every later update must claim it.
        """
        with _on_chain(self.ledger, "relaying the data registrations"):
            started = time.perf_counter()
            failed = {}
            for node in sorted(signed):
                why = self._check_data_tx(node, signed[node], digests.get(node), (sizes or {}).get(node))
                if why:
                    failed[node] = why
            nodes = [i for i in sorted(signed) if i not in failed]
            records = self.ledger.send_raw_many([signed[i] for i in nodes], kind="register_data")
            for node, record in zip(nodes, records, strict=True):
                if record.status != 1:
                    failed[node] = f"registerData {record.tx_hash} failed: {record.error}"
                else:
                    self.registered_samples[node] = self.ledger.node_info(self.addresses[node]).num_samples
            self._write_transactions(0)
            self.trail.write_round({
                "round": 0, "data": {str(i): digest_hex(d) for i, d in sorted(digests.items())},
                "num_samples": {str(i): n for i, n in sorted(self.registered_samples.items())},
                "failed": {str(i): why for i, why in sorted(failed.items())},
                "refused_tx": {str(i): signed[i].hex() for i in sorted(failed) if i in signed and i not in nodes},
            })
            self.seconds += time.perf_counter() - started
            return failed

    def _check_data_tx(self, node: int, raw: bytes, digest: bytes | None, size: int | None) -> str | None:
        """Why node ``node``'s signed registerData must not be relayed, or None."""
        try:
            tx, signed_digest, _, num_samples = read_data_tx(raw)
        except ValueError as err:
            return f"not a signed registerData: {err}"
        if tx.sender != self.addresses[node]:
            return f"registerData signed by {tx.sender}, not by node {node}'s key {self.addresses[node]}"
        if tx.chain_id != self.ledger.chain_id or tx.to != self.ledger.address:
            return (f"registerData signed for chain {tx.chain_id} and {tx.to}, not for the registry "
                    f"{self.ledger.address} on chain {self.ledger.chain_id}")
        if digest is not None and signed_digest != digest:
            return f"registerData signs digest 0x{signed_digest.hex()}, the node reported 0x{digest.hex()}"
        if size is not None and num_samples != size:
            return f"registerData claims {num_samples} samples; the node holds {size}"
        return None

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
            with _on_chain(self.ledger, "reading the nodes' nonces"):
                self._given = self.ledger.tx_contexts({i: self.addresses[i] for i in cohort})
            configs = {i: ctx.to_config(prefix="") for i, ctx in self._given.items()}
            for node in cohort:
                digest, timestamp = self.ledger.data_digest(self.addresses[node])
                configs[node].update({DATA_DIGEST_KEY: digest, DATA_TIMESTAMP_KEY: int(timestamp)})
            self.seconds = time.perf_counter() - started
            return configs

    def relay_updates(self, server_round: int, received: list[ReceivedUpdate]) -> None:
        """Check each signed ``submitUpdate`` against the update received, store it, relay it.

        Sets ``digest`` (the server's own) on every update and stores its weights; sets
        ``refused`` (and ``refusal``, the check) on those that must not be aggregated: already
        refused by the strategy, failing a check (never relayed), or reverted on chain.
        """
        started = time.perf_counter()
        relay: list[ReceivedUpdate] = []
        for update in received:
            update.digest = weights_digest(update.weights)  # what the node must have signed
            self.trail.blobs.put(update.weights, update.digest)
            if update.refused is not None:
                continue
            refusal = self.check_update(server_round, update)
            if refusal is not None:
                update.refuse(*refusal)
            else:
                relay.append(update)
        with _on_chain(self.ledger, "relaying the updates"):
            records = self.ledger.send_raw_many([u.raw_tx for u in relay], kind="submit_update")
        for update, record in zip(relay, records, strict=True):
            update.relayed = record.block >= 0
            if record.status != 1:
                update.refuse("reverted", f"submitUpdate {record.tx_hash} failed on chain: {record.error}")
        self.seconds += time.perf_counter() - started

    def check_update(self, server_round: int, update: ReceivedUpdate) -> tuple[str, str] | None:
        """``(check, reason)`` if ``update``'s signed transaction must not be relayed."""
        ctx = self._given.get(update.node)
        if ctx is None:
            return "nonce", f"node {update.node} was given no transaction context for round {server_round}"
        registered = self.registered_samples.get(update.node)
        if registered is None:
            return "num_samples", f"node {update.node} has no data registered"
        refusal = check_update_tx(
            update.raw_tx, node_address=self.addresses[update.node], ctx=ctx, server_round=server_round,
            update_digest=update.digest, num_samples=registered,
        )
        if refusal is None and update.num_samples != registered:
            refusal = "num_samples", f"reported {update.num_samples} samples; the node registered {registered}"
        return refusal

    def commit_round(
        self, server_round: int, cohort: list[int], received: list[ReceivedUpdate], decision: RoundDecision,
        evaluation_digest: bytes = bytes(32),
    ) -> dict[str, float]:
        """Store the new global model, commit the round, write the trail; returns round metrics.

        Accepted on chain: the aggregated nodes the rule did not reject (every candidate's
        submitUpdate was mined successfully; the contract reverts a commit that accepts a node
        without a submission). ``evaluation_digest``: the new model's on the test split.
        """
        started = time.perf_counter()
        new_digest = self.trail.blobs.put(decision.new_weights)
        with _on_chain(self.ledger, "committing the round"):
            self.ledger.commit_round(server_round, new_digest, list(decision.accepted), decision.scores_digest,
                                     evaluation_digest, cohort=cohort)
            active = len(self.ledger.active_nodes())
        self.seconds += time.perf_counter() - started
        records: list[TxRecord] = self.ledger.records[self._round_start:]
        self._write_transactions(server_round)
        self.trail.write_round({
            "round": server_round,
            "global_digest": digest_hex(self.global_digest),
            "cohort": cohort,
            "updates": [self._trail_update(u) for u in received],
            **decision_record(decision, new_digest, evaluation_digest),
        })
        return self._round_metrics(records, active)

    def _round_metrics(self, records: Sequence[TxRecord], active: int) -> dict[str, float]:
        """A round's chain metrics from its transactions (metrics.csv)."""
        return {
            "gas_used": float(sum(r.gas_used for r in records)),
            "transactions": float(len(records)),
            "chain_latency_seconds": float(sum(r.seconds for r in records)),
            "ledger_seconds": self.seconds,
            "active_nodes": float(active),
        }

    def _trail_update(self, update: ReceivedUpdate) -> dict[str, Any]:
        """An update's line in trail/rounds.jsonl; one never relayed keeps its signed bytes and
        the context it was given (``TxContext.to_json``), so that an audit can re-check the
        refusal with :func:`bflsim.ledger.identity.check_update_tx`."""
        entry: dict[str, Any] = {
            "node": update.node, "digest": digest_hex(update.digest), "num_samples": update.num_samples,
            "refused": update.refused, "refusal": update.refusal, "relayed": update.relayed,
        }
        if not update.relayed:
            ctx = self._given.get(update.node)
            entry["tx"] = update.raw_tx.hex() if update.raw_tx else None
            entry["context"] = ctx.to_json() if ctx is not None else None
        return entry

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


def decision_record(decision: RoundDecision, new_digest: bytes, evaluation_digest: bytes) -> dict[str, Any]:
    """The aggregation's outcome as a round of trail/rounds.jsonl records it."""
    return {
        "candidates": list(decision.nodes),
        "selected": list(decision.selected),
        "rejected": list(decision.rejected),
        "accepted": list(decision.accepted),
        "scores": [float(s) for s in decision.selection.scores],
        "scores_digest": digest_hex(decision.scores_digest),
        "new_global_digest": digest_hex(new_digest),
        "evaluation_digest": digest_hex(evaluation_digest),
    }


def open_session(
    config: ExperimentConfig, ledger: Ledger, run_dir: Path, run_facts: dict[str, str] | None = None
) -> ChainSession | NoChainSession:
    """The session for ``ledger``: a :class:`ChainSession` (per-node mode) or a
    :class:`bflsim.ledger.batched.BatchedChainSession`, unless the run has no ledger."""
    if not ledger.enabled:
        return NoChainSession()
    if config.ledger.mode == "batched":
        from bflsim.ledger.batched import BatchedChainSession

        return BatchedChainSession(config, ledger, run_dir, run_facts)
    return ChainSession(config, ledger, run_dir, run_facts)
