"""The audit of a batched-mode run (``ledger.mode = "batched"``): the trail's signatures and
Merkle trees against the roots on chain, then the per-node events they stand for.

A batched registry holds roots, not nodes: the federation (``NodeRootRegistered``), the data
registrations (``DataRootRegistered``) and per round the cohort (``BatchOpened``) and the
signed updates (``BatchCommitted``). :func:`batched_events` checks every signature in
trail/rounds.jsonl (each must recover to its node's registered address, under the
registry's EIP-712 domain and the run digest recorded on chain), rebuilds every tree from the
trail and compares its root and counts with the chain's, checks every stored inclusion proof,
and applies the registry's rejection rule itself. What verifies is then handed to the rest
of the audit as the events a per-node registry would have emitted (``NodeRegistered``,
``DataRegistered``, ``RoundOpened``, ``UpdateSubmitted``, ``RoundCommitted``,
``NodeRejected``, ``NodeRevoked``), so cohorts, refusals, aggregations and evaluations are
checked by the same code in both modes. Whatever does not verify is a problem of its round.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bflsim.hashing import digest_hex
from bflsim.ledger.batched import node_tree, rejections_after
from bflsim.ledger.identity import TxContext, recover_data_typed, recover_update_typed
from bflsim.ledger.merkle import MerkleTree, cohort_leaf, data_leaf, update_leaf, verify

__all__ = ["batched_events", "typed_context"]


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(str(value).removeprefix("0x"))


def typed_context(chain_info: dict[str, Any], events: dict[str, Any]) -> TxContext:
    """The EIP-712 domain the run's nodes signed under: the chain and registry of
    trail/chain.json, the run digest the registry recorded."""
    configured = events["RunConfigured"].get("all", [])
    run = bytes(configured[0]["runDigest"]) if configured else bytes(32)
    return TxContext(chain_id=int(chain_info["chain_id"]), contract_address=str(chain_info["contract"]), nonce=0,
                     run_digest=run)


def batched_events(
    events: dict[str, Any], chain_info: dict[str, Any], trail_rounds: dict[int, dict[str, Any]], max_rejections: int,
) -> tuple[dict[str, Any], dict[int, list[str]], dict[int, str]]:
    """``(events, problems by round, a note by round)``: the chain's events plus those the
    verified trail stands for, what does not verify, and what was verified."""
    problems: dict[int, list[str]] = defaultdict(list)
    notes: dict[int, str] = {}
    out: dict[str, Any] = defaultdict(lambda: defaultdict(list))
    for name, grouped in events.items():
        out[name] = grouped
    ctx = typed_context(chain_info, events)
    nodes = {int(i): str(a) for i, a in chain_info.get("nodes", {}).items()}
    _federation(events, nodes, out, problems[0])
    samples = _data(events, ctx, nodes, trail_rounds.get(0), out, problems[0])
    notes[0] = (f"batched registry: {len(nodes)} nodes against the federation root, {len(samples)} EIP-712 data "
                "signatures and their root and proofs verified")
    for server_round, opened in sorted(events["BatchOpened"].items()):
        _opened(server_round, opened, trail_rounds.get(server_round), out, problems[server_round])
    for server_round, committed in sorted(events["BatchCommitted"].items()):
        trail = trail_rounds.get(server_round)
        if trail is None:
            problems[server_round].append("committed on chain but missing from trail/rounds.jsonl")
            continue
        _committed(server_round, committed, trail, ctx, nodes, samples, out, problems[server_round])
        notes[server_round] = (f"{len(out['UpdateSubmitted'][server_round])} EIP-712 update signatures, the cohort "
                               "and updates roots and every proof verified")
    rejections: dict[int, int] = {}
    for record in sorted((r for r in trail_rounds.values() if int(r["round"]) >= 1), key=lambda r: int(r["round"])):
        accepted = {int(i) for i in record.get("accepted", [])}
        for node in (int(i) for i in record.get("candidates", [])):
            if node not in accepted and node in nodes:
                rejections[node] = rejections.get(node, 0) + 1
                out["NodeRejected"][int(record["round"])].append(
                    {"round": int(record["round"]), "node": nodes[node], "rejections": rejections[node]})
    _, revoked = rejections_after(list(trail_rounds.values()), max_rejections)
    out["NodeRevoked"]["all"] = [{"node": nodes[n], "round": r, "rejections": max_rejections}
                                 for n, r in sorted(revoked.items()) if n in nodes]
    return out, problems, notes


def _one(events: dict[str, Any], name: str, problems: list[str]) -> dict[str, Any] | None:
    found = events[name].get("all", [])
    if not found:
        problems.append(f"no {name} event on chain (a batched registry records one)")
        return None
    return found[-1]  # the last one stands (a data root may be replaced before round 1)


def _federation(events: dict[str, Any], nodes: dict[int, str], out: dict[str, Any], problems: list[str]) -> None:
    """The nodes of trail/chain.json hash to the federation's root on chain."""
    registered = _one(events, "NodeRootRegistered", problems)
    if registered is not None:
        root = node_tree(nodes).root
        if root != bytes(registered["nodesRoot"]) or int(registered["nodeCount"]) != len(nodes):
            problems.append(f"the {len(nodes)} nodes of trail/chain.json hash to {digest_hex(root)}; the registry "
                            f"holds {digest_hex(bytes(registered['nodesRoot']))} for {registered['nodeCount']} nodes")
    out["NodeRegistered"]["all"] = [{"node": address, "index": index} for index, address in sorted(nodes.items())]


