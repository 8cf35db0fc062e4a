"""Audit checks of one round: opened from the previous commit, its cohort, every submitted update a candidate or rightly refused, the attackers' updates, and the aggregation re-run from the blobs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bflsim.aggregators import AggregatorError, decide_round
from bflsim.audit.batched import typed_context
from bflsim.audit.context import _blob, _Context, _partition_sizes
from bflsim.audit.setup import _on_chain_run_digest, _registered_samples, _revoked_after
from bflsim.audit.verdict import RoundVerdict
from bflsim.edge_node import poison
from bflsim.hashing import (
    digest_hex,
    scores_digest,
    weights_digest,
)
from bflsim.ledger.base import node_set
from bflsim.ledger.identity import (
    UPDATE_GAS_LIMIT,
    TxContext,
    read_tx,
    read_update_tx,
    recover_update_typed,
)
from bflsim.runfolder import (
    BlobError,
)


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
    cohort = list(node_set(opened[0]["cohort"]))
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
        context = ctx.defence.context(server_round, candidates, rows, global_weights)
        decision = decide_round(config.rule, candidates, rows, global_weights, num_samples,
                                config.aggregator.reject_factor, distances=ctx.chain_info.get("distances", "v1"),
                                context=context)
        ctx.defence.advance(candidates, rows, global_weights)
    except (AggregatorError, ValueError) as err:  # ValueError: a distances version this code does not know
        problems.append(f"the round's updates cannot be aggregated with {config.rule.label}: {err}")
        return
    commit = closed[0]
    new_digest = weights_digest(decision.new_weights)
    if new_digest != bytes(commit["newGlobalDigest"]):
        problems.append(f"re-aggregation ({config.aggregator.name}) gives {digest_hex(new_digest)}, committed "
                        f"{digest_hex(bytes(commit['newGlobalDigest']))}")
    accepted = list(node_set(commit["accepted"]))
    if accepted != list(decision.accepted):
        problems.append(f"accepted on chain {accepted}, re-aggregation accepts {list(decision.accepted)}")
    rounding = None
    if decision.scores_digest != bytes(commit["scoresDigest"]):
        rounding = _scores_within_rounding(trail, decision, bytes(commit["scoresDigest"]))
        if rounding is None:
            problems.append("the scores digest on chain does not match the re-run's selection and scores")
        else:
            verdict.notes.append(f"scores re-computed to within {rounding:.1e} relative of the committed ones "
                                 f"(the same selection; BLAS rounds distances differently on another CPU)")
    _blob(ctx.store, bytes(commit["newGlobalDigest"]), "committed global model", problems)
    _check_trail_decision(trail, decision, commit, problems, scores_rounded=rounding is not None)
    _check_round_rows(ctx, server_round, trail, decision, problems)
    refused = [u for u in trail["updates"] if u.get("refused")]
    verdict.notes.append(f"{len(candidates)} updates, {config.aggregator.name} selected {list(decision.selected)}, "
                         f"accepted {accepted}" + (f", {len(refused)} refused (reasons confirmed)" if refused else ""))


SCORES_RTOL = 1e-9
"""How far re-computed scores may sit from the committed ones: rounding, not a different input.

