"""``bflsim audit <run-folder>``: check a ledger-backed run against its chain, end to end.

The chain comes first. A run on the embedded chain or on an anvil started for it leaves no
node behind, so the audit rebuilds that chain: it replays every signed transaction of
``trail/transactions.jsonl`` in order on a fresh chain of the same kind (py-evm, or anvil
with the run's chain id), and requires each to hash and end (success or revert) as it did in
the run; the registry lands at the recorded address only if the operator's history is intact,
and every node's transaction is accepted only with that node's signature. A replay that
diverges is blamed on the round the transaction belongs to. A run on another JSON-RPC
endpoint is read there (``--rpc-url`` overrides the recorded endpoint).

Then, from the chain's events plus the run folder and the data:

- **run**: the status and the rounds committed against ``federation.rounds``; a complete
  run committed every configured round, and a run that ended otherwise says where it
  stopped (the round opened and never committed is shown);
- **configuration** (registry v2): ``run_digest(manifest["run_facts"])`` is the digest the
  registry recorded at set-up (``RunConfigured``), the facts' config digest is the
  manifest's configuration's, and their test-split digest is the recomputed split's. A v1
  registry recorded none of this: the verdict says so instead of passing it;
- **setup**: nodes registered at their indices with the addresses the run's keys give
  (``ledger.key_source``: derived from the seed, from the secret when it is set here, read
  from the keystore when it is readable here; otherwise only the trail's addresses), each
  node's registered data digest (and sample count, v2) recomputed from its partition;
- **every round**: opened from the previous commit (round 1 from ``initial_weights`` of
  ``train.seed``); the cohort is ``federation.sample_cohort(round, eligible)`` with eligible
  the nodes still active on chain and not excluded (an exclusion for a failed integrity
  check is re-checked against the data); every update submitted on chain was either a
  candidate of the aggregation or refused for a reason its stored signed transaction, blob
  and partition confirm (censoring or framing a node fails); every candidate's sample count
  is its partition's size; updates of attackers whose attack needs no training are
  re-derived from the attack's seed and parameters; the aggregation, re-run from the blobs
  with the manifest's rule, reproduces the committed global digest, the accepted nodes and
  the digest of the scores;
- **evaluation**: every committed global model (``--rounds`` to sample) is scored again on
  the recomputed test split, reproducing the accuracy, F1 and FPR rows of metrics.csv and the
  confusion matrix of confusion.csv (and the committed evaluation digest, v2);
- **final model**: ``final_model.npz``, when present (it must be for a complete run),
  hashes to the last committed global digest.

Exit status (:attr:`AuditReport.exit_code`): 0 pass, 1 a mismatch, 2 a check could not be
made (data not found, a refusal whose transaction was not stored); a check skipped on request
(``skip_data``, ``rounds="none"``) is named in the verdict. The verdict also states the run's
status and the audit's trust level (:func:`trust_statement`): what a PASS proves depends on
who controls the chain and who can sign as the nodes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.aggregators import AggregatorError, decide_round
from bflsim.config import ExperimentConfig, config_digest
from bflsim.data import DataError, PreparedData, resolve_data_dir
from bflsim.edge_node import load_data, node_data, node_partitions, poison
from bflsim.hashing import (
    data_digest,
    digest_hex,
    evaluation_digest,
    run_digest,
    split_digest,
    weights_digest,
)
from bflsim.ledger.base import ChainEvent, LedgerError, from_bitmap
from bflsim.ledger.factory import open_recorded_chain
from bflsim.ledger.identity import (
    UPDATE_GAS_LIMIT,
    TxContext,
    expected_addresses,
    read_data_tx,
    read_tx,
    read_update_tx,
)
from bflsim.ledger.session import data_sources_digest
from bflsim.metrics import score_probabilities
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

__all__ = ["AuditError", "AuditReport", "audit_run", "parse_rounds", "trust_statement"]

EVALUATED_METRICS = ("accuracy", "f1_macro", "fpr")
V1_REGISTRY = "not recorded on chain (v1 registry)"


class AuditError(RuntimeError):
    """The run folder cannot be audited at all (not ledger-backed, files missing)."""


@dataclass
class RoundVerdict:
    """One section of the audit: mismatches, checks it could not make, and notes."""

    server_round: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    title: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        if self.title:
            return self.title
        return "round setup" if self.server_round == 0 else f"round {self.server_round:>3}"

    def line(self) -> str:
        if self.problems:
            return f"{self.head}: MISMATCH: " + "; ".join(self.problems)
        if self.unchecked:
            return f"{self.head}: NOT CHECKED: " + "; ".join(self.unchecked)
        return f"{self.head}: OK" + (f" ({'; '.join(self.notes)})" if self.notes else "")


@dataclass
class AuditReport:
    """The audit's findings; :meth:`lines` is what ``bflsim audit`` prints."""

    run_dir: Path
    chain: str
    status: str = "unknown"
    rounds_configured: int = 0
    rounds_committed: list[int] = field(default_factory=list)
    round_in_progress: int | None = None
    round_in_progress_on_chain: bool = True  # False: known from metrics.csv only
    registry_version: int = 1
    trust: list[str] = field(default_factory=list)
    not_on_chain: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    run: RoundVerdict = field(default_factory=lambda: RoundVerdict(-3, title="run"))
    configuration: RoundVerdict = field(default_factory=lambda: RoundVerdict(-2, title="configuration"))
    rounds: list[RoundVerdict] = field(default_factory=list)
    evaluation: RoundVerdict = field(default_factory=lambda: RoundVerdict(-4, title="evaluation"))
    final: RoundVerdict = field(default_factory=lambda: RoundVerdict(-1, title="final model"))

    @property
    def sections(self) -> list[RoundVerdict]:
        return [self.run, self.configuration, *self.rounds, self.evaluation, self.final]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 mismatch, 2 a check could not be made."""
        if any(s.problems for s in self.sections):
            return 1
        return 2 if any(s.unchecked for s in self.sections) else 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def run_summary(self) -> str:
        """``run complete, 3 of 3 rounds committed`` / ``run interrupted after round 2 of 4; ...``."""
        last = max(self.rounds_committed, default=0)
        of = f"{len(self.rounds_committed)} of {self.rounds_configured} rounds committed"
        if self.status == "complete":
            text = f"run complete, {of}"
        elif self.status == "running":
            text = f"run still marked running (no end recorded: live, or killed), {of}"
        else:
            text = f"run {self.status} after round {last} of {self.rounds_configured}"
        if self.round_in_progress is not None:
            how = "opened" if self.round_in_progress_on_chain else "started (rows in metrics.csv, nothing on chain)"
            text += f"; round {self.round_in_progress} {how}, never committed"
        return text

    def verdict(self) -> str:
        """The last line: PASS / FAIL / NOT CHECKED, always with the run's state and limits."""
        qualifiers = [self.run_summary()]
        if self.not_on_chain:
            qualifiers.append(f"{V1_REGISTRY}: {', '.join(self.not_on_chain)}")
        if self.skipped:
            qualifiers.append(f"skipped: {', '.join(self.skipped)}")
        qualifiers.append(f"trust: {self.trust_level()}")
        code = self.exit_code
        if code == 1:
            bad = [s.head.strip() for s in self.sections if s.problems]
            return f"verdict: FAIL ({len(bad)} mismatching: {', '.join(bad)}; {'; '.join(qualifiers)})"
        if code == 2:
            missing = [s.head.strip() for s in self.sections if s.unchecked]
            return f"verdict: NOT CHECKED ({', '.join(missing)} could not be checked; {'; '.join(qualifiers)})"
        return f"verdict: PASS ({'; '.join(qualifiers)})"

    def trust_level(self) -> str:
        return self.trust[0] if self.trust else "unknown"

    def lines(self) -> list[str]:
        out = [f"audit of {self.run_dir} on {self.chain}"]
        out += [f"trust: {line}" for line in self.trust]
        out += [s.line() for s in self.sections]
        out.append(self.verdict())
        return out


