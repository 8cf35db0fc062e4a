"""FederatedRegistry (v4, per-node mode) through the Ledger interface, the same tests on two chains.

``ledger`` is an EmbeddedLedger (py-evm, in process) or an RpcLedger on a fresh contract on
one anvil node that this module starts on 127.0.0.1 and stops afterwards. Node transactions
are signed offline with the node's key and relayed, as in a federated round. Every node
registers a data batch of NUM_SAMPLES rows first: its updates must claim that count.

The closed loop's part (last section): devices 100-103 behind nodes 0 and 1, device 104
behind both; alerts are signed offline by the edge node's key and relayed, as in a run.
"""


from dataclasses import replace

import pytest
from conftest import require_anvil

from bflsim.ledger import (
    ALERT_GAS_LIMIT,
    UPDATE_GAS_LIMIT,
    AnvilNode,
    EmbeddedLedger,
    NodeIdentity,
    RpcLedger,
    TransactionReverted,
    derive_identities,
    sign_alert_tx,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.web3_ledger import Web3Ledger
from bflsim.traffic import window_digest

GAS_BUDGET_SUBMIT_UPDATE = 60_000
MAX_REJECTIONS = 2
NUM_NODES = 4
GLOBAL_0, GLOBAL_1, GLOBAL_2 = b"\x10" * 32, b"\x11" * 32, b"\x12" * 32
SCORES = b"\x5c" * 32
EVALUATION = b"\xe7" * 32
RUN = b"\x4a" * 32
NUM_SAMPLES = 100


@pytest.fixture(scope="module")
def anvil_url():
    require_anvil()
    node = AnvilNode()
    url = node.start()
    yield url
    process = node.process
    node.stop()
    assert process.poll() is not None, "anvil still running after stop()"


@pytest.fixture(params=["embedded", "anvil"])
def ledger(request):
    if request.param == "embedded":
        chain = EmbeddedLedger()
    else:
        chain = RpcLedger(request.getfixturevalue("anvil_url"), chain_id=31337)
    chain.deploy(max_rejections=MAX_REJECTIONS, run_digest=RUN)
    return chain


@pytest.fixture
def nodes(ledger):
    identities = derive_identities(seed=2024, num_nodes=NUM_NODES)
    ledger.enroll(identities, fund_wei=10**18)
    for node in identities:
        register_data(ledger, node, bytes([0xD0 + node.index]) * 32)
    return identities


def register_data(ledger, node, digest, timestamp=1_700_000_000, num_samples=NUM_SAMPLES):
    raw = sign_data_tx(node, ledger.tx_context(node.address), digest, timestamp, num_samples)
    return ledger.send_raw(raw, kind="register_data")


@pytest.fixture
def stranger(ledger):
    """A funded account that is not a registered node."""
    identity = NodeIdentity(9, bytes.fromhex("9" * 64))
    ledger.fund([identity.address], 10**18)
    return identity


def submit(ledger, node, server_round, digest=None, num_samples=NUM_SAMPLES):
    ctx = ledger.tx_context(node.address)
    digest = digest or bytes([node.index + 1]) * 32
    return ledger.send_raw(sign_update_tx(node, ctx, server_round, digest, num_samples),
                           kind="submit_update")


def signed_call(ledger, identity, fn, *args):
    """A contract call signed with ``identity``'s key (for calls the server must not make)."""
    return ledger.sign_call(identity, fn, *args)


def commit(ledger, server_round, new_global, accepted):
    return ledger.commit_round(server_round, new_global, accepted, SCORES, EVALUATION)


def reverts_with(ledger, raw, error):
    with pytest.raises(TransactionReverted, match=error) as info:
        ledger.send_raw(raw)
    return info.value


# --- setup and roles ---------------------------------------------------------------------


def test_deploy_records_run_owner_separate_aggregator_and_threshold(ledger):
    contract = ledger._require_contract()

    assert contract.functions.owner().call() == ledger.operator
    assert contract.functions.aggregator().call() == ledger.aggregator != ledger.operator
    assert bytes(contract.functions.runDigest().call()) == RUN == ledger.run_digest
    assert ledger.max_rejections() == MAX_REJECTIONS
    assert [r.kind for r in ledger.records] == ["deploy", "set_aggregator"]
    configured = [e for e in ledger.events() if e.name == "RunConfigured"]
    assert [(e.args["runDigest"], e.args["maxRejections"]) for e in configured] == [(RUN, MAX_REJECTIONS)]


def test_ownership_moves_in_two_steps(ledger, nodes, stranger):
    contract = ledger._require_contract()
    new_owner = nodes[0]
    ledger.transfer_ownership(new_owner.address)

    assert contract.functions.owner().call() == ledger.operator  # not yet
    assert contract.functions.pendingOwner().call() == new_owner.address
    reverts_with(ledger, signed_call(ledger, stranger, "acceptOwnership"), "NotPendingOwner")
    ledger.send_raw(signed_call(ledger, new_owner, "acceptOwnership"))

    assert contract.functions.owner().call() == new_owner.address
    assert contract.functions.pendingOwner().call() == "0x" + "0" * 40
    with pytest.raises(TransactionReverted, match="NotOwner"):
        ledger.set_aggregator(ledger.operator)
    events = [(e.name, e.args["previousOwner"], e.args["newOwner"]) for e in ledger.events()
              if e.name.startswith("Ownership")]
    assert events[1:] == [("OwnershipTransferStarted", ledger.operator, new_owner.address),
                          ("OwnershipTransferred", ledger.operator, new_owner.address)]


def test_only_the_owner_names_the_aggregator(ledger, nodes):
    reverts_with(ledger, signed_call(ledger, nodes[0], "setAggregator", nodes[0].address), "NotOwner")
    reverts_with(ledger, signed_call(ledger, nodes[0], "transferOwnership", nodes[0].address), "NotOwner")
    with pytest.raises(TransactionReverted, match="ZeroAddress"):
        ledger.set_aggregator("0x" + "0" * 40)


def test_the_owner_cannot_open_rounds(ledger, nodes):
    raw = ledger._call_data("openRound", 1, GLOBAL_0, [0])
    with pytest.raises(TransactionReverted, match="NotAggregator"):
        ledger._transact("open_round", raw, to=ledger.address)  # sent from the owner's key


def test_register_nodes(ledger, nodes):
    infos = [ledger.node_info(n.address) for n in nodes]

    assert [(i.index, i.registered, i.active, i.rejections) for i in infos] == [
        (n.index, True, True, 0) for n in nodes
    ]
    assert ledger.active_nodes() == (0, 1, 2, 3)
    assert [e.args["index"] for e in ledger.events() if e.name == "NodeRegistered"] == [0, 1, 2, 3]


def test_register_nodes_by_non_owner_reverts(ledger, nodes, stranger):
    raw = signed_call(ledger, nodes[0], "registerNodes", [stranger.address], [9])

    reverts_with(ledger, raw, "NotOwner")


def test_register_taken_index_reverts(ledger, nodes, stranger):
    with pytest.raises(TransactionReverted, match=r"IndexTaken\(index=1\)"):
        ledger.register_nodes({1: stranger.address})


def test_no_node_joins_after_round_1_opened(ledger, nodes, stranger):
    ledger.open_round(1, GLOBAL_0, [0, 1])

    with pytest.raises(TransactionReverted, match=r"RegistrationClosed\(lastRound=1\)"):
        ledger.register_nodes({9: stranger.address})


# --- data registration -------------------------------------------------------------------


def test_register_data_stores_latest_digest_and_sample_count(ledger, nodes):
    node = nodes[2]
    for timestamp, digest, rows in [(1_700_000_050, b"\xd1" * 32, 50), (1_700_000_060, b"\xd2" * 32, 70)]:
        record = register_data(ledger, node, digest, timestamp, rows)

    assert record.sender == node.address
    assert ledger.data_digest(node.address) == (b"\xd2" * 32, 1_700_000_060)
    assert ledger.node_info(node.address).num_samples == 70
    events = [e for e in ledger.events() if e.name == "DataRegistered" and e.args["node"] == node.address]
    assert [(e.args["digest"], e.args["timestamp"], e.args["numSamples"]) for e in events] == [
        (bytes([0xD2]) * 32, 1_700_000_000, NUM_SAMPLES),
        (b"\xd1" * 32, 1_700_000_050, 50),
        (b"\xd2" * 32, 1_700_000_060, 70),
    ]


def test_register_data_with_zero_samples_reverts(ledger, nodes):
    raw = sign_data_tx(nodes[0], ledger.tx_context(nodes[0].address), b"\x01" * 32, 1, 0)

    reverts_with(ledger, raw, "ZeroSamples")


def test_register_data_by_unregistered_account_reverts(ledger, nodes, stranger):
    raw = sign_data_tx(stranger, ledger.tx_context(stranger.address), b"\x01" * 32, 1, 1)

    reverts_with(ledger, raw, "UnknownNode")


# --- rounds ------------------------------------------------------------------------------


def test_open_round_records_cohort(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 2, 3])

    info = ledger.round_info(1)
    assert (info.status, info.cohort, info.submitted, info.global_digest) == (
        "open", (0, 2, 3), (), GLOBAL_0
    )
    assert ledger.round_info(2).status == "none"
    assert ledger._require_contract().functions.lastRound().call() == 1


