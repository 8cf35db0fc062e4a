"""Registry v3: uint32 node indices, cohorts as index lists, registration in batches, and the
batched mode (Merkle roots of EIP-712 signed leaves), on the embedded chain.

The EIP-712 digests and signatures made by eth-account (bflsim.ledger.identity) are checked
against the contract's own ``domainSeparator`` / ``recoverUpdate`` / ``recoverData``, and the
Python Merkle proofs against its ``proves``: two implementations that must agree.
"""

from dataclasses import replace

import pytest
from eth_utils import keccak

from bflsim.ledger import (
    EmbeddedLedger,
    TransactionReverted,
    derive_identities,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.identity import (
    NodeIdentity,
    recover_data_typed,
    recover_update_typed,
    sign_data_typed,
    sign_update_typed,
)
from bflsim.ledger.merkle import MerkleTree, cohort_leaf, data_leaf, node_leaf, update_leaf, verify

RUN = b"\x4a" * 32
GLOBAL_0, GLOBAL_1, GLOBAL_2 = b"\x10" * 32, b"\x11" * 32, b"\x12" * 32
SCORES, EVALUATION = b"\x5c" * 32, b"\xe7" * 32


@pytest.fixture(scope="module")
def chain():
    ledger = EmbeddedLedger()
    ledger.deploy(max_rejections=0, run_digest=RUN)
    return ledger


def fresh(max_rejections=0):
    ledger = EmbeddedLedger()
    ledger.deploy(max_rejections=max_rejections, run_digest=RUN)
    return ledger


# --- per-node mode past 255 nodes ------------------------------------------------------------


def test_nodes_past_255_register_in_batches_and_take_part_in_rounds():
    ledger = fresh(max_rejections=1)
    ids = derive_identities(seed=5, num_nodes=300)
    far = NodeIdentity(70_000, keccak(b"far node"))  # any uint32 index
    ledger.register_batch_size = lambda: 128  # three transactions for 301 nodes
    records = ledger.register_nodes({**{i.index: i.address for i in ids}, far.index: far.address})

    assert [r.kind for r in records] == ["register_nodes"] * 3
    assert ledger.active_nodes() == (*range(300), 70_000)
    assert ledger.node_info(far.address).index == 70_000
    members = [ids[3], ids[254], ids[255], ids[299], far]
    ledger.fund([n.address for n in members], 10**18)
    for node in members:
        ledger.send_raw(sign_data_tx(node, ledger.tx_context(node.address), b"\xd0" * 32, 1, 10))
    cohort = [3, 254, 255, 299, 70_000]
    ledger.open_round(1, GLOBAL_0, cohort)
    for node in members[1:]:  # node 3 drops out
        ledger.send_raw(sign_update_tx(node, ledger.tx_context(node.address), 1, b"\x01" * 32, 10))

    ledger.commit_round(1, GLOBAL_1, [255, 70_000], SCORES, EVALUATION)

    info = ledger.round_info(1)
    assert (info.cohort, info.submitted, info.accepted) == (tuple(cohort), (254, 255, 299, 70_000), (255, 70_000))
    assert (info.cohort_size, info.num_submitted, info.num_accepted) == (5, 4, 2)
    revoked = {e.args["node"] for e in ledger.events() if e.name == "NodeRevoked"}
    assert revoked == {ids[254].address, ids[299].address}  # rejected submitters, threshold 1
    assert 254 not in ledger.active_nodes() and 3 in ledger.active_nodes()


def test_a_cohort_must_be_sorted_and_commits_name_it_exactly():
    ledger = fresh()
    ids = derive_identities(seed=6, num_nodes=4)
    ledger.enroll(ids)
    for node in ids:
        ledger.send_raw(sign_data_tx(node, ledger.tx_context(node.address), b"\xd0" * 32, 1, 10))
    raw = ledger._call_data("openRound", 1, GLOBAL_0, [2, 1])
    with pytest.raises(TransactionReverted, match=r"CohortNotSorted\(round=1, index=1\)"):
        ledger._transact("open_round", raw, to=ledger.address, sender=ledger.aggregator)
    ledger.open_round(1, GLOBAL_0, [0, 1, 2])
    ledger.send_raw(sign_update_tx(ids[0], ledger.tx_context(ids[0].address), 1, b"\x01" * 32, 10))

    with pytest.raises(TransactionReverted, match=r"CohortMismatch\(round=1\)"):
        ledger.commit_round(1, GLOBAL_1, [0], SCORES, cohort=[0, 1])
    with pytest.raises(TransactionReverted, match=r"AcceptedNotInCohort\(round=1, index=3\)"):
        ledger.commit_round(1, GLOBAL_1, [0, 3], SCORES)
    with pytest.raises(TransactionReverted, match=r"AcceptedWithoutSubmission\(round=1, index=1\)"):
        ledger.commit_round(1, GLOBAL_1, [0, 1], SCORES)
    ledger._cohorts.clear()  # read the cohort back from the RoundOpened event
    ledger.commit_round(1, GLOBAL_1, [0], SCORES)
    assert ledger.round_info(1).status == "committed"


def test_an_index_outside_uint32_is_refused_before_sending(chain):
    with pytest.raises(ValueError, match="node index must be in 0..4294967294; got 4294967295"):
        chain.open_round(1, GLOBAL_0, [0, 2**32 - 1])


# --- EIP-712 ----------------------------------------------------------------------------------


def test_typed_signatures_agree_with_the_registry(chain):
    node = derive_identities(seed=8, num_nodes=3)[2]
    ctx = chain.tx_context(node.address)
    signature = sign_update_typed(node, ctx, 7, b"\xab" * 32, 42)

    assert len(signature) == 65
    assert chain.recover_update(7, 2, b"\xab" * 32, 42, signature) == node.address
    assert recover_update_typed(signature, ctx, 2, 7, b"\xab" * 32, 42) == node.address
    # any other field, and the signature names someone else
    for args in [(8, 2, b"\xab" * 32, 42), (7, 1, b"\xab" * 32, 42), (7, 2, b"\xac" * 32, 42), (7, 2, b"\xab" * 32, 43)]:
        assert chain.recover_update(*args, signature) != node.address
    data_signature = sign_data_typed(node, ctx, b"\xd0" * 32, 1_700_000_000, 42)
    contract = chain._require_contract()
    assert contract.functions.recoverData(2, b"\xd0" * 32, 1_700_000_000, 42, data_signature).call() == node.address
    assert recover_data_typed(data_signature, ctx, 2, b"\xd0" * 32, 1_700_000_000, 42) == node.address


def test_a_typed_signature_is_bound_to_run_chain_and_registry(chain):
    node = derive_identities(seed=8, num_nodes=1)[0]
    ctx = chain.tx_context(node.address)

    for changed in (replace(ctx, run_digest=b"\x4b" * 32), replace(ctx, chain_id=ctx.chain_id + 1),
                    replace(ctx, contract_address="0x" + "12" * 20)):
        signature = sign_update_typed(node, changed, 1, b"\x01" * 32, 5)
        assert chain.recover_update(1, 0, b"\x01" * 32, 5, signature) != node.address
    truncated = sign_update_typed(node, ctx, 1, b"\x01" * 32, 5)[:64]
    assert recover_update_typed(truncated, ctx, 0, 1, b"\x01" * 32, 5) is None
    assert chain.recover_update(1, 0, b"\x01" * 32, 5, truncated) == "0x" + "0" * 40


# --- Merkle trees -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5, 8, 13])
def test_every_leaf_proves_against_the_root_on_chain_and_here(chain, size):
    leaves = [cohort_leaf(i * 3) for i in range(size)]
    tree = MerkleTree(tuple(leaves))

    for position, leaf in enumerate(leaves):
        proof = tree.proof(position)
        assert verify(tree.root, leaf, proof) and chain.proves(tree.root, leaf, proof)
        assert not chain.proves(tree.root, cohort_leaf(10_000), proof)
    if size > 1:  # a proof with one sibling changed proves nothing
        proof = tree.proof(size - 1)
        proof[0] = keccak(proof[0])
        assert not verify(tree.root, leaves[-1], proof) and not chain.proves(tree.root, leaves[-1], proof)
    assert MerkleTree(()).root == bytes(32)


def test_leaves_commit_to_every_field():
    base = update_leaf(4, b"\x01" * 32, 10, b"\x02" * 65, True)

    assert len({base, update_leaf(5, b"\x01" * 32, 10, b"\x02" * 65, True),
                update_leaf(4, b"\x03" * 32, 10, b"\x02" * 65, True), update_leaf(4, b"\x01" * 32, 11, b"\x02" * 65, True),
                update_leaf(4, b"\x01" * 32, 10, b"\x04" * 65, True), update_leaf(4, b"\x01" * 32, 10, b"\x02" * 65, False)}) == 6
    assert data_leaf(1, b"\x01" * 32, 5, 10, b"\x02" * 65) != data_leaf(1, b"\x01" * 32, 6, 10, b"\x02" * 65)
    assert node_leaf(1, "0x" + "11" * 20) != node_leaf(2, "0x" + "11" * 20)


# --- batched mode -----------------------------------------------------------------------------


def batched_registry(num_nodes=6):
    ledger = fresh()
    ids = derive_identities(seed=9, num_nodes=num_nodes)
    nodes = MerkleTree(tuple(node_leaf(i.index, i.address) for i in ids))
    ledger.register_node_root(nodes.root, num_nodes)
    return ledger, ids


def test_batched_rounds_cost_the_same_at_any_cohort_size():
    ledger, _ids = batched_registry()
    gas = []
    opened = GLOBAL_0
    for server_round, size in enumerate([1, 1_000, 100_000], start=1):
        cohort_root = keccak(str(size).encode())  # what the root is does not change the cost
        open_record = ledger.open_batch(server_round, opened, cohort_root, size)
        commit_record = ledger.commit_batch(server_round, GLOBAL_1, keccak(b"updates"), size, size // 2,
                                            SCORES, EVALUATION)
        gas.append(open_record.gas_used + commit_record.gas_used)
        opened = GLOBAL_1

    # no dependence on the cohort: only a count's non-zero calldata bytes differ (16 gas each)
    assert max(gas) < 200_000 and max(gas[1:]) - min(gas[1:]) <= 64, gas
    info = ledger.round_info(3)
    assert (info.status, info.batched, info.cohort_size, info.num_submitted, info.num_accepted) == (
        "committed", True, 100_000, 100_000, 50_000)
    assert (info.global_digest, info.new_global_digest, info.updates_root, info.scores_digest) == (
        GLOBAL_1, GLOBAL_1, keccak(b"updates"), SCORES)
    assert ledger.mode() == "batched"


def test_batched_mode_keeps_the_model_chain_and_its_own_rules():
    ledger, ids = batched_registry()
    root = keccak(b"cohort")
    with pytest.raises(TransactionReverted, match=r"WrongMode\(mode=2\)"):
        ledger.register_nodes({0: ids[0].address})
    with pytest.raises(TransactionReverted, match=r"WrongMode\(mode=2\)"):
        ledger.open_round(1, GLOBAL_0, [0])
    with pytest.raises(TransactionReverted, match=r"EmptyCohort\(round=1\)"):
        ledger.open_batch(1, GLOBAL_0, root, 0)
    ledger.register_data_root(keccak(b"data"), 6)
    ledger.open_batch(1, GLOBAL_0, root, 3)
    with pytest.raises(TransactionReverted, match="PreviousRoundOpen"):
        ledger.open_batch(2, GLOBAL_0, root, 3)
    with pytest.raises(TransactionReverted, match=r"BatchCountsInvalid\(round=1, submitted=4, accepted=1, cohortSize=3\)"):
        ledger.commit_batch(1, GLOBAL_1, root, 4, 1, SCORES)
    with pytest.raises(TransactionReverted, match=r"BatchCountsInvalid\(round=1, submitted=2, accepted=3"):
        ledger.commit_batch(1, GLOBAL_1, root, 2, 3, SCORES)
    ledger.commit_batch(1, GLOBAL_1, root, 3, 2, SCORES)
    with pytest.raises(TransactionReverted, match="GlobalDigestMismatch"):
        ledger.open_batch(2, GLOBAL_2, root, 3)
    with pytest.raises(TransactionReverted, match="RegistrationClosed"):
        ledger.register_data_root(keccak(b"data 2"), 6)
    with pytest.raises(TransactionReverted, match=r"RoundNotOpen\(round=1\)"):
        ledger.commit_batch(1, GLOBAL_1, root, 3, 2, SCORES)
    names = [e.name for e in ledger.events()]
    assert names[-4:] == ["NodeRootRegistered", "DataRootRegistered", "BatchOpened", "BatchCommitted"]


def test_per_node_registries_refuse_batched_calls():
    ledger = fresh()
    ledger.enroll(derive_identities(seed=10, num_nodes=2))

    with pytest.raises(TransactionReverted, match=r"WrongMode\(mode=1\)"):
        ledger.register_node_root(keccak(b"nodes"), 2)
    with pytest.raises(TransactionReverted, match=r"WrongMode\(mode=1\)"):
        ledger.open_batch(1, GLOBAL_0, keccak(b"cohort"), 2)
    assert ledger.mode() == "per-node"