def parse_rounds(spec: str | None, committed: Sequence[int]) -> list[int] | None:
    """Which committed rounds to re-evaluate: ``None``/``"all"`` every one (and round 0, the
    initial model); ``"none"`` none; ``"1,5,last"`` those; ``"sample:N"`` N rounds spread
    evenly from the first to the last. Returns None for all."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    spec = spec.strip()
    if spec == "none":
        return []
    last = max(committed, default=0)
    if spec.startswith("sample:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError as err:
            raise ValueError(f"--rounds sample:N needs an integer N; got {spec!r}") from err
        if count < 1:
            raise ValueError(f"--rounds sample:N needs N >= 1; got {count}")
        picks = np.linspace(0, len(committed) - 1, num=min(count, len(committed))).round().astype(int)
        return sorted({sorted(committed)[i] for i in picks}) if committed else []
    chosen = set()
    for part in spec.split(","):
        part = part.strip()
        if part == "last":
            chosen.add(last)
        elif part == "first":
            chosen.add(min(committed, default=0))
        elif part.isdigit():
            chosen.add(int(part))
        else:
            raise ValueError(f"--rounds takes 'all', 'none', 'sample:N' or a list of round numbers, "
                             f"'first' and 'last' (e.g. '1,5,last'); got {part!r}")
    return sorted(chosen)


def trust_statement(backend: str, fresh: bool, key_source: str, addresses_how: str | None) -> list[str]:
    """What an audit PASS proves for this chain and key mode (first line: the short level).

    ``addresses_how``: how the audit established the nodes' addresses, or None when it could
    not (a secret or keystore not available here).
    """
    if fresh:
        chain = (f"the chain is a replay of the operator's own recorded transactions ({backend}): no third party "
                 "witnessed it, so whoever holds every key can regenerate a whole history that replays cleanly")
    else:
        chain = (f"the chain was read live ({backend}): its history is what that node serves; on a chain others "
                 "run and keep, rounds are write-once and timestamped and cannot be rewritten afterwards")
    if key_source == "seed":
        keys = ("node keys derive from the key seed written in the manifest: anyone holding this folder can sign as "
                "every node, so signatures do not show who trained")
    elif addresses_how is None:
        keys = (f"node keys ({key_source}) are not derivable from the folder, but could not be checked here: the "
                "registry's addresses were compared with the trail only, so a re-keyed forgery would pass; audit "
                "with the secret or keystore to close this")
    else:
        keys = (f"node keys ({key_source}) are not derivable from the folder and the registered addresses were "
                f"checked against {addresses_how}: only holders of those keys could have signed the updates")
    if key_source == "seed" and fresh:
        level = "self-consistency only (replayed chain, keys derivable from the manifest: a forged folder can pass)"
    elif key_source == "seed":
        level = "a chain kept by others, but keys derivable from the manifest (anyone could have signed)"
    elif addresses_how is None:
        level = ("self-consistency only (node keys not checked here)" if fresh else
                 "a chain kept by others; node keys not checked here")
    elif fresh:
        level = "node signatures by key holders, on a chain the operator replays (the key holder can still forge)"
    else:
        level = "node signatures by key holders, on a chain kept by others"
    return [level, chain, keys]


# --- the audit -----------------------------------------------------------------------------


@dataclass
class _Context:
    """What every check reads: the run, its config, the chain's events, the data if held."""

    run: Run
    config: ExperimentConfig
    chain_info: dict[str, Any]
    transactions: list[dict[str, Any]]
    trail_rounds: dict[int, dict[str, Any]]
    events: dict[str, Any]
    addresses: dict[int, str]
    store: BlobStore
    data: PreparedData | None = None
    data_path: str | None = None
    data_missing: str | None = None  # why the data could not be loaded (None: loaded or skipped)
    skip_data: bool = False

    @property
    def index_of(self) -> dict[str, int]:
        return {address: index for index, address in self.addresses.items()}

    def data_unchecked(self, verdict: RoundVerdict, what: str) -> bool:
        """True when the data is not at hand; says so in ``verdict`` unless skipped on request."""
        if self.data is not None:
            return False
        if not self.skip_data:
            verdict.unchecked.append(f"{what}: {self.data_missing}")
        return True


def audit_run(
    run_dir: str | Path,
    *,
    rpc_url: str | None = None,
    data_dir: str | Path | None = None,
    check_data: bool = True,
    rounds: str | None = None,
) -> AuditReport:
    """Audit the run folder ``run_dir`` (see the module docstring).

    ``data_dir``: where the dataset is (default: as the run recorded it, else
    ``$BFLSIM_DATA_DIR``, else ./data). ``check_data=False`` skips every check that needs
    the data, and the verdict says so. ``rounds``: which rounds to re-evaluate
    (:func:`parse_rounds`).
    """
    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
        config = run.config
    except FileNotFoundError as err:
        raise AuditError(str(err)) from err
    except (ValueError, KeyError) as err:
        raise AuditError(f"{run_dir / 'manifest.json'}: its config cannot be read: {err}") from err
    try:
        chain_info = read_chain(run_dir)
        transactions = read_transactions(run_dir)
        trail_rounds = {r["round"]: r for r in read_rounds(run_dir)}
    except FileNotFoundError as err:
        raise AuditError(f"{err} (runs with ledger.backend = 'none' have no trail)") from err

    addresses, addresses_how = expected_addresses(config)
    with open_recorded_chain(chain_info, rpc_url) as (ledger, fresh):
        replayed: dict[int, list[str]] = defaultdict(list)
        if fresh:  # a new chain of the run's kind: rebuild the run's chain on it
            _replay(ledger, chain_info, transactions, replayed)
            fresh_chain = ("a fresh embedded py-evm chain" if chain_info.get("backend") == "embedded"
                           else f"a fresh anvil (chain {chain_info['chain_id']})")
            where = f"a replay of {len(transactions)} transactions on {fresh_chain}"
        else:
            where = f"{ledger.endpoint} (chain {chain_info['chain_id']}, registry {chain_info['contract']})"
        events = _by_kind(ledger.events())
    report = AuditReport(run_dir, where)
    report.trust = trust_statement(str(chain_info.get("backend", config.ledger.backend)), fresh,
                                   config.ledger.key_source, addresses_how if addresses is not None else None)
    registered = {int(e["index"]): e["node"] for e in events["NodeRegistered"].get("all", [])}
    ctx = _Context(run, config, chain_info, transactions, trail_rounds, events,
                   addresses if addresses is not None else registered, BlobStore(run_dir / BLOBS),
                   skip_data=not check_data)
    if check_data:
        _load_run_data(ctx, data_dir)
    else:
        report.skipped.append("data checks (--skip-data)")

    setup = RoundVerdict(0, problems=list(replayed.pop(0, [])))
    report.rounds.append(setup)
    if run.manifest.get("ledger") not in (None, chain_info):
        setup.problems.append("the manifest's ledger entry differs from trail/chain.json")
    _check_registry(ctx, registered, addresses is not None, setup)
    _check_data(ctx, setup)
    _check_run_status(ctx, report)
    _check_configuration(ctx, report)

    committed = {r: bytes(e[0]["newGlobalDigest"]) for r, e in events["RoundCommitted"].items() if e}
    exclusions = _exclusions(ctx, setup)
    for server_round in sorted(set(events["RoundOpened"]) | {r for r in trail_rounds if r > 0} | set(replayed)):
        verdict = RoundVerdict(server_round, problems=list(replayed.get(server_round, [])))
        _check_round(ctx, server_round, committed, exclusions, verdict)
        report.rounds.append(verdict)
    chosen = parse_rounds(rounds, sorted(committed))
    if chosen == []:
        report.skipped.append("re-evaluation (--rounds none)")
    _check_evaluation(ctx, committed, chosen, report.evaluation, report)
    _check_final(run, committed, report.final)
    return report