def test_open_round_by_non_aggregator_reverts(ledger, nodes):
    reverts_with(ledger, signed_call(ledger, nodes[0], "openRound", 1, GLOBAL_0, [0]), "NotAggregator")


def test_rounds_open_in_sequence_once_each(ledger, nodes):
    with pytest.raises(TransactionReverted, match=r"RoundOutOfOrder\(round=2, expected=1\)"):
        ledger.open_round(2, GLOBAL_0, [0])
    with pytest.raises(TransactionReverted, match=r"RoundOutOfOrder\(round=0, expected=1\)"):
        ledger.open_round(0, GLOBAL_0, [0])
    ledger.open_round(1, GLOBAL_0, [0, 1])

    with pytest.raises(TransactionReverted, match=r"RoundOutOfOrder\(round=1, expected=2\)"):
        ledger.open_round(1, GLOBAL_0, [0])
    with pytest.raises(TransactionReverted, match=r"PreviousRoundOpen\(round=1\)"):
        ledger.open_round(2, GLOBAL_0, [0])


def test_a_round_opens_from_the_previous_commit(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0])
    submit(ledger, nodes[0], 1)
    commit(ledger, 1, GLOBAL_1, [0])

    with pytest.raises(TransactionReverted, match="GlobalDigestMismatch") as info:
        ledger.open_round(2, GLOBAL_2, [0])
    assert "0x" + GLOBAL_1.hex() in str(info.value)
    ledger.open_round(2, GLOBAL_1, [0])
    assert ledger.round_info(2).global_digest == GLOBAL_1