def _data(
    events: dict[str, Any], ctx: TxContext, nodes: dict[int, str], record: dict[str, Any] | None,
    out: dict[str, Any], problems: list[str],
) -> dict[int, int]:
    """Every data signature recovers to its node; their tree is the data root on chain.
    Returns each verified node's registered sample count."""
    registered = _one(events, "DataRootRegistered", problems)
    if record is None:
        problems.append("trail/rounds.jsonl has no round-0 record of the data registrations")
        return {}
    samples, leaves = {}, []
    for key, signature_hex in sorted(record.get("signatures", {}).items(), key=lambda kv: int(kv[0])):
        node = int(key)
        digest, timestamp = _bytes(record["data"][key]), int(record["timestamps"][key])
        size, signature = int(record["num_samples"][key]), _bytes(signature_hex)
        if recover_data_typed(signature, ctx, node, digest, timestamp, size) != nodes.get(node):
            problems.append(f"node {node}'s data registration is not signed by its key {nodes.get(node)}")
            continue
        samples[node] = size
        leaves.append(data_leaf(node, digest, timestamp, size, signature))
        out["DataRegistered"]["all"].append(
            {"node": nodes[node], "digest": digest, "timestamp": timestamp, "numSamples": size})
    tree = MerkleTree(tuple(leaves))
    if registered is not None and (tree.root != bytes(registered["dataRoot"])
                                   or int(registered["dataCount"]) != len(leaves)):
        problems.append(f"the {len(leaves)} verified data registrations hash to {digest_hex(tree.root)}; the "
                        f"registry holds {digest_hex(bytes(registered['dataRoot']))} for {registered['dataCount']}")
    for k, key in enumerate(sorted((str(i) for i in samples), key=int)):
        stored = [_bytes(h) for h in record.get("proofs", {}).get(key, [])]
        if not verify(tree.root, leaves[k], stored):
            problems.append(f"node {key}'s stored data proof does not lead to the data root")
    return samples


def _opened(server_round: int, opened: list[dict[str, Any]], trail: dict[str, Any] | None, out: dict[str, Any],
            problems: list[str]) -> None:
    """The trail's cohort hashes to the round's cohort root and size on chain."""
    event = opened[-1]
    cohort = sorted(int(i) for i in (trail or {}).get("cohort", []))
    if trail is not None:
        root = MerkleTree(tuple(cohort_leaf(i) for i in cohort)).root
        if root != bytes(event["cohortRoot"]) or len(cohort) != int(event["cohortSize"]):
            problems.append(f"the trail's cohort {cohort} hashes to {digest_hex(root)}; the round opened with "
                            f"{digest_hex(bytes(event['cohortRoot']))} for {event['cohortSize']} nodes")
    out["RoundOpened"][server_round] = [{"round": server_round, "globalDigest": event["globalDigest"],
                                         "cohort": tuple(cohort)}]


def _committed(
    server_round: int, committed: list[dict[str, Any]], trail: dict[str, Any], ctx: TxContext, nodes: dict[int, str],
    samples: dict[int, int], out: dict[str, Any], problems: list[str],
) -> None:
    """Every update in the round's tree carries its node's signature; the tree (with the
    trail's accepted flags) is the updates root on chain, with its counts; every stored proof
    leads to it."""
    event = committed[-1]
    accepted = {int(i) for i in trail.get("accepted", [])}
    entries = sorted((u for u in trail.get("updates", []) if not u.get("refused")), key=lambda u: int(u["node"]))
    leaves, placed = [], []
    for entry in entries:
        node, digest = int(entry["node"]), _bytes(entry["digest"])
        signature = _bytes(entry.get("signature", ""))
        size = samples.get(node)
        if size is None or recover_update_typed(signature, ctx, node, server_round, digest, size) != nodes.get(node):
            problems.append(f"node {node}'s update in the round's tree is not signed by its key for this round, "
                            f"digest {entry['digest']} and its registered samples")
            continue
        leaves.append(update_leaf(node, digest, size, signature, node in accepted))
        placed.append(entry)
        out["UpdateSubmitted"][server_round].append(
            {"round": server_round, "node": nodes[node], "updateDigest": digest, "numSamples": size})
    tree = MerkleTree(tuple(leaves))
    taken = sum(1 for e in entries if int(e["node"]) in accepted)
    if (tree.root, len(leaves), taken) != (bytes(event["updatesRoot"]), int(event["submitted"]), int(event["accepted"])):
        problems.append(f"the trail's {len(leaves)} signed updates ({taken} accepted) hash to {digest_hex(tree.root)}; "
                        f"the round committed {digest_hex(bytes(event['updatesRoot']))} for {event['submitted']} "
                        f"({event['accepted']} accepted)")
    for k, entry in enumerate(placed):
        if not verify(tree.root, leaves[k], [_bytes(h) for h in entry.get("proof", [])]):
            problems.append(f"node {entry['node']}'s stored proof does not lead to the updates root")
    out["RoundCommitted"][server_round] = [{
        "round": server_round, "newGlobalDigest": event["newGlobalDigest"],
        "accepted": tuple(sorted(accepted & {int(e["node"]) for e in entries})),
        "scoresDigest": event["scoresDigest"], "evaluationDigest": event["evaluationDigest"],
    }]