# --- the chain -----------------------------------------------------------------------------


def _replay(ledger: Any, info: dict[str, Any], transactions: list[dict[str, Any]],
            blame: dict[int, list[str]]) -> None:
    """Send every recorded signed transaction again; each must hash and end as recorded.

    A divergence is blamed on the round its transaction belongs to (0: set-up).
    """
    w3 = ledger.w3
    if ledger.chain_id != int(info["chain_id"]):
        blame[0].append(f"the replay chain has id {ledger.chain_id}, the run's had {info['chain_id']}")
    for position, tx in enumerate(transactions):
        if not tx.get("raw"):
            raise AuditError(
                f"transaction {tx['tx_hash']} ({tx['kind']}) was sent without keeping its signed bytes; "
                "audit this run against its live endpoint with --rpc-url"
            )
        problems = blame[int(tx.get("round") or 0)]
        raw = bytes.fromhex(tx["raw"])
        try:
            tx_hash = "0x" + bytes(w3.eth.send_raw_transaction(raw)).hex()
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        except Exception as err:  # noqa: BLE001 - a refused replay is the finding
            problems.append(f"transaction {position} ({tx['kind']}, round {tx['round']}) refused on replay: "
                            f"{str(err)[:160]}")
            continue
        if tx_hash != tx["tx_hash"]:
            problems.append(f"transaction {position} ({tx['kind']}) hashes to {tx_hash}, recorded {tx['tx_hash']}")
        if "gas_used" in tx and int(receipt["gasUsed"]) != int(tx["gas_used"]):
            problems.append(f"transaction {position} ({tx['kind']}, round {tx['round']}) used {receipt['gasUsed']} gas "
                            f"on replay, the trail records {tx['gas_used']}")
        if int(receipt["status"]) != int(tx["status"]):
            problems.append(f"transaction {tx['tx_hash']} ({tx['kind']}, round {tx['round']}) ended with status "
                            f"{receipt['status']} on replay, {tx['status']} in the run")
    for server_round, problems in list(blame.items()):
        if len(problems) > 5:
            blame[server_round] = problems[:5] + [f"... and {len(problems) - 5} more"]
    try:
        ledger.attach(str(info["contract"]))
    except LedgerError as err:
        raise AuditError(f"after the replay, no registry at {info['contract']}: {err}") from err


def _by_kind(events: list[ChainEvent]) -> dict[str, Any]:
    """Events grouped: per-round kinds keyed by round, the rest as lists under ``"all"``."""
    grouped: dict[str, Any] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event.name in ("RoundOpened", "RoundCommitted", "UpdateSubmitted", "NodeRejected"):
            grouped[event.name][int(event.args["round"])].append(event.args)
        else:
            grouped[event.name].setdefault("all", []).append(event.args)
    return grouped


# --- the data ------------------------------------------------------------------------------


def _data_dir_candidates(run: Run, config: ExperimentConfig, explicit: str | Path | None) -> list[tuple[str, Path]]:
    """Where the run's data may be, most authoritative first: the folder given to the audit,
    the folder the run recorded (``data_dir`` in the manifest, else ``data.data_dir``; a
    relative one against the run's recorded ``cwd``, else the current directory), the one its
    source files lie in, then ``$BFLSIM_DATA_DIR`` / ./data. Whichever loads must hold files
    with the sha256 the manifest recorded."""
    if explicit is not None:
        return [("--data-dir", Path(explicit).expanduser().absolute())]
    manifest = run.manifest
    cwd = Path(manifest["cwd"]) if manifest.get("cwd") else None
    found: list[tuple[str, Path]] = []

    def add(why: str, value: str | Path | None) -> None:
        if not value:
            return
        path = Path(value).expanduser()
        if not path.is_absolute():  # relative to the run's recorded working directory, else to ours
            path = (cwd or Path.cwd()) / path
        if all(path != p for _, p in found):
            found.append((why, path))

    add("the manifest's data_dir", manifest.get("data_dir"))
    add("data.data_dir", config.data.data_dir)
    for source in (manifest.get("data") or {}).get("sources", []):
        path = Path(str(source.get("path", "")))
        for file in _registered_files(config):
            for name in (file, file + ".gz"):
                if path.is_absolute() and str(path).endswith("/" + name):
                    add("the recorded data files' folder", str(path)[: -len(name) - 1])
    add("$BFLSIM_DATA_DIR or ./data", resolve_data_dir(None))
    return found


def _registered_files(config: ExperimentConfig) -> list[str]:
    from bflsim.data import DATASETS

    record = DATASETS.get(config.data.dataset)
    return [f.relpath for f in record.files] if record is not None else []