def test_a_cohort_holds_active_nodes_only(ledger, nodes):
    with pytest.raises(TransactionReverted, match=r"InactiveInCohort\(round=1, index=7\)"):
        ledger.open_round(1, GLOBAL_0, [0, 7])  # 7: never registered
    with pytest.raises(TransactionReverted, match="EmptyCohort"):
        ledger.open_round(1, GLOBAL_0, [])
    revoke(ledger, nodes, 3)

    with pytest.raises(TransactionReverted, match=r"InactiveInCohort\(round=3, index=3\)"):
        ledger.open_round(3, GLOBAL_1, [0, 3])


def test_submit_by_cohort_member_is_relayed_as_the_node(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2])
    node = nodes[1]

    record = submit(ledger, node, 1, digest=b"\xab" * 32)

    assert record.status == 1 and record.sender == node.address  # msg.sender is the node
    tx = ledger.w3.eth.get_transaction(record.tx_hash)
    assert tx["from"] == node.address and tx["to"] == ledger.address
    event = [e for e in ledger.events() if e.name == "UpdateSubmitted"][-1]
    assert event.args == {"round": 1, "node": node.address, "updateDigest": b"\xab" * 32,
                          "numSamples": NUM_SAMPLES}
    assert ledger.round_info(1).submitted == (1,)


@pytest.mark.parametrize("claimed", [NUM_SAMPLES + 1, 2**32 - 1, 0])
def test_submit_claiming_another_sample_count_reverts(ledger, nodes, claimed):
    ledger.open_round(1, GLOBAL_0, [0, 1])

    error = reverts_with(ledger, sign_update_tx(nodes[0], ledger.tx_context(nodes[0].address), 1,
                                                b"\x01" * 32, claimed), "SampleCountMismatch")

    assert f"claimed={claimed}, registered={NUM_SAMPLES}" in str(error)
    assert ledger.round_info(1).submitted == ()


