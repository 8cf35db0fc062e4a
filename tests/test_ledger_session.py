"""The server's checks before it relays a node's transaction (ChainSession, embedded chain,
no Flower): each wrong signed submitUpdate is refused as that node's, never relayed, kept in
the trail with its signed bytes, and the round still commits; replay across runs; sample
counts; the run digest and the evaluation digest on chain and in the trail."""

from dataclasses import replace

import numpy as np
import pytest
from eth_account import Account
from test_ledger_fl import ledger_config

from bflsim.aggregators import decide_round
from bflsim.hashing import digest_hex, run_digest, weights_digest
from bflsim.ledger import (
    REGISTRY_VERSION,
    TransactionReverted,
    TxContext,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.identity import (
    UPDATE_GAS_LIMIT,
    check_update_tx,
    encode_submit_update,
    node_identities,
    sign_tx,
)
from bflsim.ledger.session import ChainSession, ReceivedUpdate, make_run_facts
from bflsim.ledger.web3_ledger import EmbeddedLedger
from bflsim.runfolder import RunFolder, read_chain, read_rounds
from strategies.robust import refuse_unusable

NUM_NODES = 7
SAMPLES = 40
GLOBAL = [np.zeros((3, 2), np.float32)]
EVALUATION = b"\xe7" * 32


def start_session(tmp_path, name="run", run_facts=None):
    """A deployed registry with every node enrolled and its data (SAMPLES rows) registered."""
    config = ledger_config(federation={"tamper_nodes": []}, aggregator={"name": "fedavg"}, attack={"num_malicious": 0})
    run = RunFolder.create(tmp_path / name, config)
    session = ChainSession(config, EmbeddedLedger(), run.path, run_facts)
    session.setup()
    nodes = list(range(NUM_NODES))
    contexts = {i: TxContext.from_config(c, prefix="") for i, c in session.contexts(nodes).items()}
    identities = node_identities(config)
    digests = {i: bytes([0xD0 + i]) * 32 for i in nodes}
    signed = {i: sign_data_tx(identities[i], contexts[i], digests[i], 1, SAMPLES) for i in nodes}
    assert session.register_data(signed, digests, dict.fromkeys(nodes, SAMPLES)) == {}
    return session


@pytest.fixture
def session(tmp_path):
    return start_session(tmp_path)


def given(session, node):
    """The context the session gave ``node`` when it opened the round."""
    return session._given[node]


def update(session, node, server_round=1, *, weights=None, ctx=None, identity=None, signed_round=None,
           digest=None, samples=SAMPLES, reported=None, gas=UPDATE_GAS_LIMIT):
    weights = weights or [np.full((3, 2), node + 1, np.float32)]
    identity = identity or node_identities(session.config)[node]
    raw = sign_update_tx(identity, ctx or given(session, node), signed_round or server_round,
                         digest or weights_digest(weights), samples, gas=gas)
    return ReceivedUpdate(node=node, weights=weights, num_samples=reported or samples, raw_tx=raw)


def commit(session, server_round, cohort, updates):
    usable = [u for u in updates if u.refused is None]
    decision = decide_round(session.config.rule, [u.node for u in usable], [u.weights for u in usable], GLOBAL,
                            [u.num_samples for u in usable], session.config.aggregator.reject_factor)
    return session.commit_round(server_round, cohort, updates, decision, EVALUATION)


def paying(session, node):
    ctx = given(session, node)
    tx = {"chainId": ctx.chain_id, "nonce": ctx.nonce, "to": ctx.contract_address, "value": 5,
          "gas": UPDATE_GAS_LIMIT, "maxFeePerGas": ctx.max_fee_per_gas,
          "maxPriorityFeePerGas": ctx.max_priority_fee_per_gas,
          "data": encode_submit_update(ctx.run_digest, 1, weights_digest([np.full((3, 2), node + 1, np.float32)]),
                                       SAMPLES)}
    raw = bytes(Account.sign_transaction(tx, node_identities(session.config)[node].private_key).raw_transaction)
    return ReceivedUpdate(node=node, weights=[np.full((3, 2), node + 1, np.float32)], num_samples=SAMPLES, raw_tx=raw)


WRONG = {
    "to": lambda s: update(s, 1, ctx=replace(given(s, 1), contract_address="0x" + "42" * 20)),
    "chain_id": lambda s: update(s, 1, ctx=replace(given(s, 1), chain_id=1)),
    "nonce": lambda s: update(s, 1, ctx=replace(given(s, 1), nonce=given(s, 1).nonce + 1)),
    "round": lambda s: update(s, 1, signed_round=2),
    "signer": lambda s: update(s, 1, identity=node_identities(s.config)[4]),
    "update_digest": lambda s: update(s, 1, digest=b"\x07" * 32),
    "num_samples": lambda s: update(s, 1, samples=2**32 - 1),
    "run_digest": lambda s: update(s, 1, ctx=replace(given(s, 1), run_digest=b"\x4b" * 32)),
    "gas": lambda s: update(s, 1, gas=30_000),
    "value": lambda s: paying(s, 1),
    "malformed": lambda s: replace(update(s, 1), raw_tx=sign_tx(node_identities(s.config)[1], given(s, 1),
                                                                 b"\x12\x34\x56\x78", UPDATE_GAS_LIMIT)),
}


@pytest.mark.parametrize("check", list(WRONG))
def test_a_wrong_submit_update_is_refused_before_relay_and_the_round_commits(session, check):
    session.open_round(1, GLOBAL, [0, 1, 2])
    honest = [update(session, 0), update(session, 2)]
    wrong = WRONG[check](session)
    sent_before = len(session.ledger.records)

    session.relay_updates(1, [honest[0], wrong, honest[1]])

    assert (wrong.refusal, wrong.relayed) == (check, False), wrong.refused
    assert [u.refused for u in honest] == [None, None] and all(u.relayed for u in honest)
    assert [r.kind for r in session.ledger.records[sent_before:]] == ["submit_update"] * 2
    assert session.ledger.round_info(1).submitted == (0, 2)
    metrics = commit(session, 1, [0, 1, 2], [honest[0], wrong, honest[1]])  # does not revert
    assert session.ledger.round_info(1).status == "committed"
    assert session.ledger.round_info(1).accepted == (0, 2)
    assert session.ledger.node_info(session.addresses[1]).rejections == 0  # never on chain
    entry = next(u for u in read_rounds(session.run_dir)[-1]["updates"] if u["node"] == 1)
    assert (entry["refusal"], entry["relayed"], entry["tx"]) == (check, False, wrong.raw_tx.hex())
    assert entry["refused"] == wrong.refused
    assert TxContext.from_json(entry["context"]) == given(session, 1)
    # an auditor re-checks the refusal from the trail alone
    registered = session.registered_samples[1]
    recheck = check_update_tx(bytes.fromhex(entry["tx"]), node_address=session.addresses[1],
                              ctx=TxContext.from_json(entry["context"]), server_round=1,
                              update_digest=bytes.fromhex(entry["digest"][2:]), num_samples=registered)
    assert recheck == (wrong.refusal, wrong.refused)
    assert metrics["transactions"] == 4.0  # open, two submissions, commit


def test_a_2_pow_32_minus_1_sample_claim_is_refused_and_would_revert_on_chain(session):
    session.open_round(1, GLOBAL, [0, 1])
    greedy = update(session, 1, samples=2**32 - 1)

    session.relay_updates(1, [greedy])

    assert greedy.refusal == "num_samples"
    assert "claims 4294967295 samples; the node registered 40" in greedy.refused
    with pytest.raises(TransactionReverted, match=r"SampleCountMismatch\(.*claimed=4294967295, registered=40"):
        session.ledger.send_raw(greedy.raw_tx)


def test_a_reported_count_other_than_the_signed_one_is_refused(session):
    session.open_round(1, GLOBAL, [0])
    liar = update(session, 0, reported=SAMPLES + 1)

    session.relay_updates(1, [liar])

    assert liar.refusal == "num_samples" and "reported 41 samples; the node registered 40" in liar.refused


def test_a_registration_claiming_another_size_is_refused(tmp_path):
    config = ledger_config(federation={"tamper_nodes": []})
    session = ChainSession(config, EmbeddedLedger(), RunFolder.create(tmp_path, config).path)
    session.setup()
    contexts = {i: TxContext.from_config(c, prefix="") for i, c in session.contexts([0, 1]).items()}
    identities = node_identities(config)
    signed = {i: sign_data_tx(identities[i], contexts[i], b"\xd0" * 32, 1, 2**32 - 1 if i else 40) for i in (0, 1)}

    failed = session.register_data(signed, {0: b"\xd0" * 32, 1: b"\xd0" * 32}, {0: 40, 1: 40})

    assert list(failed) == [1] and "claims 4294967295 samples; the node holds 40" in failed[1]
    assert session.registered_samples == {0: 40}
    assert session.ledger.node_info(session.addresses[1]).num_samples == 0  # never relayed
    assert read_rounds(session.run_dir)[0]["refused_tx"] == {"1": signed[1].hex()}


def facts_without_zero_bytes(name):
    """Run facts whose run digest has no zero byte. The digest is deploy calldata (4 gas per
    zero byte, 16 per other): two runs whose digests have as many zero bytes use the same gas,
    so the base fee, and with it the fees each node is given, are the same in both."""
    for nonce in range(1, 100):
        facts = {"config": "0x00", "run_id": name, "run_nonce": f"0x{nonce:064x}"}
        if 0 not in run_digest(facts):
            return facts
    raise AssertionError("no nonce below 100 gives a run digest without zero bytes")


def test_an_update_signed_in_another_run_is_refused_and_reverts(tmp_path):
    run_a = start_session(tmp_path, "a", facts_without_zero_bytes("a"))
    run_b = start_session(tmp_path, "b", facts_without_zero_bytes("b"))
    for session in (run_a, run_b):
        session.open_round(1, GLOBAL, [0, 1])
    replayed = update(run_a, 0)  # node 0's round-1 update of run A
    assert (run_a.ledger.address, run_a.ledger.chain_id) == (run_b.ledger.address, run_b.ledger.chain_id)
    a, b = given(run_a, 0), given(run_b, 0)
    assert (a.nonce, a.max_fee_per_gas, a.max_priority_fee_per_gas) == (
        b.nonce, b.max_fee_per_gas, b.max_priority_fee_per_gas)  # only the run digest tells them apart

    run_b.relay_updates(1, [replayed])

    assert replayed.refusal == "run_digest" and not replayed.relayed
    with pytest.raises(TransactionReverted, match="WrongRun"):
        run_b.ledger.send_raw(replayed.raw_tx)
    assert run_b.ledger.round_info(1).submitted == ()


def test_a_non_finite_update_is_refused_by_the_strategy_and_never_relayed(session):
    session.open_round(1, GLOBAL, [0, 1, 2])
    poisoned = update(session, 1, weights=[np.full((3, 2), np.inf, np.float32)])
    nan = update(session, 2, weights=[np.array([[np.nan, 0], [0, 0], [0, 0]], np.float32)])
    honest = update(session, 0)
    refuse_unusable([honest, poisoned, nan], dict.fromkeys(range(NUM_NODES), SAMPLES))

    session.relay_updates(1, [honest, poisoned, nan])

    assert [u.refusal for u in (honest, poisoned, nan)] == [None, "non_finite", "non_finite"]
    assert session.ledger.round_info(1).submitted == (0,)
    commit(session, 1, [0, 1, 2], [honest, poisoned, nan])
    entries = {u["node"]: u for u in read_rounds(session.run_dir)[-1]["updates"]}
    assert entries[1]["tx"] == poisoned.raw_tx.hex() and entries[1]["digest"] == digest_hex(poisoned.digest)
    assert session.trail.blobs.get(poisoned.digest)[0][0, 0] == np.inf  # kept for the audit


def test_refuse_unusable_checks_sample_counts_without_a_ledger():
    ok = ReceivedUpdate(node=0, weights=[np.ones(2, np.float32)], num_samples=10)
    greedy = ReceivedUpdate(node=1, weights=[np.ones(2, np.float32)], num_samples=2**32 - 1)

    refuse_unusable([ok, greedy], {0: 10, 1: 10})

    assert ok.refused is None
    assert greedy.refusal == "num_samples" and "reported 4294967295 samples; node 1 holds 10" in greedy.refused


def test_the_run_digest_and_evaluation_digest_are_on_chain_and_in_the_trail(session):
    session.open_round(1, GLOBAL, [0])
    honest = update(session, 0)
    session.relay_updates(1, [honest])

    commit(session, 1, [0], [honest])

    chain = read_chain(session.run_dir)
    assert chain["registry_version"] == REGISTRY_VERSION
    assert chain["run_digest"] == digest_hex(run_digest(chain["run_facts"])) == digest_hex(session.run_digest)
    assert session.ledger.run_digest == session.run_digest
    assert chain["aggregator"] == session.ledger.aggregator != chain["operator"]
    [committed] = [e for e in session.ledger.events() if e.name == "RoundCommitted"]
    assert committed.args["evaluationDigest"] == EVALUATION
    assert read_rounds(session.run_dir)[-1]["evaluation_digest"] == digest_hex(EVALUATION)
    [configured] = [e for e in session.ledger.events() if e.name == "RunConfigured"]
    assert configured.args["runDigest"] == session.run_digest


def test_run_facts_name_the_config_data_split_and_a_fresh_nonce():
    config = ledger_config()
    x, y = np.ones((4, 2), np.float32), np.array([0, 1, 0, 1])
    sources = [{"path": "nsl-kdd/KDDTrain+.txt", "sha256": "ab" * 32}]

    first = make_run_facts(config, run_id="r1", git_commit="abc", sources=sources, x_test=x, y_test=y)
    second = make_run_facts(config, run_id="r1", git_commit="abc", sources=sources, x_test=x, y_test=y)

    assert set(first) == {"config", "git_commit", "data", "test_split", "run_nonce", "run_id"}
    assert all(isinstance(v, str) for v in first.values())
    assert first["run_nonce"] != second["run_nonce"] and len(first["run_nonce"]) == 66
    assert {k: v for k, v in first.items() if k != "run_nonce"} == {k: v for k, v in second.items() if k != "run_nonce"}
    assert run_digest(first) != run_digest(second)
    assert make_run_facts(config, run_id="r1", git_commit=None, sources=[], x_test=x, y_test=y)["data"] == ""