def _recorded_path_config(run: Run, config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with a relative ``data.path`` resolved as the run resolved it (its recorded
    source file, else its recorded working directory)."""
    if not config.data.path or Path(config.data.path).expanduser().is_absolute():
        return config
    sources = (run.manifest.get("data") or {}).get("sources", [])
    recorded = [Path(str(s["path"])) for s in sources if Path(str(s.get("path", ""))).is_absolute()]
    if recorded:
        path = recorded[0]
    elif run.manifest.get("cwd"):
        path = Path(run.manifest["cwd"]) / config.data.path
    else:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(path)))


def _load_run_data(ctx: _Context, explicit: str | Path | None) -> None:
    """Load the run's prepared data as the run did; record why not when it cannot."""
    load_data.cache_clear()  # the files as they are now, not as an earlier audit in this process saw them
    node_partitions.cache_clear()
    config = _recorded_path_config(ctx.run, ctx.config)
    if config is not ctx.config:
        ctx.config = config
    if config.data.dataset == "synthetic":
        candidates: list[tuple[str, Path | None]] = [("synthetic", None)]
    else:
        candidates = list(_data_dir_candidates(ctx.run, config, explicit))
    recorded = {(s.get("sha256")) for s in (ctx.run.manifest.get("data") or {}).get("sources", [])}
    tried = []
    for why, path in candidates:
        try:
            data = load_data(config.data, None if path is None else str(path))
        except (DataError, FileNotFoundError, OSError, ValueError) as err:
            tried.append(f"{path} ({why}): {str(err)[:120]}")
            continue
        digests = {d for _, d in data.sources}
        if recorded - {None} and digests != recorded:
            tried.append(f"{path} ({why}): its files' sha256 differ from the manifest's")
            continue
        ctx.data, ctx.data_path = data, None if path is None else str(path)
        return
    ctx.data_missing = "the run's data was not found; tried " + "; ".join(tried) + (
        " (give --data-dir, or --skip-data to audit without the data checks)")


def _partition_sizes(ctx: _Context) -> dict[int, int] | None:
    if ctx.data is None:
        return None
    return {i: len(rows) for i, rows in enumerate(node_partitions(ctx.config.data, ctx.config.federation,
                                                                    ctx.data_path))}


# --- checks --------------------------------------------------------------------------------


def _check_registry(ctx: _Context, registered: dict[int, str], independent: bool, verdict: RoundVerdict) -> None:
    recorded = {int(k): v for k, v in ctx.chain_info.get("nodes", {}).items()}
    if independent and registered != ctx.addresses:
        source = "derived from the run's seed" if ctx.config.ledger.key_source == "seed" else "of the run's keys"
        verdict.problems.append(f"registered nodes {_short(registered)} are not the addresses {source} "
                                f"{_short(ctx.addresses)}")
    if recorded != registered:
        verdict.problems.append("trail/chain.json's node addresses differ from the registry's")
    data = {e["node"]: digest_hex(e["digest"]) for e in ctx.events["DataRegistered"].get("all", [])}
    if data and 0 not in ctx.trail_rounds:
        verdict.problems.append(f"{len(data)} nodes registered data on chain, but trail/rounds.jsonl has no round-0 "
                                "line recording their registration")
    claimed = (ctx.trail_rounds.get(0) or {}).get("data", {})
    for index, address in sorted(registered.items()):
        if str(index) in claimed and data.get(address) != claimed[str(index)]:
            verdict.problems.append(f"node {index}'s data digest on chain {data.get(address)} is not the trail's "
                                    f"{claimed[str(index)]}")
    verdict.notes.append(f"{len(registered)} nodes, {len(data)} data digests registered")


def _latest_data_events(ctx: _Context) -> dict[int, dict[str, Any]]:
    index_of = ctx.index_of
    return {index_of[e["node"]]: e for e in ctx.events["DataRegistered"].get("all", []) if e["node"] in index_of}


def _check_data(ctx: _Context, verdict: RoundVerdict) -> None:
    """Recompute every node's registered data digest (of the trail's version: runs before v2
    hashed the features only) and, v2, its registered sample count, from its partition."""
    if ctx.data_unchecked(verdict, "data digests not recomputed"):
        return
    version = ctx.chain_info.get("data_digest", "v1")
    sizes = _partition_sizes(ctx) or {}
    for node, event in sorted(_latest_data_events(ctx).items()):
        x, y = node_data(ctx.config, node, 0, ctx.data_path)
        labels = y if version != "v1" else None
        if data_digest(x, labels, int(event["timestamp"]), node, version=version) != bytes(event["digest"]):
            verdict.problems.append(f"node {node}'s registered data digest does not match its partition of "
                                    f"{ctx.config.data.dataset}")
        if "numSamples" in event and int(event["numSamples"]) != sizes.get(node):
            verdict.problems.append(f"node {node} registered {event['numSamples']} samples; its partition has "
                                    f"{sizes.get(node)}")
    verdict.notes.append(f"data digests ({version}) recomputed from {ctx.config.data.dataset}")


def _check_run_status(ctx: _Context, report: AuditReport) -> None:
    events, config, verdict = ctx.events, ctx.config, report.run
    report.status = ctx.run.status
    report.rounds_configured = config.federation.rounds
    committed = sorted(r for r, e in events["RoundCommitted"].items() if e)
    opened = sorted(r for r, e in events["RoundOpened"].items() if e)
    report.rounds_committed = committed
    open_only = [r for r in opened if r not in committed]
    report.round_in_progress = max(open_only) if open_only else None
    if len(open_only) > 1 or (open_only and open_only[0] != max(opened)):
        verdict.problems.append(f"rounds {open_only} were opened and never committed, yet later rounds ran")
    if committed != list(range(1, len(committed) + 1)):
        verdict.problems.append(f"committed rounds {committed} are not 1..{len(committed)} in sequence")
    if report.status == "complete":
        if len(committed) != config.federation.rounds:
            verdict.problems.append(f"the run is marked complete but {len(committed)} of the "
                                    f"{config.federation.rounds} configured rounds were committed on chain")
        if open_only:
            verdict.problems.append(f"the run is marked complete but round {open_only[-1]} was never committed")
    _check_rows_beyond_commits(ctx, report, committed)
    recorded_seeds = ctx.run.manifest.get("seeds")
    if recorded_seeds is not None and recorded_seeds != config.seeds():
        verdict.problems.append(f"the manifest's seeds {recorded_seeds} are not its configuration's {config.seeds()}")
    described = ctx.run.manifest.get("data")
    if ctx.data is not None and isinstance(described, dict):
        actual = ctx.data.describe()
        for key in ("dataset", "class_names", "normal_class", "num_features", "rows", "class_counts"):
            if key in described and described[key] != actual[key]:
                verdict.problems.append(f"the manifest's data {key} {described[key]} is not the recomputed "
                                        f"data's {actual[key]}")
    error = ctx.run.manifest.get("error")
    if report.status != "complete" and error:
        verdict.notes.append(f"error: {str(error)[:160]}")
    verdict.notes.insert(0, report.run_summary())


def _check_rows_beyond_commits(ctx: _Context, report: AuditReport, committed: list[int]) -> None:
    """Rows of metrics.csv for rounds past the last commit: the round a run stopped in (its
    transactions may not have reached the trail), or rows a complete run cannot have."""
    try:
        metrics = ctx.run.metrics()
    except FileNotFoundError:
        return
    last = max(committed, default=0)
    beyond = sorted({int(r) for r in metrics["round"].dropna() if int(r) > last})
    if not beyond:
        return
    if report.status == "complete":
        report.run.problems.append(f"metrics.csv has rows for rounds {beyond}, after the last committed round {last}")
        return
    if report.round_in_progress is None:
        report.round_in_progress, report.round_in_progress_on_chain = beyond[0], False


def _check_configuration(ctx: _Context, report: AuditReport) -> None:
    """The manifest's configuration against the run digest recorded on chain (registry v2)."""
    verdict = report.configuration
    configured = ctx.events["RunConfigured"].get("all", [])
    version = int(ctx.chain_info.get("registry_version", 2 if configured else 1))
    report.registry_version = version
    if version < 2 and not configured:
        report.not_on_chain.extend(["run configuration", "evaluations", "partition sizes"])
        verdict.notes.append(f"{V1_REGISTRY}: the manifest's attack, attackers, seeds and rule are checked only "
                             "through what the chain's rounds reproduce")
        return
    if not configured:
        verdict.problems.append("the registry recorded no RunConfigured event (trail/chain.json says registry v2)")
        return
    on_chain = bytes(configured[0]["runDigest"])
    facts = ctx.run.manifest.get("run_facts")
    if not isinstance(facts, dict):
        verdict.problems.append("the manifest has no run_facts to recompute the on-chain run digest from")
        return
    if ctx.chain_info.get("run_facts") not in (None, facts):
        verdict.problems.append("the manifest's run_facts differ from trail/chain.json's")
    try:
        recomputed = run_digest(facts)
    except TypeError as err:
        verdict.problems.append(f"run_facts: {err}")
        return
    if recomputed != on_chain:
        verdict.problems.append(f"run_digest(run_facts) = {digest_hex(recomputed)}, the registry recorded "
                                f"{digest_hex(on_chain)}")
    if facts.get("config") != config_digest(ctx.run.config):
        verdict.problems.append("the manifest's configuration is not the one whose digest was recorded on chain "
                                f"(config digest {config_digest(ctx.run.config)}, on chain {facts.get('config')})")
    if facts.get("git_commit", "") != (ctx.run.manifest.get("git_commit") or ""):
        verdict.problems.append(f"the manifest's git commit is not the recorded {facts.get('git_commit')!r}")
    sources = (ctx.run.manifest.get("data") or {}).get("sources", [])
    if facts.get("data", "") != data_sources_digest(sources):
        verdict.problems.append("the run's recorded data facts are not the digest of the manifest's data files")
    if facts.get("run_id") not in (None, ctx.run.run_id):
        verdict.notes.append(f"recorded for run {facts.get('run_id')}, this folder's run id is {ctx.run.run_id}")
    if ctx.data_unchecked(verdict, "test split not recomputed"):
        return
    assert ctx.data is not None
    split = digest_hex(split_digest(ctx.data.x_test, ctx.data.y_test))
    if facts.get("test_split") != split:
        verdict.problems.append(f"the recomputed test split hashes to {split}, the run recorded "
                                f"{facts.get('test_split')}")
    verdict.notes.append(f"run digest {digest_hex(on_chain)[:18]}... matches the manifest (config, test split)")


def _exclusions(ctx: _Context, setup: RoundVerdict) -> dict[int, int]:
    """{node: the last round it could be in a cohort}: nodes without registered data are out
    from round 1 (0), nodes reporting a failed integrity check in round r from round r + 1.

    Each integrity failure is re-checked: the node's data in that round must indeed differ
    from what it registered (a node excluded with intact data was framed).
    """
    out: dict[int, int] = {}
    data_events = _latest_data_events(ctx)
    for node in ctx.addresses:
        if node not in data_events:
            out[node] = 0
            _check_registration_refusal(ctx, node, setup)
    flagged = _integrity_failures(ctx.run)
    version = ctx.chain_info.get("data_digest", "v1")
    for node, server_round in sorted(flagged.items()):
        out.setdefault(node, server_round)
        event = data_events.get(node)
        if event is None or ctx.data_unchecked(setup, f"node {node}'s integrity failure not re-checked"):
            continue
        x, y = node_data(ctx.config, node, server_round, ctx.data_path)
        digest = data_digest(x, y if version != "v1" else None, int(event["timestamp"]), node, version=version)
        if digest == bytes(event["digest"]):
            setup.problems.append(f"node {node} was excluded for a failed integrity check in round {server_round}, "
                                  "but its data there still matches its registered digest (framed)")
    listed = {int(k) for k in (ctx.run.manifest.get("excluded_nodes") or {})}
    for node in sorted(listed - set(out)):
        setup.problems.append(f"the manifest excludes node {node} with no recorded cause (no data registration "
                              "failure, no integrity_failed row)")
    return out


def _check_registration_refusal(ctx: _Context, node: int, setup: RoundVerdict) -> None:
    """A node without registered data was left out of every round: its refused registerData
    (trail round 0's ``refused_tx``), if stored, must really be wrong."""
    trail0 = ctx.trail_rounds.get(0) or {}
    raw = (trail0.get("refused_tx") or {}).get(str(node))
    if not raw:
        why = (trail0.get("failed") or {}).get(str(node), "no registration recorded")
        setup.notes.append(f"node {node} registered no data ({str(why)[:80]})")
        return
    try:
        tx, digest, timestamp, num_samples = read_data_tx(bytes.fromhex(str(raw).removeprefix("0x")))
    except ValueError:
        return  # not a registerData: rightly refused
    if (tx.sender != ctx.addresses.get(node) or tx.chain_id != int(ctx.chain_info["chain_id"])
            or str(tx.to).lower() != str(ctx.chain_info["contract"]).lower()):
        return
    if ctx.data_unchecked(setup, f"node {node}'s refused data registration not re-checked"):
        return
    x, y = node_data(ctx.config, node, 0, ctx.data_path)
    version = ctx.chain_info.get("data_digest", "v1")
    if data_digest(x, y if version != "v1" else None, timestamp, node, version=version) == digest and (
            num_samples == len(y)):
        setup.problems.append(f"node {node}'s data registration was refused, but its signed registerData names "
                              "its partition's digest and size (framed)")


def _integrity_failures(run: Run) -> dict[int, int]:
    try:
        metrics = run.metrics()
    except FileNotFoundError:
        return {}
    rows = metrics[(metrics["split"] == "node") & (metrics["metric"] == "integrity_failed")]
    out: dict[int, int] = {}
    for row in rows.itertuples():
        node, server_round = int(row.node), int(row.round)
        out[node] = min(out.get(node, server_round), server_round)
    return out


def _revoked_after(ctx: _Context) -> dict[int, int]:
    """{node: the round whose commit revoked it}, from the NodeRevoked events."""
    index_of = ctx.index_of
    return {index_of[e["node"]]: int(e["round"]) for e in ctx.events["NodeRevoked"].get("all", [])
            if e["node"] in index_of}


def _check_round(
    ctx: _Context, server_round: int, committed: dict[int, bytes], exclusions: dict[int, int], verdict: RoundVerdict
) -> None:
    problems = verdict.problems
    events, config = ctx.events, ctx.config
    opened = events["RoundOpened"].get(server_round, [])
    closed = events["RoundCommitted"].get(server_round, [])
    trail = ctx.trail_rounds.get(server_round)
    if not opened:
        problems.append("no RoundOpened event on chain")
        return
    global_digest = bytes(opened[0]["globalDigest"])
    if server_round - 1 in committed and committed[server_round - 1] != global_digest:
        problems.append(f"opened from {digest_hex(global_digest)}, not round {server_round - 1}'s committed "
                        f"{digest_hex(committed[server_round - 1])}")
    if server_round == 1:
        _check_initial_model(ctx, global_digest, verdict)
    cohort = list(from_bitmap(int(opened[0]["cohort"])))
    _check_cohort(ctx, server_round, cohort, exclusions, verdict)
    if trail is None:
        if closed:
            problems.append("opened on chain but missing from trail/rounds.jsonl")
        else:
            verdict.notes.append("opened, never committed (the run ended in this round)")
            _blob(ctx.store, global_digest, "global model", problems)
        return
    if digest_hex(global_digest) != trail["global_digest"]:
        problems.append(f"opened with global digest {digest_hex(global_digest)}, trail says {trail['global_digest']}")
    global_weights = _blob(ctx.store, global_digest, "global model", problems)
    if cohort != trail["cohort"]:
        problems.append(f"cohort on chain {cohort}, trail says {trail['cohort']}")
    if not closed:
        problems.append("in trail/rounds.jsonl but never committed on chain")
        return

    index_of = ctx.index_of
    submitted: dict[int, tuple[bytes, int]] = {}
    for event in events["UpdateSubmitted"].get(server_round, []):
        node = index_of.get(event["node"])
        if node is None or node not in cohort:
            problems.append(f"update submitted by {event['node']}, not a member of the cohort {cohort}")
            continue
        submitted[node] = (bytes(event["updateDigest"]), int(event["numSamples"]))

    candidates = [int(n) for n in trail["candidates"]]
    _check_candidates(ctx, server_round, cohort, submitted, candidates, trail, global_weights, verdict)
    rows, num_samples = [], []
    for node in candidates:
        if node not in submitted:
            problems.append(f"node {node} was aggregated without an update submitted on chain")
            continue
        digest, samples = submitted[node]
        arrays = _blob(ctx.store, digest, f"node {node}'s update", problems)
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
    _blob(ctx.store, bytes(commit["newGlobalDigest"]), "committed global model", problems)
    _check_trail_decision(trail, decision, commit, problems)
    _check_round_rows(ctx, server_round, trail, decision, problems)
    refused = [u for u in trail["updates"] if u.get("refused")]
    verdict.notes.append(f"{len(candidates)} updates, {config.aggregator.name} selected {list(decision.selected)}, "
                         f"accepted {accepted}" + (f", {len(refused)} refused (reasons confirmed)" if refused else ""))


def _check_trail_decision(trail: dict[str, Any], decision: Any, commit: dict[str, Any], problems: list[str]) -> None:
    """The trail's record of the round is the re-run's decision (reports read the trail)."""
    expected: dict[str, Any] = {
        "selected": [int(i) for i in decision.selected],
        "rejected": [int(i) for i in decision.rejected],
        "accepted": [int(i) for i in decision.accepted],
        "scores_digest": digest_hex(decision.scores_digest),
        "new_global_digest": digest_hex(bytes(commit["newGlobalDigest"])),
    }
    if "evaluationDigest" in commit:
        expected["evaluation_digest"] = digest_hex(bytes(commit["evaluationDigest"]))
    for key, value in expected.items():
        if key in trail and trail[key] != value:
            problems.append(f"the trail's {key} {trail[key]} is not the re-run's {value}")
    scores = np.asarray(decision.selection.scores, dtype=np.float64)
    if "scores" in trail and (len(trail["scores"]) != len(scores)
                              or not np.allclose(trail["scores"], scores, rtol=1e-12, atol=0, equal_nan=True)):
        problems.append("the trail's scores are not the re-run's")


def _check_round_rows(ctx: _Context, server_round: int, trail: dict[str, Any], decision: Any,
                      problems: list[str]) -> None:
    """metrics.csv's round rows that the chain and the trail determine: updates received,
    poisoned received / accepted (against the manifest's attackers), gas used."""
    try:
        metrics = ctx.run.metrics()
    except FileNotFoundError:
        return
    rows = metrics[(metrics["split"] == "round") & (metrics["round"] == server_round)]
    logged = dict(zip(rows["metric"], rows["value"], strict=False))
    nodes = np.asarray(decision.nodes, dtype=np.int64)
    malicious = np.isin(nodes, ctx.config.malicious_nodes(server_round))
    selected = np.isin(np.arange(len(nodes)), decision.selection.selected)
    gas = sum(int(t.get("gas_used", 0)) for t in ctx.transactions if int(t.get("round") or 0) == server_round)
    expected = {
        "updates_received": len(nodes),
        "poisoned_received": int(malicious.sum()),
        "poisoned_accepted": int((malicious & selected).sum()),
        "gas_used": gas,
    }
    for metric, value in expected.items():
        if metric in logged and not math.isclose(float(logged[metric]), float(value), rel_tol=1e-12):
            problems.append(f"metrics.csv says {metric} {float(logged[metric]):g} for this round; the trail and "
                            f"the manifest's attackers give {value}")


def _check_initial_model(ctx: _Context, global_digest: bytes, verdict: RoundVerdict) -> None:
    """Round 1 opens from ``initial_weights`` of the manifest's models and ``train.seed``."""
    from bflsim.models import initial_weights

    shape = _model_shape(ctx)
    if shape is None:
        verdict.unchecked.append("initial model not rebuilt: the manifest records no data shape and the data "
                                 "is not at hand")
        return
    initial = weights_digest(initial_weights(ctx.config.models, ctx.config.train, *shape))
    if initial != global_digest:
        verdict.problems.append(f"round 1 opened from {digest_hex(global_digest)}, not from the initial model of "
                                f"train.seed = {ctx.config.train.seed} ({digest_hex(initial)})")


def _model_shape(ctx: _Context) -> tuple[int, int] | None:
    if ctx.data is not None:
        return ctx.data.num_features, ctx.data.num_classes
    recorded = ctx.run.manifest.get("data") or {}
    if "num_features" in recorded and "class_names" in recorded:
        return int(recorded["num_features"]), len(recorded["class_names"])
    return None


def _check_cohort(
    ctx: _Context, server_round: int, cohort: list[int], exclusions: dict[int, int], verdict: RoundVerdict
) -> None:
    """The cohort on chain is the configured seeded draw from the eligible nodes."""
    revoked = _revoked_after(ctx)
    eligible = [i for i in sorted(ctx.addresses)
                if revoked.get(i, server_round) >= server_round and exclusions.get(i, server_round) >= server_round]
    expected = ctx.config.federation.sample_cohort(server_round, eligible)
    if cohort != expected:
        left_out = sorted(set(expected) - set(cohort))
        added = sorted(set(cohort) - set(expected))
        verdict.problems.append(
            f"cohort on chain {cohort} is not federation.sample_cohort({server_round}, eligible {eligible}) = "
            f"{expected}" + (f": left out {left_out}" if left_out else "") + (f", added {added}" if added else "")
        )


def _submit_txs(ctx: _Context, server_round: int, node: int) -> list[dict[str, Any]]:
    return [t for t in ctx.transactions
            if t.get("kind") == "submit_update" and int(t.get("round") or 0) == server_round and t.get("node") == node]


def _check_candidates(
    ctx: _Context, server_round: int, cohort: list[int], submitted: dict[int, tuple[bytes, int]],
    candidates: list[int], trail: dict[str, Any], global_weights: list[np.ndarray] | None, verdict: RoundVerdict,
) -> None:
    """Every submitted, unrefused update is a candidate; every refusal is true; sample counts
    are the partitions'; re-derivable attack updates are what the manifest's attack gives."""
    problems = verdict.problems
    updates: dict[int, dict[str, Any]] = {}
    for entry in trail.get("updates", []):
        updates[int(entry["node"])] = entry
    sizes = _partition_sizes(ctx)
    for node in sorted(set(submitted) | set(updates)):
        entry = updates.get(node)
        if entry is None:
            if node not in candidates:
                problems.append(f"node {node}'s update was submitted on chain but is neither aggregated nor "
                                "refused in the trail (censored)")
            continue
        if entry.get("refused"):
            why = _refusal_reason(ctx, server_round, node, entry, submitted.get(node), sizes, verdict)
            if why is None:
                problems.append(f"node {node}'s update was refused ({str(entry['refused'])[:80]}) but its signed "
                                "transaction, blob and sample count are valid (framed)")
            if node in candidates:
                problems.append(f"node {node}'s update was refused yet aggregated")
            continue
        if node not in candidates:
            problems.append(f"node {node}'s update was received and not refused, but left out of the aggregation "
                            "(censored)")
        if node in submitted and entry.get("digest") != digest_hex(submitted[node][0]):
            problems.append(f"node {node}: the trail's update digest {entry.get('digest')} is not the one submitted "
                            f"on chain {digest_hex(submitted[node][0])}")
        if node in submitted and entry.get("num_samples") != submitted[node][1]:
            problems.append(f"node {node}: the trail says {entry.get('num_samples')} samples, the chain "
                            f"{submitted[node][1]}")
    for node in candidates:
        if node in submitted and sizes is not None and submitted[node][1] != sizes.get(node):
            problems.append(f"node {node} claimed {submitted[node][1]} samples on chain; its partition has "
                            f"{sizes.get(node)}")
    if global_weights is not None:
        _check_attack_updates(ctx, server_round, cohort, submitted, global_weights, verdict)


def _refusal_reason(
    ctx: _Context, server_round: int, node: int, entry: dict[str, Any], on_chain: tuple[bytes, int] | None,
    sizes: dict[int, int] | None, verdict: RoundVerdict,
) -> str | None:
    """Why node ``node``'s update deserved refusal, found again from its stored signed
    transaction (the trail's ``tx`` for one never relayed, else the relayed one), its blob,
    its partition and the chain; None if nothing is wrong with it.

    The trail's record of the context the node was given is not trusted where the audit can
    establish it: chain, registry and run digest from the chain, the nonce from the node's
    earlier transactions, the fees from the other nodes' transactions of the round. A refusal
    that cannot be re-checked (no signed bytes, no blob) is noted as unchecked.
    """
    raw_hex = entry.get("tx") or entry.get("raw_tx")
    txs = _submit_txs(ctx, server_round, node)
    if not raw_hex and txs:
        raw_hex = txs[-1].get("raw")
    if any(int(t.get("status", 1)) != 1 for t in txs):
        return "its submitUpdate reverted on chain"
    if not raw_hex:
        verdict.unchecked.append(f"node {node}'s refusal ({str(entry['refused'])[:60]}) cannot be re-checked: its "
                                 "signed transaction is not stored")
        return "unchecked"
    try:
        claim = read_update_tx(bytes.fromhex(str(raw_hex).removeprefix("0x")))
    except ValueError as err:
        return f"not a signed submitUpdate ({err})"
    tx = claim.tx
    run = _on_chain_run_digest(ctx)
    wrong = [
        (claim.sender != ctx.addresses.get(node), f"signed by {claim.sender}"),
        (claim.chain_id != int(ctx.chain_info["chain_id"]), f"signed for chain {claim.chain_id}"),
        (claim.contract_address.lower() != str(ctx.chain_info["contract"]).lower(), f"sent to {claim.contract_address}"),
        (run is not None and claim.run_digest != run, "signed for another run"),
        (claim.server_round != server_round, f"signed for round {claim.server_round}"),
        (claim.gas != UPDATE_GAS_LIMIT, f"gas limit {claim.gas}"),
        (claim.value != 0, f"sends {claim.value} wei"),
        (claim.nonce != _expected_nonce(ctx, claim.sender, server_round), f"nonce {claim.nonce}"),
        (tx is not None and not _round_fees_match(ctx, server_round, tx, entry.get("context")),
         "fees other than the round's"),
        (on_chain is not None and on_chain[0] != claim.update_digest, "the chain holds another digest"),
    ]
    for bad, why in wrong:
        if bad:
            return why
    received = bytes.fromhex(str(entry.get("digest", "")).removeprefix("0x")) if entry.get("digest") else b""
    try:
        arrays = ctx.store.get(received) if len(received) == 32 else None
    except BlobError:
        arrays = None
    if arrays is None:
        verdict.unchecked.append(f"node {node}'s refusal cannot be re-checked: the received update's blob "
                                 f"{entry.get('digest')} is not stored")
        return "unchecked"
    if claim.update_digest != received:
        return "digest mismatch"
    if not all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays):
        return "non-finite values"
    registered = _registered_samples(ctx).get(node)
    expected = registered if registered is not None else (sizes or {}).get(node, entry.get("num_samples"))
    if expected is not None and claim.num_samples != int(expected):
        return f"signed {claim.num_samples} samples, not {expected}"
    if entry.get("num_samples") is not None and int(entry["num_samples"]) != claim.num_samples and (
            sizes is None or int(entry["num_samples"]) != sizes.get(node)):
        return f"reported {entry['num_samples']} samples, signed {claim.num_samples}"
    return None