def test_submit_without_registered_data_reverts(ledger):
    node = derive_identities(seed=7, num_nodes=1)[0]
    ledger.enroll([node])
    ledger.open_round(1, GLOBAL_0, [0])

    reverts_with(ledger, sign_update_tx(node, ledger.tx_context(node.address), 1, b"\x01" * 32, 0),
                 r"SampleCountMismatch\(.*claimed=0, registered=0")


def test_submit_for_another_run_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0])
    ctx = replace(ledger.tx_context(nodes[0].address), run_digest=b"\x4b" * 32)

    error = reverts_with(ledger, sign_update_tx(nodes[0], ctx, 1, b"\x01" * 32, NUM_SAMPLES), "WrongRun")

    assert "0x" + "4b" * 32 in str(error)


def test_submit_by_non_member_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])

    error = reverts_with(ledger, sign_update_tx(nodes[3], ledger.tx_context(nodes[3].address),
                                                1, b"\x01" * 32, NUM_SAMPLES), "NotInCohort")

    assert error.error == "NotInCohort" and nodes[3].address in str(error)
    assert error.tx_hash.startswith("0x") and error.tx_hash in str(error)


def test_submit_twice_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)

    with pytest.raises(TransactionReverted, match="AlreadySubmitted"):
        submit(ledger, nodes[0], 1)


def test_submit_to_unopened_or_committed_round_reverts(ledger, nodes):
    with pytest.raises(TransactionReverted, match=r"RoundNotOpen\(round=5\)"):
        submit(ledger, nodes[0], 5)
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)
    commit(ledger, 1, GLOBAL_1, [0])

    with pytest.raises(TransactionReverted, match="RoundNotOpen"):
        submit(ledger, nodes[1], 1)


def test_submit_by_unregistered_account_reverts(ledger, nodes, stranger):
    ledger.open_round(1, GLOBAL_0, [0])

    reverts_with(ledger, sign_update_tx(stranger, ledger.tx_context(stranger.address), 1,
                                        b"\x01" * 32, 1), "UnknownNode")


def test_gas_per_submit_update_within_budget(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2, 3])
    contexts = ledger.tx_contexts({n.index: n.address for n in nodes})
    raws = [sign_update_tx(n, contexts[n.index], 1, bytes([0xF0 + n.index]) * 32, NUM_SAMPLES)
            for n in nodes]

    records = ledger.send_raw_many(raws, kind="submit_update")

    assert [r.status for r in records] == [1, 1, 1, 1]
    gas = [r.gas_used for r in records]
    assert max(gas) <= GAS_BUDGET_SUBMIT_UPDATE, gas
    assert UPDATE_GAS_LIMIT <= GAS_BUDGET_SUBMIT_UPDATE  # nodes sign with the budget as limit
    assert ledger.round_info(1).submitted == (0, 1, 2, 3)


# --- commit, reputation, revocation ------------------------------------------------------


def revoke(ledger, nodes, index):
    """Rounds 1 and 2 with node ``index`` submitting and rejected: revoked at the threshold."""
    opened = GLOBAL_0
    for server_round in (1, 2):
        ledger.open_round(server_round, opened, [index])
        submit(ledger, nodes[index], server_round)
        commit(ledger, server_round, GLOBAL_1, [])
        opened = GLOBAL_1


def test_commit_round_records_outcome(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2])
    for node in nodes[:3]:
        submit(ledger, node, 1)

    commit(ledger, 1, GLOBAL_1, [0, 2])

    info = ledger.round_info(1)
    assert (info.status, info.submitted, info.accepted) == ("committed", (0, 1, 2), (0, 2))
    assert (info.new_global_digest, info.scores_digest) == (GLOBAL_1, SCORES)
    assert [ledger.node_info(n.address).rejections for n in nodes] == [0, 1, 0, 0]


def test_commit_by_non_aggregator_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0])
    submit(ledger, nodes[0], 1)

    raw = signed_call(ledger, nodes[0], "commitRound", 1, GLOBAL_1, [0], [0], SCORES, EVALUATION)

    reverts_with(ledger, raw, "NotAggregator")
    assert ledger.round_info(1).status == "open"


