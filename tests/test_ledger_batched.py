"""The registry's batched mode (``ledger.mode = "batched"``): the session's signature checks
(no Flower), then one real Flower + Ray run whose audit verifies every signature, tree and
proof against the roots on chain, and tampered copies of it that must fail.

The run: 7 nodes, 3 rounds, Krum, one Gaussian attacker (node 1 with this seed), node 2's data
tampered from round 2, revocation after 2 rejections, on the embedded chain.
"""

import json
import shutil

import numpy as np
import pytest
from test_ledger_fl import ledger_config

from bflsim.aggregators import decide_round
from bflsim.audit import audit_run
from bflsim.hashing import weights_digest
from bflsim.ledger import REGISTRY_VERSION, TxContext
from bflsim.ledger.batched import BatchedChainSession
from bflsim.ledger.factory import open_recorded_chain
from bflsim.ledger.identity import node_identities, sign_data_typed, sign_update_typed
from bflsim.ledger.merkle import update_leaf
from bflsim.ledger.replay import replay_transactions
from bflsim.ledger.session import ReceivedUpdate
from bflsim.ledger.web3_ledger import EmbeddedLedger
from bflsim.runfolder import RunFolder, read_chain, read_rounds, read_transactions

RUNTIME_BACKEND = {}  # the run below shares the warm Ray runtime (conftest.warm_runtime)
SAMPLES = 40


def batched_config(**sections):
    return ledger_config(**{**sections, "ledger": {"mode": "batched", **sections.get("ledger", {})}})


# --- the session, without Flower ---------------------------------------------------------------


@pytest.fixture
def session(tmp_path):
    config = batched_config(federation={"tamper_nodes": []}, aggregator={"name": "fedavg"},
                            attack={"num_malicious": 0})
    run = RunFolder.create(tmp_path / "run", config)
    session = BatchedChainSession(config, EmbeddedLedger(), run.path)
    session.setup()
    return session


def register(session, nodes=range(7), sizes=None):
    ctx = TxContext.from_config(session.contexts([0])[0], prefix="")
    keys = node_identities(session.config)
    digests = {i: bytes([0xD0 + i]) * 32 for i in nodes}
    signed = {i: sign_data_typed(keys[i], ctx, digests[i], 1_700_000_000 + i, SAMPLES) for i in nodes}
    return session.register_data(signed, digests, sizes or dict.fromkeys(nodes, SAMPLES),
                                 {i: 1_700_000_000 + i for i in nodes})


def signed_update(session, node, server_round=1, *, weights=None, signed_digest=None, samples=SAMPLES, key=None):
    weights = weights or [np.full((3, 2), node, np.float32)]
    ctx = TxContext.from_config(session.contexts([node])[node], prefix="")
    key = key or node_identities(session.config)[node]
    signature = sign_update_typed(key, ctx, server_round, signed_digest or weights_digest(weights), samples)
    return ReceivedUpdate(node=node, weights=weights, num_samples=SAMPLES, raw_tx=signature)


def test_the_session_sends_no_node_transaction_and_commits_roots(session):
    assert register(session) == {}
    kinds = [r.kind for r in session.ledger.records]
    assert kinds == ["deploy", "set_aggregator", "register_node_root", "register_data_root"]  # no node funded
    assert session.ledger.mode() == "batched"
    record = read_rounds(session.run_dir)[0]
    assert sorted(record["signatures"]) == [str(i) for i in range(7)] and record["data_root"].startswith("0x")


def test_a_data_signature_for_another_size_is_refused_and_left_out_of_the_tree(session):
    failed = register(session, sizes={**dict.fromkeys(range(7), SAMPLES), 3: SAMPLES + 1})

    assert set(failed) == {3} and "does not recover to node 3's key" in failed[3]
    assert "41 samples" in failed[3] and 3 not in session.registered_samples
    contract = session.ledger._require_contract()
    assert contract.functions.dataCount().call() == 6


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"server_round": 2}, "signature"),  # signed for another round
        ({"signed_digest": b"\x01" * 32}, "signature"),  # signed another digest than the weights received
        ({"samples": SAMPLES + 1}, "signature"),  # signed another weight than registered
        ({"key": node_identities(batched_config())[4]}, "signature"),  # node 4 signs for node 0
    ],
)
def test_an_update_whose_signature_does_not_verify_is_refused_not_put_in_the_tree(session, kwargs, check):
    register(session)
    session.open_round(1, [np.zeros((3, 2), np.float32)], [0, 5])
    bad, good = signed_update(session, 0, **kwargs), signed_update(session, 5)

    session.relay_updates(1, [bad, good])

    assert (bad.refusal, good.refused) == (check, None)
    assert "does not recover to node 0's key" in bad.refused