def _on_chain_run_digest(ctx: _Context) -> bytes | None:
    configured = ctx.events["RunConfigured"].get("all", [])
    return bytes(configured[0]["runDigest"]) if configured else None


def _registered_samples(ctx: _Context) -> dict[int, int]:
    """Each node's registered sample count (registry v2), from its last DataRegistered event."""
    return {node: int(e["numSamples"]) for node, e in _latest_data_events(ctx).items() if "numSamples" in e}


def _expected_nonce(ctx: _Context, sender: str, server_round: int) -> int:
    """The nonce a node's round-``server_round`` submitUpdate must carry: its transactions mined
    in earlier rounds (the replay checked them)."""
    return sum(1 for t in ctx.transactions
               if str(t.get("sender", "")).lower() == sender.lower() and int(t.get("round") or 0) < server_round)


def _round_fees_match(ctx: _Context, server_round: int, tx: Any, context: dict[str, Any] | None) -> bool:
    """True when ``tx`` pays what another transaction the server relayed this round pays (all
    nodes of a round are given the same fees); with none to compare, what the trail says the
    node was given (``context``), else True."""
    others = []
    for t in ctx.transactions:
        if t.get("kind") == "submit_update" and int(t.get("round") or 0) == server_round and t.get("raw"):
            try:
                others.append(read_tx(bytes.fromhex(t["raw"])))
            except ValueError:
                continue
    fees = (tx.tx_type, tx.gas_price, tx.max_fee_per_gas, tx.max_priority_fee_per_gas)
    if not others:
        if not context:
            return True
        given = TxContext.from_json(context)
        if given.gas_price is not None:
            return fees[:2] == (0, given.gas_price)
        return fees[0] == 2 and fees[2:] == (given.max_fee_per_gas, given.max_priority_fee_per_gas)
    return any(fees == (o.tx_type, o.gas_price, o.max_fee_per_gas, o.max_priority_fee_per_gas) for o in others)