def test_commit_twice_or_accepting_a_non_submitter_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)

    with pytest.raises(TransactionReverted, match="AcceptedWithoutSubmission"):
        commit(ledger, 1, GLOBAL_1, [0, 1])
    commit(ledger, 1, GLOBAL_1, [0])
    with pytest.raises(TransactionReverted, match="RoundNotOpen"):
        commit(ledger, 1, GLOBAL_1, [0])


def test_rejections_count_and_revoke_at_threshold(ledger, nodes):
    malicious = nodes[3]
    opened = GLOBAL_0
    for server_round in (1, 2):
        ledger.open_round(server_round, opened, [0, 1, 3])
        for node in (nodes[0], nodes[1], malicious):
            submit(ledger, node, server_round)
        commit(ledger, server_round, GLOBAL_1, [0, 1])
        opened = GLOBAL_1
        # a cohort member that did not submit (dropout) is not rejected
        assert ledger.node_info(nodes[2].address).rejections == 0

    info = ledger.node_info(malicious.address)
    assert (info.rejections, info.active, info.registered) == (MAX_REJECTIONS, False, True)
    assert ledger.active_nodes() == (0, 1, 2)
    revoked = [e for e in ledger.events() if e.name == "NodeRevoked"]
    assert [(e.args["node"], e.args["round"], e.args["rejections"]) for e in revoked] == [
        (malicious.address, 2, MAX_REJECTIONS)
    ]


def test_revoked_node_cannot_submit_or_register_data(ledger, nodes):
    revoked = nodes[3]
    revoke(ledger, nodes, 3)
    ledger.open_round(3, GLOBAL_1, [0])

    with pytest.raises(TransactionReverted, match="NodeIsRevoked"):
        submit(ledger, revoked, 3)
    raw = sign_data_tx(revoked, ledger.tx_context(revoked.address), b"\x01" * 32, 1, 1)
    reverts_with(ledger, raw, "NodeIsRevoked")
    assert submit(ledger, nodes[0], 3).status == 1


def test_set_aggregator_hands_over_rounds(ledger, nodes):
    aggregator = nodes[0]  # any funded key will do
    ledger.set_aggregator(aggregator.address)

    with pytest.raises(TransactionReverted, match="NotAggregator"):
        ledger.open_round(1, GLOBAL_0, [1])
    record = ledger.send_raw(signed_call(ledger, aggregator, "openRound", 1, GLOBAL_0, [1]))
    assert record.status == 1 and ledger.round_info(1).cohort == (1,)


# --- replay across runs ------------------------------------------------------------------


def test_an_update_signed_in_one_run_reverts_in_another():
    """Two embedded runs share chain id, registry address and node keys; only the run digest
    differs, and it is enough."""
    signed = {}
    for run, run_digest in (("A", b"\xaa" * 32), ("B", b"\xbb" * 32)):
        chain = EmbeddedLedger()
        chain.deploy(max_rejections=MAX_REJECTIONS, run_digest=run_digest)
        node = derive_identities(seed=2024, num_nodes=1)[0]
        chain.enroll([node])
        register_data(chain, node, b"\xd0" * 32)
        chain.open_round(1, GLOBAL_0, [0])
        signed[run] = (chain, sign_update_tx(node, chain.tx_context(node.address), 1, b"\x01" * 32, NUM_SAMPLES))
    (chain_a, raw_a), (chain_b, _) = signed["A"], signed["B"]
    assert chain_a.address == chain_b.address and chain_a.chain_id == chain_b.chain_id

    error = reverts_with(chain_b, raw_a, "WrongRun")

    assert "0x" + "aa" * 32 in str(error)
    assert chain_b.round_info(1).submitted == ()


# --- audit trail -------------------------------------------------------------------------