Distances go through BLAS (:func:`bflsim.aggregators.base.sq_distances`), and OpenBLAS picks
its kernel by CPU (e.g. SkylakeX on one machine, Haswell on another), which rounds the float64
sums differently in the last bits. A re-run on another CPU then gives scores a few ulps away
and a different scores digest although nothing was changed."""


def _scores_within_rounding(trail: dict[str, Any], decision: Any, committed: bytes) -> float | None:
    """When the trail's scores hash exactly to the committed digest and the re-run selects the
    same nodes with scores within :data:`SCORES_RTOL` of them: the largest relative difference;
    else None (a real mismatch)."""
    if "scores" not in trail or "selected" not in trail:
        return None
    recorded = np.asarray(trail["scores"], dtype=np.float64)
    if scores_digest(trail["selected"], recorded) != committed:
        return None
    scores = np.asarray(decision.selection.scores, dtype=np.float64)
    if [int(i) for i in decision.selected] != [int(i) for i in trail["selected"]] or scores.shape != recorded.shape:
        return None
    if not np.allclose(scores, recorded, rtol=SCORES_RTOL, atol=0, equal_nan=True):
        return None
    finite = np.isfinite(recorded) & (recorded != 0)
    return float(np.max(np.abs(scores[finite] - recorded[finite]) / np.abs(recorded[finite]), initial=0.0))


def _check_trail_decision(trail: dict[str, Any], decision: Any, commit: dict[str, Any], problems: list[str],
                          *, scores_rounded: bool = False) -> None:
    """The trail's record of the round is the re-run's decision (reports read the trail); with
    ``scores_rounded`` the scores were found equal up to rounding (:func:`_scores_within_rounding`)."""
    expected: dict[str, Any] = {
        "selected": [int(i) for i in decision.selected],
        "rejected": [int(i) for i in decision.rejected],
        "accepted": [int(i) for i in decision.accepted],
        "scores_digest": digest_hex(bytes(commit["scoresDigest"]) if scores_rounded else decision.scores_digest),
        "new_global_digest": digest_hex(bytes(commit["newGlobalDigest"])),
    }
    if "evaluationDigest" in commit:
        expected["evaluation_digest"] = digest_hex(bytes(commit["evaluationDigest"]))
    for key, value in expected.items():
        if key in trail and trail[key] != value:
            problems.append(f"the trail's {key} {trail[key]} is not the re-run's {value}")
    scores = np.asarray(decision.selection.scores, dtype=np.float64)
    if "scores" in trail and (len(trail["scores"]) != len(scores)
                              or not np.allclose(trail["scores"], scores, rtol=SCORES_RTOL, atol=0, equal_nan=True)):
        problems.append("the trail's scores are not the re-run's")


def _check_round_rows(ctx: _Context, server_round: int, trail: dict[str, Any], decision: Any,
                      problems: list[str]) -> None:
    """metrics.csv's round rows that the chain and the trail determine: updates received,
    poisoned received / accepted / flagged as outliers, honest flagged (against the manifest's
    attackers), gas used."""
    try:
        metrics = ctx.run.metrics()
    except FileNotFoundError:
        return
    rows = metrics[(metrics["split"] == "round") & (metrics["round"] == server_round)]
    logged = dict(zip(rows["metric"], rows["value"], strict=False))
    nodes = np.asarray(decision.nodes, dtype=np.int64)
    malicious = np.isin(nodes, ctx.config.malicious_nodes(server_round))
    selected = np.isin(np.arange(len(nodes)), decision.selection.selected)
    flagged = np.isin(nodes, np.asarray(decision.rejected, dtype=np.int64))
    gas = sum(int(t.get("gas_used", 0)) for t in ctx.transactions if int(t.get("round") or 0) == server_round)
    expected = {
        "updates_received": len(nodes),
        "poisoned_received": int(malicious.sum()),
        "poisoned_accepted": int((malicious & selected).sum()),
        "poisoned_flagged": int((malicious & flagged).sum()),
        "honest_flagged": int((~malicious & flagged).sum()),
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
    if ctx.chain_info.get("mode") == "batched":
        return _batched_refusal_reason(ctx, server_round, node, entry, sizes, verdict)
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
    received, arrays = _received(ctx, node, entry, verdict)
    if arrays is None:
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


def _received(ctx: _Context, node: int, entry: dict[str, Any], verdict: RoundVerdict) -> tuple[bytes, Any]:
    """The digest of the update the server received from ``node`` and its stored arrays (None,
    noted as unchecked, when the blob is missing)."""
    received = bytes.fromhex(str(entry.get("digest", "")).removeprefix("0x")) if entry.get("digest") else b""
    try:
        arrays = ctx.store.get(received) if len(received) == 32 else None
    except BlobError:
        arrays = None
    if arrays is None:
        verdict.unchecked.append(f"node {node}'s refusal cannot be re-checked: the received update's blob "
                                 f"{entry.get('digest')} is not stored")
    return received, arrays


def _batched_refusal_reason(
    ctx: _Context, server_round: int, node: int, entry: dict[str, Any], sizes: dict[int, int] | None,
    verdict: RoundVerdict,
) -> str | None:
    """Why a batched-mode update deserved refusal, from its stored EIP-712 signature, its blob
    and the node's registered sample count; None if nothing is wrong with it."""
    received, arrays = _received(ctx, node, entry, verdict)
    if arrays is None:
        return "unchecked"
    signature = bytes.fromhex(str(entry.get("signature") or "").removeprefix("0x"))
    registered = _registered_samples(ctx).get(node)
    if registered is None:
        return "no data registered"
    if recover_update_typed(signature, typed_context(ctx.chain_info, ctx.events), node, server_round, received,
                            registered) != ctx.addresses.get(node):
        return "its signature does not verify"
    if not all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays):
        return "non-finite values"
    if entry.get("num_samples") is not None and int(entry["num_samples"]) != registered:
        return f"reported {entry['num_samples']} samples, registered {registered}"
    return None


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
    if attack is None or attack.trains or attack.acts_on_data or attack.threat_model != "independent" or not attack.acts_on_update:
        return
    for node in sorted(set(config.malicious_nodes(server_round).tolist()) & set(submitted)):
        derived = weights_digest(poison(config, attack, node, server_round, global_weights, global_weights, cohort,
                                        ctx.data_path))
        if derived != submitted[node][0]:
            verdict.problems.append(f"node {node} is an attacker per the manifest ({config.attack.name}), but its "
                                    "update is not what that attack with the manifest's seed and parameters sends")