def _check_attack_updates(
    ctx: _Context, server_round: int, cohort: list[int], submitted: dict[int, tuple[bytes, int]],
    global_weights: list[np.ndarray], verdict: RoundVerdict,
) -> None:
    """Re-derive the updates of the manifest's attackers when their attack needs no training
    (it draws from the attack seed only): another attack, sigma or attacker set fails."""
    config = ctx.config
    attack = config.attack.record
    if attack is None or attack.trains or attack.acts_on_data or attack.knows != "own" or not attack.acts_on_update:
        return
    for node in sorted(set(config.malicious_nodes(server_round).tolist()) & set(submitted)):
        derived = weights_digest(poison(config, attack, node, server_round, global_weights, global_weights, cohort,
                                        ctx.data_path))
        if derived != submitted[node][0]:
            verdict.problems.append(f"node {node} is an attacker per the manifest ({config.attack.name}), but its "
                                    "update is not what that attack with the manifest's seed and parameters sends")


def _check_evaluation(
    ctx: _Context, committed: dict[int, bytes], chosen: list[int] | None, verdict: RoundVerdict, report: AuditReport
) -> None:
    """Score committed global models again on the recomputed test split; compare with
    metrics.csv, confusion.csv and (v2) the committed evaluation digests."""
    if chosen == []:
        verdict.notes.append("skipped (--rounds none)")
        return
    rounds = sorted({0, *committed}) if chosen is None else chosen
    unknown = [r for r in rounds if r != 0 and r not in committed]
    if unknown:
        verdict.problems.append(f"--rounds names rounds {unknown}, which were never committed")
    try:
        metrics, confusion = ctx.run.metrics(), ctx.run.confusion()
    except FileNotFoundError as err:
        verdict.problems.append(f"{err}")
        return
    name = ctx.config.models.names[0]
    tested = metrics[(metrics["split"] == "test") & (metrics["model"] == name)]
    reported = sorted({int(r) for r in tested["round"].dropna()})
    extra = [r for r in reported if r != 0 and r not in committed]
    if extra:
        verdict.problems.append(f"metrics.csv reports test metrics for rounds {extra}, which were never committed")
    if ctx.data_unchecked(verdict, "global models not re-evaluated"):
        return
    assert ctx.data is not None
    from bflsim.models import cached_model, initial_weights

    data = ctx.data
    model = cached_model(ctx.config.models, ctx.config.train, data.num_features, data.num_classes)
    last_committed = max(committed, default=0)
    checked = []
    for server_round in rounds:
        if server_round == 0:
            weights = initial_weights(ctx.config.models, ctx.config.train, data.num_features, data.num_classes)
        elif server_round in committed:
            try:
                weights = ctx.store.get(committed[server_round])
            except BlobError as err:
                verdict.problems.append(f"round {server_round}: {err}")
                continue
        else:
            continue
        model.set_weights(weights)
        proba = model.predict(data.x_test, batch_size=4096, verbose=0)
        scores, cm = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)
        rows = tested[tested["round"] == server_round]
        if rows.empty:
            if server_round == last_committed and report.status != "complete":
                verdict.notes.append(f"round {server_round} committed but not evaluated before the run ended")
            else:
                verdict.problems.append(f"round {server_round}: no test metrics in metrics.csv")
            continue
        logged = dict(zip(rows["metric"], rows["value"], strict=False))
        for metric in EVALUATED_METRICS:
            if metric not in scores:
                continue
            if metric not in logged:
                verdict.problems.append(f"round {server_round}: metrics.csv has no {metric} row")
            elif not math.isclose(float(logged[metric]), scores[metric], rel_tol=1e-9, abs_tol=1e-12):
                verdict.problems.append(f"round {server_round}: metrics.csv says {metric} {float(logged[metric]):.6g}, "
                                        f"the committed model scores {scores[metric]:.6g} on the test split")
        _compare_confusion(confusion, name, server_round, cm, data.class_names, verdict)
        commits = ctx.events["RoundCommitted"].get(server_round, [])
        if (server_round > 0 and commits and "evaluationDigest" in commits[0]
                and bytes(commits[0]["evaluationDigest"]) != evaluation_digest(server_round, cm)):
            verdict.problems.append(f"round {server_round}: the committed evaluation digest is not that of the "
                                    "model's confusion matrix on the recomputed test split")
        checked.append(server_round)
    if checked:
        verdict.notes.append(f"rounds {_ranges(checked)} re-scored on the {len(data.y_test)}-row test split: "
                             f"{', '.join(EVALUATED_METRICS)} and confusion matrices match")