def test_events_cover_every_step(ledger, nodes):
    start = ledger.w3.eth.block_number + 1
    node = nodes[0]
    register_data(ledger, node, b"\xd0" * 32, 5)
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)
    submit(ledger, nodes[1], 1)
    commit(ledger, 1, GLOBAL_1, [0])

    events = ledger.events(from_block=start)

    assert [e.name for e in events] == [
        "DataRegistered", "RoundOpened", "UpdateSubmitted", "UpdateSubmitted",
        "NodeRejected", "RoundCommitted",
    ]
    assert events[0].args == {"node": node.address, "digest": b"\xd0" * 32, "timestamp": 5,
                              "numSamples": NUM_SAMPLES}
    assert events[1].args == {"round": 1, "globalDigest": GLOBAL_0, "cohort": (0, 1)}
    assert events[5].args == {"round": 1, "newGlobalDigest": GLOBAL_1, "accepted": (0,),
                              "scoresDigest": SCORES, "evaluationDigest": EVALUATION}
    assert all(e.tx_hash.startswith("0x") and e.block >= start for e in events)
    assert [r.kind for r in ledger.records[-5:]] == [
        "register_data", "open_round", "submit_update", "submit_update", "commit_round"
    ]
    assert {r.sender for r in ledger.records if r.kind in ("open_round", "commit_round")} == {ledger.aggregator}
    assert all(r.gas_used > 0 and r.seconds > 0 and r.block > 0 for r in ledger.records)


def test_the_embedded_chain_reads_the_same_events_as_get_logs(ledger, nodes):
    if not isinstance(ledger, EmbeddedLedger):
        pytest.skip("the block-by-block reader is the embedded chain's")
    register_data(ledger, nodes[0], b"\xd1" * 32, 7)
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)
    submit(ledger, nodes[1], 1)
    commit(ledger, 1, GLOBAL_1, [0])

    every = ledger.events()
    assert {"NodeRegistered", "DataRegistered", "NodeRejected", "RoundCommitted"} <= {e.name for e in every}
    for start in (0, ledger.w3.eth.block_number - 2):
        assert ledger.events(from_block=start) == Web3Ledger._events(ledger, start)
    [committed] = ledger._round_events("RoundCommitted", 1)
    assert committed.args["accepted"] == (0,)
    by_get_logs = [e for e in Web3Ledger._events(ledger, 0) if e.name == "UpdateSubmitted" and e.args["round"] == 1]
    assert ledger._round_events("UpdateSubmitted", 1) == by_get_logs
    assert len(ledger._round_events("UpdateSubmitted", 1)) == 2 and ledger._round_events("UpdateSubmitted", 2) == []


# --- the closed loop: devices, alerts, quarantine, disputes (v4) -------------------------


WINDOW = window_digest(100, [5, 6, 7], [True, True, False])
BEHIND = [(100, 0), (101, 0), (102, 1), (103, 1), (104, 0), (104, 1)]


@pytest.fixture
def devices(ledger, nodes):
    ledger.set_quarantine_rule(alerts_per_node=2, quorum=1)
    ledger.register_devices(BEHIND)
    return BEHIND


def alert(ledger, node, device, digest=WINDOW, score=2, run=None):
    ctx = ledger.tx_context(node.address)
    if run is not None:
        ctx = replace(ctx, run_digest=run)
    return ledger.send_raw(sign_alert_tx(node, ctx, device, digest, score), kind="alert")


def test_a_device_is_quarantined_at_the_rules_count_of_alerts_from_its_edge_node(ledger, nodes, devices):
    first = alert(ledger, nodes[0], 100)
    assert ledger.device_info(100, 0) == ledger.device_info(100, 0).__class__(100, 0, True, False, 0, True, 1)
    second = alert(ledger, nodes[0], 100)

    info = ledger.device_info(100, 0)
    assert (info.quarantined, info.alerters, info.alerts) == (True, 1, 2)
    assert ledger.device_info(101, 0).quarantined is False  # its neighbour is untouched
    events = [e for e in ledger.events() if e.name in ("DeviceAlerted", "DeviceQuarantined")]
    assert [(e.name, e.args.get("alerts")) for e in events] == [
        ("DeviceAlerted", 1), ("DeviceAlerted", 2), ("DeviceQuarantined", None)]
    assert events[0].args == {"device": 100, "node": nodes[0].address, "windowDigest": WINDOW, "score": 2,
                              "alerts": 1}
    assert events[2].args == {"device": 100, "alerters": 1}
    assert max(first.gas_used, second.gas_used) < ALERT_GAS_LIMIT
    print(f"alert gas: {first.gas_used:,} (counted), {second.gas_used:,} (quarantines)")


def test_a_quorum_needs_that_many_edge_nodes(ledger, nodes):
    ledger.set_quarantine_rule(alerts_per_node=1, quorum=2)
    ledger.register_devices(BEHIND)

    alert(ledger, nodes[0], 104)
    alert(ledger, nodes[0], 104)  # more alerts from the same edge node do not make a quorum
    assert ledger.device_info(104, 0).quarantined is False
    alert(ledger, nodes[1], 104)

    assert (ledger.device_info(104, 1).quarantined, ledger.device_info(104, 1).alerters) == (True, 2)


