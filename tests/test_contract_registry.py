"""FederatedRegistry through the Ledger interface, the same tests on two chains.

``ledger`` is an EmbeddedLedger (py-evm, in process) or an RpcLedger on a fresh contract on
one anvil node that this module starts on 127.0.0.1 and stops afterwards. Node transactions
are signed offline with the node's key and relayed, as in a federated round.
"""


import pytest
from conftest import require_anvil
from eth_account import Account

from bflsim.ledger import (
    UPDATE_GAS_LIMIT,
    AnvilNode,
    EmbeddedLedger,
    NodeIdentity,
    RpcLedger,
    TransactionReverted,
    derive_identities,
    sign_data_tx,
    sign_update_tx,
)

GAS_BUDGET_SUBMIT_UPDATE = 60_000
MAX_REJECTIONS = 2
NUM_NODES = 4
GLOBAL_0, GLOBAL_1 = b"\x10" * 32, b"\x11" * 32
SCORES = b"\x5c" * 32


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
    chain.deploy(max_rejections=MAX_REJECTIONS)
    return chain


@pytest.fixture
def nodes(ledger):
    identities = derive_identities(seed=2024, num_nodes=NUM_NODES)
    ledger.enroll(identities, fund_wei=10**18)
    return identities


@pytest.fixture
def stranger(ledger):
    """A funded account that is not a registered node."""
    identity = NodeIdentity(9, bytes.fromhex("9" * 64))
    ledger.fund([identity.address], 10**18)
    return identity


def submit(ledger, node, server_round, digest=None, num_samples=100):
    ctx = ledger.tx_context(node.address)
    digest = digest or bytes([node.index + 1]) * 32
    return ledger.send_raw(sign_update_tx(node, ctx, server_round, digest, num_samples),
                           kind="submit_update")


def signed_call(ledger, identity, fn, *args):
    """A contract call signed with ``identity``'s key (for calls the server must not make)."""
    ctx = ledger.tx_context(identity.address)
    tx = {
        "chainId": ctx.chain_id, "nonce": ctx.nonce, "to": ctx.contract_address, "value": 0,
        "gas": 300_000, "maxFeePerGas": ctx.max_fee_per_gas,
        "maxPriorityFeePerGas": ctx.max_priority_fee_per_gas,
        "data": ledger._call_data(fn, *args),
    }
    return bytes(Account.sign_transaction(tx, identity.private_key).raw_transaction)


def reverts_with(ledger, raw, error):
    with pytest.raises(TransactionReverted, match=error) as info:
        ledger.send_raw(raw)
    return info.value


# --- setup -------------------------------------------------------------------------------


def test_deploy_names_owner_aggregator_and_threshold(ledger):
    contract = ledger._require_contract()

    assert contract.functions.owner().call() == ledger.operator
    assert contract.functions.aggregator().call() == ledger.operator
    assert ledger.max_rejections() == MAX_REJECTIONS
    assert ledger.records[0].kind == "deploy" and ledger.records[0].status == 1


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


# --- data registration -------------------------------------------------------------------


def test_register_data_stores_latest_digest(ledger, nodes):
    node = nodes[2]
    for timestamp, digest in [(1_700_000_000, b"\xd1" * 32), (1_700_000_060, b"\xd2" * 32)]:
        raw = sign_data_tx(node, ledger.tx_context(node.address), digest, timestamp)
        record = ledger.send_raw(raw, kind="register_data")

    assert record.sender == node.address
    assert ledger.data_digest(node.address) == (b"\xd2" * 32, 1_700_000_060)
    events = [e for e in ledger.events() if e.name == "DataRegistered"]
    assert [(e.args["node"], e.args["digest"], e.args["timestamp"]) for e in events] == [
        (node.address, b"\xd1" * 32, 1_700_000_000),
        (node.address, b"\xd2" * 32, 1_700_000_060),
    ]


def test_register_data_by_unregistered_account_reverts(ledger, nodes, stranger):
    raw = sign_data_tx(stranger, ledger.tx_context(stranger.address), b"\x01" * 32, 1)

    reverts_with(ledger, raw, "UnknownNode")


# --- rounds ------------------------------------------------------------------------------


def test_open_round_records_cohort(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 2, 3])

    info = ledger.round_info(1)
    assert (info.status, info.cohort, info.submitted, info.global_digest) == (
        "open", (0, 2, 3), (), GLOBAL_0
    )
    assert ledger.round_info(2).status == "none"


def test_open_round_by_non_aggregator_or_twice_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])

    reverts_with(ledger, signed_call(ledger, nodes[0], "openRound", 2, GLOBAL_0, 1), "NotAggregator")
    with pytest.raises(TransactionReverted, match="RoundAlreadyOpened"):
        ledger.open_round(1, GLOBAL_0, [0])
    with pytest.raises(TransactionReverted, match="UnregisteredInCohort"):
        ledger.open_round(2, GLOBAL_0, [0, 7])


def test_submit_by_cohort_member_is_relayed_as_the_node(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2])
    node = nodes[1]

    record = submit(ledger, node, 1, digest=b"\xab" * 32, num_samples=321)

    assert record.status == 1 and record.sender == node.address  # msg.sender is the node
    tx = ledger.w3.eth.get_transaction(record.tx_hash)
    assert tx["from"] == node.address and tx["to"] == ledger.address
    event = [e for e in ledger.events() if e.name == "UpdateSubmitted"][-1]
    assert event.args == {"round": 1, "node": node.address, "updateDigest": b"\xab" * 32,
                          "numSamples": 321}
    assert ledger.round_info(1).submitted == (1,)


