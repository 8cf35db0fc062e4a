"""Audit checks of a run as a whole: the registry and the nodes' data, the run's status and rounds, its configuration against the run digest on chain, and the nodes it excluded or the chain revoked."""

from __future__ import annotations

from typing import Any

from bflsim.audit.context import _Context, _partition_sizes
from bflsim.audit.verdict import V1_REGISTRY, AuditReport, RoundVerdict, _short
from bflsim.config import recorded_config_digest
from bflsim.edge_node import node_data
from bflsim.hashing import (
    data_digest,
    digest_hex,
    run_digest,
    split_digest,
)
from bflsim.ledger.identity import (
    read_data_tx,
)
from bflsim.ledger.session import data_sources_digest
from bflsim.runfolder import (
    Run,
)


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
    if "reference" in ctx.config.rule.needs:
        verdict.notes.append(f"{ctx.config.rule.label}'s reference updates are read from the run folder (defence/): "
                             "every round's aggregation is replayed with them; the server's root-set training "
                             "that produced them is not re-run")
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
    recorded = recorded_config_digest(ctx.run.manifest.get("config") or {})
    if facts.get("config") != recorded:
        verdict.problems.append("the manifest's configuration is not the one whose digest was recorded on chain "
                                f"(config digest {recorded}, on chain {facts.get('config')})")
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


def _on_chain_run_digest(ctx: _Context) -> bytes | None:
    configured = ctx.events["RunConfigured"].get("all", [])
    return bytes(configured[0]["runDigest"]) if configured else None


def _registered_samples(ctx: _Context) -> dict[int, int]:
    """Each node's registered sample count (registry v2), from its last DataRegistered event."""
    return {node: int(e["numSamples"]) for node, e in _latest_data_events(ctx).items() if "numSamples" in e}