def _compare_confusion(table: Any, model: str, server_round: int, cm: np.ndarray, class_names: Sequence[str],
                       verdict: RoundVerdict) -> None:
    rows = table[(table["split"] == "test") & (table["model"] == model) & (table["round"] == server_round)]
    if rows.empty:
        verdict.problems.append(f"round {server_round}: no confusion matrix in confusion.csv")
        return
    index = {name: i for i, name in enumerate(class_names)}
    logged = np.zeros_like(cm)
    for row in rows.itertuples():
        if row.true not in index or row.predicted not in index:
            verdict.problems.append(f"round {server_round}: confusion.csv names an unknown class")
            return
        logged[index[row.true], index[row.predicted]] = int(row.count)
    if not np.array_equal(logged, cm):
        verdict.problems.append(f"round {server_round}: confusion.csv differs from the committed model's confusion "
                                "matrix on the test split")


def _check_final(run: Run, committed: dict[int, bytes], verdict: RoundVerdict) -> None:
    path = run.path / FINAL_MODEL
    if not path.is_file():
        if run.status == "complete":
            verdict.problems.append(f"{path} is missing")
        else:
            verdict.notes.append(f"none (run {run.status})")
        return
    if not committed:
        verdict.problems.append(f"{FINAL_MODEL} exists but no round was committed on chain")
        return
    final = weights_digest(run.final_model())
    last = committed[max(committed)]
    if final != last:
        verdict.problems.append(f"{FINAL_MODEL} hashes to {digest_hex(final)}, the last committed global "
                                f"digest (round {max(committed)}) is {digest_hex(last)}")
    if run.manifest.get("final_model_digest") not in (None, digest_hex(last)):
        verdict.problems.append("the manifest's final_model_digest is not the last committed digest")
    if final == last:
        verdict.notes.append(f"round {max(committed)}'s committed global model")


def _blob(store: BlobStore, digest: bytes, what: str, problems: list[str]) -> list[np.ndarray] | None:
    try:
        return store.get(digest)
    except BlobError as err:
        problems.append(f"{what}: {err}")
        return None


def _short(mapping: dict[int, str]) -> str:
    return "{" + ", ".join(f"{k}: {v[:8]}" for k, v in sorted(mapping.items())) + "}"


def _ranges(values: Sequence[int]) -> str:
    values = sorted(values)
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(v) for v in values)