@pytest.mark.parametrize("who, device, error", [
    (2, 100, "DeviceNotBehindNode"),  # node 2 fronts no device
    (1, 100, "DeviceNotBehindNode"),  # device 100 is behind node 0 only
    (0, 999, "UnknownDevice"),
])
def test_an_alert_about_a_device_not_behind_the_edge_node_reverts(ledger, nodes, devices, who, device, error):
    ctx = ledger.tx_context(nodes[who].address)
    reverts_with(ledger, sign_alert_tx(nodes[who], ctx, device, WINDOW, 2), error)


def test_alerts_are_refused_after_quarantine_from_strangers_and_for_another_run(ledger, nodes, devices, stranger):
    alert(ledger, nodes[0], 100)
    alert(ledger, nodes[0], 100)

    with pytest.raises(TransactionReverted, match="DeviceIsQuarantined"):
        alert(ledger, nodes[0], 100)
    with pytest.raises(TransactionReverted, match="UnknownNode"):
        alert(ledger, stranger, 100)
    with pytest.raises(TransactionReverted, match="WrongRun"):
        alert(ledger, nodes[0], 101, run=b"\x01" * 32)


def test_without_a_rule_alerts_revert_and_a_rule_needs_positive_counts(ledger, nodes):
    ledger.register_devices([(100, 0)])
    with pytest.raises(TransactionReverted, match="NoQuarantineRule"):
        alert(ledger, nodes[0], 100)
    with pytest.raises(TransactionReverted, match="InvalidQuarantineRule"):
        ledger.set_quarantine_rule(alerts_per_node=0, quorum=1)
    with pytest.raises(TransactionReverted, match="InvalidQuarantineRule"):
        ledger.set_quarantine_rule(alerts_per_node=2, quorum=0)


def test_devices_register_once_per_edge_node_behind_registered_nodes_by_the_owner(ledger, nodes, devices, stranger):
    with pytest.raises(TransactionReverted, match="DeviceAlreadyBehind"):
        ledger.register_devices([(100, 0)])
    with pytest.raises(TransactionReverted, match="UnknownEdgeNode"):
        ledger.register_devices([(200, 7)])
    reverts_with(ledger, ledger.sign_call(stranger, "registerDevices", [200], [0]), "NotOwner")
    assert ledger.w3.eth.contract(address=ledger.address, abi=ledger.artifact.abi).functions.deviceCount().call() == 5


def test_a_disputed_alert_is_a_rejection_and_false_alerts_revoke_the_edge_node(ledger, nodes, devices):
    with pytest.raises(TransactionReverted, match="NotAggregator"):
        ledger.send_raw(ledger.sign_call(nodes[0], "disputeAlert", 100, 0, WINDOW))
    for _ in range(MAX_REJECTIONS):
        ledger.dispute_alert(100, 0, WINDOW)

    info = ledger.node_info(nodes[0].address)
    assert (info.rejections, info.active) == (MAX_REJECTIONS, False)
    disputes = [e.args for e in ledger.events() if e.name == "AlertDisputed"]
    assert disputes == [{"device": 100, "node": nodes[0].address, "windowDigest": WINDOW, "rejections": k}
                        for k in range(1, MAX_REJECTIONS + 1)]
    assert [e.name for e in ledger.events()][-1] == "NodeRevoked"
    with pytest.raises(TransactionReverted, match="NodeIsRevoked"):
        alert(ledger, nodes[0], 101)  # a revoked edge node raises no more alerts
    assert ledger.device_info(100, 0).alerts == 0  # disputed alerts were never counted


def test_disputes_and_round_rejections_share_one_count(ledger, nodes, devices):
    ledger.dispute_alert(100, 0, WINDOW)
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)
    submit(ledger, nodes[1], 1)
    commit(ledger, 1, GLOBAL_1, [1])

    assert ledger.node_info(nodes[0].address).active is False  # 1 dispute + 1 rejection = MAX_REJECTIONS (2)
    assert RUN == ledger.w3.eth.contract(address=ledger.address, abi=ledger.artifact.abi).functions.runDigest().call()
