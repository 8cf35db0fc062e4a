"""``bflsim audit <run-folder>``: check a ledger-backed run against its chain, end to end.

The chain comes first. A run on the embedded chain or on an anvil started for it leaves no
node behind, so the audit rebuilds that chain: it replays every signed transaction of
``trail/transactions.jsonl`` in order on a fresh chain of the same kind (py-evm, or anvil
with the run's chain id), and requires each to hash and end (success or revert) as it did in
the run; the registry lands at the recorded address only if the operator's history is intact,
and every node's transaction is accepted only with that node's signature. A run on another
JSON-RPC endpoint is read there (``--rpc-url`` overrides the recorded endpoint).

Then, from the chain's events alone plus the run folder:

- the registry: nodes registered at their indices with the addresses derived from the run's
  key seed, as the manifest and ``trail/chain.json`` say; each node's registered data digest
  recomputed from the dataset and the run's partition (when the data is at hand);
- every round: the opened global digest is the previous round's committed one, and its blob
  hashes to it; every submitted update was signed by a registered cohort member, and every
  update the server aggregated has its blob, digest and sample count on chain; the round's
  aggregation, re-run from those blobs with the manifest's rule, reproduces the committed
  global digest, the accepted nodes and the digest of the scores;
- the final model file hashes to the last committed global digest.

A verdict line per round; any mismatch makes the audit fail (exit status 1).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.aggregators import AggregatorError, decide_round
from bflsim.config import ExperimentConfig
from bflsim.data import DataError, resolve_data_dir
from bflsim.edge_node import node_data
from bflsim.hashing import data_digest, digest_hex, weights_digest
from bflsim.ledger.base import ChainEvent, LedgerError, from_bitmap
from bflsim.ledger.factory import open_recorded_chain
from bflsim.ledger.identity import node_identities
from bflsim.runfolder import (
    BLOBS,
    FINAL_MODEL,
    BlobError,
    BlobStore,
    Run,
    read_chain,
    read_rounds,
    read_run,
    read_transactions,
)

__all__ = ["AuditReport", "audit_run"]


class AuditError(RuntimeError):
    """The run folder cannot be audited at all (not ledger-backed, files missing)."""


@dataclass
class RoundVerdict:
    server_round: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        head = "round setup" if self.server_round == 0 else f"round {self.server_round:>3}"
        if self.ok:
            return f"{head}: OK" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return f"{head}: MISMATCH: " + "; ".join(self.problems)


@dataclass
class AuditReport:
    run_dir: Path
    chain: str
    rounds: list[RoundVerdict] = field(default_factory=list)
    final: RoundVerdict = field(default_factory=lambda: RoundVerdict(-1))

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rounds) and self.final.ok

    def lines(self) -> list[str]:
        out = [f"audit of {self.run_dir} on {self.chain}"]
        out += [r.line() for r in self.rounds]
        out.append("final model: OK" if self.final.ok else "final model: MISMATCH: " + "; ".join(self.final.problems))
        bad = sum(not r.ok for r in self.rounds) + (not self.final.ok)
        out.append("verdict: PASS" if self.ok else f"verdict: FAIL ({bad} mismatching)")
        return out


def audit_run(
    run_dir: str | Path, *, rpc_url: str | None = None, data_dir: str | Path | None = None, check_data: bool = True
) -> AuditReport:
    """Audit the run folder ``run_dir`` (see the module docstring).

    With ``check_data`` the nodes' registered data digests are also recomputed from the
    dataset (``data_dir``, else ``$BFLSIM_DATA_DIR``); when it cannot be loaded, the setup
    verdict says so without failing.
    """
    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
    except FileNotFoundError as err:
        raise AuditError(str(err)) from err
    manifest = run.manifest
    try:
        chain_info = read_chain(run_dir)
        transactions = read_transactions(run_dir)
        trail_rounds = {r["round"]: r for r in read_rounds(run_dir)}
    except FileNotFoundError as err:
        raise AuditError(f"{err} (runs with ledger.backend = 'none' have no trail)") from err
    config = run.config

    setup = RoundVerdict(0)
    if manifest.get("ledger") != chain_info:
        setup.problems.append("the manifest's ledger entry differs from trail/chain.json")
    addresses = {i.index: i.address for i in node_identities(config)}  # the run's keys, from its seed
    with open_recorded_chain(chain_info, rpc_url) as (ledger, fresh):
        if fresh:  # a new chain of the run's kind: rebuild the run's chain on it
            _replay(ledger, chain_info, transactions, setup)
            fresh_chain = ("a fresh embedded py-evm chain" if chain_info.get("backend") == "embedded"
                           else f"a fresh anvil (chain {chain_info['chain_id']})")
            where = f"a replay of {len(transactions)} transactions on {fresh_chain}"
        else:
            where = f"{ledger.endpoint} (chain {chain_info['chain_id']}, registry {chain_info['contract']})"
        report = AuditReport(run_dir, where)
        events = _by_kind(ledger.events())
        report.rounds.append(setup)
        _check_registry(addresses, chain_info, events, trail_rounds.get(0), setup)
        if check_data:
            _check_data(config, addresses, events, data_dir, chain_info.get("data_digest", "v1"), setup)
        store = BlobStore(run_dir / BLOBS)
        committed: dict[int, bytes] = {}
        index_of = {address: index for index, address in addresses.items()}
        for server_round in sorted(set(events["RoundOpened"]) | {r for r in trail_rounds if r > 0}):
            verdict = RoundVerdict(server_round)
            _check_round(config, index_of, server_round, events, trail_rounds.get(server_round), store, committed,
                         verdict)
            report.rounds.append(verdict)
        _check_final(run, committed, report.final)
    return report


# --- the chain ---------------------------------------------------------------------------


def _replay(ledger: Any, info: dict[str, Any], transactions: list[dict[str, Any]], verdict: RoundVerdict) -> None:
    """Send every recorded signed transaction again; each must hash and end as recorded."""
    w3 = ledger.w3
    if ledger.chain_id != int(info["chain_id"]):
        verdict.problems.append(f"the replay chain has id {ledger.chain_id}, the run's had {info['chain_id']}")
    mismatches = []
    for position, tx in enumerate(transactions):
        if not tx.get("raw"):
            raise AuditError(
                f"transaction {tx['tx_hash']} ({tx['kind']}) was sent without keeping its signed bytes; "
                "audit this run against its live endpoint with --rpc-url"
            )
        raw = bytes.fromhex(tx["raw"])
        try:
            tx_hash = "0x" + bytes(w3.eth.send_raw_transaction(raw)).hex()
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        except Exception as err:  # noqa: BLE001 - a refused replay is the finding
            mismatches.append(f"transaction {position} ({tx['kind']}, round {tx['round']}) refused on replay: "
                              f"{str(err)[:160]}")
            continue
        if tx_hash != tx["tx_hash"]:
            mismatches.append(f"transaction {position} ({tx['kind']}) hashes to {tx_hash}, recorded {tx['tx_hash']}")
        if int(receipt["status"]) != int(tx["status"]):
            mismatches.append(f"transaction {tx['tx_hash']} ({tx['kind']}) ended with status {receipt['status']} "
                              f"on replay, {tx['status']} in the run")
    verdict.problems += mismatches[:5] + ([f"... and {len(mismatches) - 5} more"] if len(mismatches) > 5 else [])
    try:
        ledger.attach(str(info["contract"]))
    except LedgerError as err:
        raise AuditError(f"after the replay, no registry at {info['contract']}: {err}") from err


def _by_kind(events: list[ChainEvent]) -> dict[str, Any]:
    """Events grouped: per-round kinds keyed by round, the rest as lists."""
    grouped: dict[str, Any] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event.name in ("RoundOpened", "RoundCommitted", "UpdateSubmitted", "NodeRejected"):
            grouped[event.name][int(event.args["round"])].append(event.args)
        else:
            grouped[event.name].setdefault("all", []).append(event.args)
    return grouped


# --- checks ------------------------------------------------------------------------------


def _check_registry(
    derived: dict[int, str], info: dict[str, Any], events: dict[str, Any], trail0: dict | None, verdict: RoundVerdict
) -> None:
    registered = {int(e["index"]): e["node"] for e in events["NodeRegistered"].get("all", [])}
    recorded = {int(k): v for k, v in info.get("nodes", {}).items()}
    if registered != derived:
        verdict.problems.append(
            f"registered nodes {_short(registered)} are not the keys derived from the run's seed {_short(derived)}"
        )
    if recorded != registered:
        verdict.problems.append("trail/chain.json's node addresses differ from the registry's")
    data = {e["node"]: digest_hex(e["digest"]) for e in events["DataRegistered"].get("all", [])}
    claimed = (trail0 or {}).get("data", {})
    for index, address in sorted(registered.items()):
        if str(index) in claimed and data.get(address) != claimed[str(index)]:
            verdict.problems.append(f"node {index}'s data digest on chain {data.get(address)} is not the trail's "
                                    f"{claimed[str(index)]}")
    verdict.notes.append(f"{len(registered)} nodes, {len(data)} data digests registered")


def _check_data(
    config: ExperimentConfig, addresses: dict[int, str], events: dict[str, Any], data_dir: str | Path | None,
    version: str, verdict: RoundVerdict,
) -> None:
    """Recompute every node's registered data digest (of ``version``: runs before v2 hashed
    the features only) from the dataset and its partition."""
    try:
        path = str(resolve_data_dir(data_dir)) if config.data.dataset != "synthetic" else None
        held = {index: node_data(config, index, 0, path) for index in addresses}
    except (DataError, FileNotFoundError, ValueError) as err:
        verdict.notes.append(f"data digests not recomputed: {err}")
        return
    index_of = {address: index for index, address in addresses.items()}
    latest = {index_of.get(e["node"]): e for e in events["DataRegistered"].get("all", [])}
    for node, (x, y) in held.items():
        event = latest.get(node)
        if event is None:
            continue
        labels = y if version != "v1" else None
        if data_digest(x, labels, int(event["timestamp"]), node, version=version) != bytes(event["digest"]):
            verdict.problems.append(f"node {node}'s registered data digest does not match its partition of "
                                    f"{config.data.dataset}")
    verdict.notes.append(f"data digests ({version}) recomputed from {config.data.dataset}")


def _check_round(
    config: ExperimentConfig,
    index_of: dict[str, int],
    server_round: int,
    events: dict[str, Any],
    trail: dict | None,
    store: BlobStore,
    committed: dict[int, bytes],
    verdict: RoundVerdict,
) -> None:
    problems = verdict.problems
    opened = events["RoundOpened"].get(server_round, [])
    closed = events["RoundCommitted"].get(server_round, [])
    if not opened:
        problems.append("no RoundOpened event on chain")
        return
    if trail is None:
        problems.append("opened on chain but missing from trail/rounds.jsonl" if closed else
                        "opened but never committed (the run stopped in this round)")
        return
    global_digest = bytes(opened[0]["globalDigest"])
    if digest_hex(global_digest) != trail["global_digest"]:
        problems.append(f"opened with global digest {digest_hex(global_digest)}, trail says {trail['global_digest']}")
    if server_round - 1 in committed and committed[server_round - 1] != global_digest:
        problems.append(f"opened from {digest_hex(global_digest)}, not round {server_round - 1}'s committed "
                        f"{digest_hex(committed[server_round - 1])}")
    global_weights = _blob(store, global_digest, "global model", problems)
    cohort = list(from_bitmap(int(opened[0]["cohort"])))
    if cohort != trail["cohort"]:
        problems.append(f"cohort on chain {cohort}, trail says {trail['cohort']}")
    if not closed:
        problems.append("never committed on chain")
        return

    submitted = {}
    for event in events["UpdateSubmitted"].get(server_round, []):
        node = index_of.get(event["node"])
        if node is None or node not in cohort:
            problems.append(f"update submitted by {event['node']}, not a member of the cohort {cohort}")
            continue
        submitted[node] = (bytes(event["updateDigest"]), int(event["numSamples"]))

    candidates = list(trail["candidates"])
    rows, num_samples = [], []
    for node in candidates:
        if node not in submitted:
            problems.append(f"node {node} was aggregated without an update submitted on chain")
            continue
        digest, samples = submitted[node]
        arrays = _blob(store, digest, f"node {node}'s update", problems)
        if arrays is not None:
            rows.append(arrays)
            num_samples.append(samples)
    if problems or not rows or global_weights is None:
        return
    try:
        decision = decide_round(config.rule, candidates, rows, global_weights, num_samples,
                                config.aggregator.reject_factor)
    except AggregatorError as err:
        problems.append(f"the round's updates cannot be aggregated with {config.rule.label}: {err}")
        return
    commit = closed[0]
    new_digest = weights_digest(decision.new_weights)
    if new_digest != bytes(commit["newGlobalDigest"]):
        problems.append(f"re-aggregation ({config.aggregator.name}) gives {digest_hex(new_digest)}, committed "
                        f"{digest_hex(bytes(commit['newGlobalDigest']))}")
    accepted = list(from_bitmap(int(commit["accepted"])))
    if accepted != list(decision.accepted):
        problems.append(f"accepted on chain {accepted}, re-aggregation accepts {list(decision.accepted)}")
    if decision.scores_digest != bytes(commit["scoresDigest"]):
        problems.append("the scores digest on chain does not match the re-run's selection and scores")
    _blob(store, bytes(commit["newGlobalDigest"]), "committed global model", problems)
    committed[server_round] = bytes(commit["newGlobalDigest"])
    refused = [u for u in trail["updates"] if u.get("refused")]
    verdict.notes.append(f"{len(candidates)} updates, {config.aggregator.name} selected {list(decision.selected)}, "
                         f"accepted {accepted}"
                         + (f", {len(refused)} refused by the server" if refused else ""))


def _check_final(run: Run, committed: dict[int, bytes], verdict: RoundVerdict) -> None:
    if run.status != "complete":
        verdict.notes.append(f"run {run.status}: no final model expected")
        return
    if not committed:
        verdict.problems.append("the run is complete but no round was committed")
        return
    path = run.path / FINAL_MODEL
    if not path.is_file():
        verdict.problems.append(f"{path} is missing")
        return
    final = weights_digest(run.final_model())
    last = committed[max(committed)]
    if final != last:
        verdict.problems.append(f"{FINAL_MODEL} hashes to {digest_hex(final)}, the last committed global "
                                f"digest is {digest_hex(last)}")
    if run.manifest.get("final_model_digest") not in (None, digest_hex(last)):
        verdict.problems.append("the manifest's final_model_digest is not the last committed digest")


def _blob(store: BlobStore, digest: bytes, what: str, problems: list[str]) -> list[np.ndarray] | None:
    try:
        return store.get(digest)
    except BlobError as err:
        problems.append(f"{what}: {err}")
        return None


def _short(mapping: dict[int, str]) -> str:
    return "{" + ", ".join(f"{k}: {v[:8]}" for k, v in sorted(mapping.items())) + "}"