def test_submit_by_non_member_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])

    error = reverts_with(ledger, sign_update_tx(nodes[3], ledger.tx_context(nodes[3].address),
                                                1, b"\x01" * 32, 10), "NotInCohort")

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
    ledger.commit_round(1, GLOBAL_1, [0], SCORES)

    with pytest.raises(TransactionReverted, match="RoundNotOpen"):
        submit(ledger, nodes[1], 1)


def test_submit_by_unregistered_account_reverts(ledger, nodes, stranger):
    ledger.open_round(1, GLOBAL_0, [0])

    reverts_with(ledger, sign_update_tx(stranger, ledger.tx_context(stranger.address), 1,
                                        b"\x01" * 32, 1), "UnknownNode")


def test_gas_per_submit_update_within_budget(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2, 3])
    contexts = ledger.tx_contexts({n.index: n.address for n in nodes})
    raws = [sign_update_tx(n, contexts[n.index], 1, bytes([0xF0 + n.index]) * 32, 2**31)
            for n in nodes]

    records = ledger.send_raw_many(raws, kind="submit_update")

    assert [r.status for r in records] == [1, 1, 1, 1]
    gas = [r.gas_used for r in records]
    assert max(gas) <= GAS_BUDGET_SUBMIT_UPDATE, gas
    assert UPDATE_GAS_LIMIT <= GAS_BUDGET_SUBMIT_UPDATE  # nodes sign with the budget as limit
    assert ledger.round_info(1).submitted == (0, 1, 2, 3)


# --- commit, reputation, revocation ------------------------------------------------------


def test_commit_round_records_outcome(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1, 2])
    for node in nodes[:3]:
        submit(ledger, node, 1)

    ledger.commit_round(1, GLOBAL_1, [0, 2], SCORES)

    info = ledger.round_info(1)
    assert (info.status, info.submitted, info.accepted) == ("committed", (0, 1, 2), (0, 2))
    assert (info.new_global_digest, info.scores_digest) == (GLOBAL_1, SCORES)
    assert [ledger.node_info(n.address).rejections for n in nodes] == [0, 1, 0, 0]


def test_commit_by_non_aggregator_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0])
    submit(ledger, nodes[0], 1)

    raw = signed_call(ledger, nodes[0], "commitRound", 1, GLOBAL_1, 1, SCORES)

    reverts_with(ledger, raw, "NotAggregator")
    assert ledger.round_info(1).status == "open"


def test_commit_twice_or_accepting_a_non_submitter_reverts(ledger, nodes):
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)

    with pytest.raises(TransactionReverted, match="AcceptedWithoutSubmission"):
        ledger.commit_round(1, GLOBAL_1, [0, 1], SCORES)
    ledger.commit_round(1, GLOBAL_1, [0], SCORES)
    with pytest.raises(TransactionReverted, match="RoundNotOpen"):
        ledger.commit_round(1, GLOBAL_1, [0], SCORES)


def test_rejections_count_and_revoke_at_threshold(ledger, nodes):
    malicious = nodes[3]
    for server_round in (1, 2):
        ledger.open_round(server_round, GLOBAL_0, [0, 1, 3])
        for node in (nodes[0], nodes[1], malicious):
            submit(ledger, node, server_round)
        ledger.commit_round(server_round, GLOBAL_1, [0, 1], SCORES)
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
    for server_round in (1, 2):
        ledger.open_round(server_round, GLOBAL_0, [3])
        submit(ledger, revoked, server_round)
        ledger.commit_round(server_round, GLOBAL_1, [], SCORES)
    ledger.open_round(3, GLOBAL_0, [0, 3])

    with pytest.raises(TransactionReverted, match="NodeIsRevoked"):
        submit(ledger, revoked, 3)
    raw = sign_data_tx(revoked, ledger.tx_context(revoked.address), b"\x01" * 32, 1)
    reverts_with(ledger, raw, "NodeIsRevoked")
    assert submit(ledger, nodes[0], 3).status == 1


def test_set_aggregator_hands_over_rounds(ledger, nodes):
    aggregator = nodes[0]  # any funded key will do
    ledger.set_aggregator(aggregator.address)

    with pytest.raises(TransactionReverted, match="NotAggregator"):
        ledger.open_round(1, GLOBAL_0, [1])
    record = ledger.send_raw(signed_call(ledger, aggregator, "openRound", 1, GLOBAL_0, 0b10))
    assert record.status == 1 and ledger.round_info(1).cohort == (1,)


# --- audit trail -------------------------------------------------------------------------


def test_events_cover_every_step(ledger, nodes):
    start = ledger.w3.eth.block_number + 1
    node = nodes[0]
    ledger.send_raw(sign_data_tx(node, ledger.tx_context(node.address), b"\xd0" * 32, 5))
    ledger.open_round(1, GLOBAL_0, [0, 1])
    submit(ledger, nodes[0], 1)
    submit(ledger, nodes[1], 1)
    ledger.commit_round(1, GLOBAL_1, [0], SCORES)

    events = ledger.events(from_block=start)

    assert [e.name for e in events] == [
        "DataRegistered", "RoundOpened", "UpdateSubmitted", "UpdateSubmitted",
        "RoundCommitted", "NodeRejected",
    ]
    assert events[4].args == {"round": 1, "newGlobalDigest": GLOBAL_1, "accepted": 0b01,
                              "scoresDigest": SCORES}
    assert all(e.tx_hash.startswith("0x") and e.block >= start for e in events)
    assert [r.kind for r in ledger.records[-5:]] == [
        "relay", "open_round", "submit_update", "submit_update", "commit_round"
    ]
    assert all(r.gas_used > 0 and r.seconds > 0 and r.block > 0 for r in ledger.records)