def test_a_resumed_session_rebuilds_the_data_and_the_revocations_the_chain_does_not_hold(tmp_path):
    config = batched_config(federation={"tamper_nodes": []}, aggregator={"name": "krum"}, attack={"num_malicious": 0},
                            ledger={"mode": "batched", "max_rejections": 1})
    run = RunFolder.create(tmp_path / "run", config)
    first = BatchedChainSession(config, EmbeddedLedger(), run.path)
    first.setup()
    register(first)
    start = [np.zeros((3, 2), np.float32)]
    first.open_round(1, start, list(range(7)))
    updates = [signed_update(first, i, weights=[np.full((3, 2), 1000.0 if i == 3 else 0.01 * i, np.float32)])
               for i in range(7)]
    first.relay_updates(1, updates)
    decision = decide_round(config.rule, list(range(7)), [u.weights for u in updates], start, [SAMPLES] * 7,
                            config.aggregator.reject_factor)
    first.commit_round(1, list(range(7)), updates, decision)
    assert 3 not in decision.accepted and first.revoked == {3: 1}

    second = BatchedChainSession(config, EmbeddedLedger(), run.path)  # a new process: a fresh chain
    second.resume()

    assert (second.revoked, second.rejections) == (first.revoked, first.rejections)
    assert second.data == first.data and second.registered_samples == first.registered_samples
    assert second.active_nodes(list(range(7))) == [0, 1, 2, 4, 5, 6]
    second.open_round(2, decision.new_weights, [0, 1, 2])  # the replayed chain goes on from round 1's commit
    assert second.ledger.round_info(2).cohort_size == 3


# --- one real run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    return run_federated(batched_config(), tmp_path_factory.mktemp("runs")).path


@pytest.fixture
def copy_of(batched_run, tmp_path):
    target = tmp_path / batched_run.name
    shutil.copytree(batched_run, target)
    return target


def test_a_batched_run_sends_two_transactions_a_round_and_revokes_off_chain(batched_run):
    manifest = json.loads((batched_run / "manifest.json").read_text())
    transactions = read_transactions(batched_run)
    rounds = {r["round"]: r for r in read_rounds(batched_run)}

    assert manifest["status"] == "complete" and read_chain(batched_run)["mode"] == "batched"
    assert [t["kind"] for t in transactions if t["round"] >= 1] == ["open_batch", "commit_batch"] * 3
    assert all(t["node"] is None for t in transactions)  # no node sent anything
    per_round = [sum(t["gas_used"] for t in transactions if t["round"] == r) for r in (1, 2, 3)]
    assert max(per_round) < 200_000, per_round
    attacker = manifest["malicious_nodes"][0]
    assert attacker in rounds[1]["candidates"] and attacker not in rounds[1]["accepted"]
    assert rounds[2]["revoked"] == [attacker] and attacker not in rounds[3]["cohort"]
    assert 2 not in rounds[3]["cohort"]  # its data failed VerifyIntegrity in round 2


def test_the_audit_of_a_batched_run_verifies_signatures_trees_and_proofs(batched_run):
    report = audit_run(batched_run)

    assert report.exit_code == 0, "\n".join(report.lines())
    assert report.registry_version == REGISTRY_VERSION


def test_every_stored_proof_verifies_with_the_registrys_own_code(batched_run):
    info = read_chain(batched_run)
    record = read_rounds(batched_run)[1]
    with open_recorded_chain(info) as (ledger, _):
        replay_transactions(ledger, read_transactions(batched_run))
        ledger.attach(info["contract"])
        root = ledger.round_info(1).updates_root
        samples = read_rounds(batched_run)[0]["num_samples"]
        for entry in record["updates"]:
            if entry.get("refused"):
                continue
            def leaf(accepted, entry=entry):
                return update_leaf(entry["node"], bytes.fromhex(entry["digest"][2:]), samples[str(entry["node"])],
                                   bytes.fromhex(entry["signature"]), accepted)

            proof = [bytes.fromhex(h[2:]) for h in entry["proof"]]
            accepted = entry["node"] in record["accepted"]
            assert ledger.proves(root, leaf(accepted), proof)
            assert not ledger.proves(root, leaf(not accepted), proof)  # nobody can claim the other outcome


def edit_round(run_dir, server_round, change):
    path = run_dir / "trail" / "rounds.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if record["round"] == server_round:
            change(record)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _forge_signature(record):
    entry = next(u for u in record["updates"] if not u.get("refused"))
    entry["signature"] = entry["signature"][:-4] + ("1b00" if not entry["signature"].endswith("1b00") else "1c00")


@pytest.mark.parametrize(
    ("server_round", "change", "expected"),
    [
        (1, _forge_signature, "is not signed by its key"),
        (1, lambda r: r["accepted"].pop(), "hash to"),  # the tree's accepted flags no longer match
        (2, lambda r: r["cohort"].append(6) if 6 not in r["cohort"] else r["cohort"].remove(6), "cohort"),
        (0, lambda r: r["timestamps"].update({"0": r["timestamps"]["0"] + 1}), "data registration is not signed"),
    ],
)
def test_a_tampered_trail_fails_the_audit(copy_of, server_round, change, expected):
    edit_round(copy_of, server_round, change)

    report = audit_run(copy_of)

    assert report.exit_code == 1
    assert expected in " | ".join(p for s in report.sections for p in s.problems)
