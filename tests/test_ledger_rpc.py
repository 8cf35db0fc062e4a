"""RpcLedger against anvil: errors that name the endpoint or the transaction, attach, the
anvil process's lifecycle, and relays batched into one block with --block-time."""

import socket
import time

import pytest
from conftest import port_is_open, require_anvil
from eth_account import Account

from bflsim.ledger import (
    AnvilNode,
    ChainIdMismatch,
    ContractNotFound,
    EndpointUnreachable,
    InsufficientFunds,
    RpcLedger,
    TransactionReverted,
    derive_identities,
    load_artifact,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.factory import ANVIL_OPERATOR_KEY
from bflsim.ledger.web3_ledger import derive_aggregator_key

ANVIL_CHAIN_ID = 31337


@pytest.fixture
def ledger(anvil):
    chain = RpcLedger(anvil.url, chain_id=ANVIL_CHAIN_ID)
    chain.deploy(max_rejections=3)
    return chain


def test_unreachable_endpoint_is_named():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    started = time.perf_counter()
    with pytest.raises(EndpointUnreachable, match=url):
        RpcLedger(url)
    assert time.perf_counter() - started < 5  # no retry loop


def test_wrong_chain_id_is_named(anvil):
    with pytest.raises(ChainIdMismatch, match=rf"{anvil.url} serves chain id 31337, not .* 5\b"):
        RpcLedger(anvil.url, chain_id=5)


def test_attach_address_without_code(anvil):
    empty = "0x000000000000000000000000000000000000dEaD"

    with pytest.raises(ContractNotFound, match=rf"no contract code at {empty} on {anvil.url}"):
        RpcLedger(anvil.url).attach(empty)


def test_attach_other_contract_is_refused(ledger):
    # init code returning a 1-byte runtime (STOP): PUSH1 1 PUSH1 12 PUSH1 0 CODECOPY
    # PUSH1 1 PUSH1 0 RETURN, then 0x00
    init_code = bytes.fromhex("6001600c60003960016000f300")
    ledger._transact("deploy", init_code, to=None)
    receipt = ledger.w3.eth.get_transaction_receipt(ledger.records[-1].tx_hash)

    with pytest.raises(ContractNotFound, match="is not this FederatedRegistry"):
        RpcLedger(ledger.endpoint).attach(receipt["contractAddress"])


def test_attach_finds_a_deployed_registry(ledger):
    nodes = derive_identities(seed=5, num_nodes=2)
    ledger.enroll(nodes)
    ledger.open_round(1, b"\x01" * 32, [0, 1])

    auditor = RpcLedger(ledger.endpoint, chain_id=ANVIL_CHAIN_ID)
    auditor.attach(ledger.address)

    assert auditor.round_info(1).cohort == (0, 1)
    assert load_artifact().code_hash == auditor.artifact.code_hash


def test_unfunded_operator_is_named(anvil):
    broke = RpcLedger(anvil.url, private_key=b"\x42" * 32)

    with pytest.raises(InsufficientFunds, match=rf"{broke.operator} cannot pay .* {anvil.url}"):
        broke.deploy(max_rejections=1)


def register_data(ledger, nodes, num_samples=1):
    contexts = ledger.tx_contexts({n.index: n.address for n in nodes})
    raws = [sign_data_tx(n, contexts[n.index], b"\xd0" * 32, 1, num_samples) for n in nodes]
    assert [r.status for r in ledger.send_raw_many(raws, kind="register_data")] == [1] * len(nodes)


def test_reverted_relay_names_tx_and_decodes_reason(ledger):
    nodes = derive_identities(seed=5, num_nodes=2)
    ledger.enroll(nodes)
    register_data(ledger, nodes)
    ledger.open_round(1, b"\x01" * 32, [0])
    outsider = nodes[1]
    raw = sign_update_tx(outsider, ledger.tx_context(outsider.address), 1, b"\x02" * 32, 1)

    with pytest.raises(TransactionReverted) as info:
        ledger.send_raw(raw, kind="submit_update")

    message = str(info.value)
    assert info.value.tx_hash in message and outsider.address in message
    assert f"NotInCohort(round=1, node={outsider.address})" in message
    assert ledger.records[-1].status == 0  # mined, gas paid, recorded


def test_server_side_revert_is_caught_before_sending(ledger):
    sent_before = len(ledger.records)

    with pytest.raises(TransactionReverted, match=r"commit_round .* would revert .*RoundNotOpen"):
        ledger.commit_round(7, b"\x01" * 32, [], b"\x02" * 32)
    assert len(ledger.records) == sent_before


def test_unsigned_mode_uses_the_nodes_unlocked_account(anvil):
    chain = RpcLedger(anvil.url)

    chain.deploy(max_rejections=1)

    assert chain.operator == chain.w3.eth.accounts[0]
    assert chain.aggregator == chain.w3.eth.accounts[1]
    assert [(r.kind, r.sender) for r in chain.records] == [("deploy", chain.operator),
                                                           ("set_aggregator", chain.operator)]


def test_operator_key_derives_a_funded_aggregator(anvil):
    chain = RpcLedger(anvil.url, private_key=ANVIL_OPERATOR_KEY)

    chain.deploy(max_rejections=1)

    derived = Account.from_key(derive_aggregator_key(ANVIL_OPERATOR_KEY)).address
    assert chain.aggregator == derived != chain.operator
    assert [r.kind for r in chain.records] == ["deploy", "fund", "set_aggregator"]
    assert chain.w3.eth.get_balance(derived) > 0
    assert chain._require_contract().functions.aggregator().call() == derived
    node = derive_identities(seed=8, num_nodes=1)
    chain.enroll(node)
    assert chain.open_round(1, b"\x01" * 32, [0]).sender == derived


def test_anvil_node_stops_and_frees_its_port():
    require_anvil()
    node = AnvilNode()

    with node:
        assert node.running and port_is_open(node.port)
        assert RpcLedger(node.url).chain_id == ANVIL_CHAIN_ID

    assert node.process.poll() is not None
    assert not port_is_open(node.port)


def test_block_time_relays_land_in_one_block():
    require_anvil()
    with AnvilNode(block_time=0.25) as node:
        chain = RpcLedger(node.url, chain_id=ANVIL_CHAIN_ID)
        chain.deploy(max_rejections=3)
        nodes = derive_identities(seed=6, num_nodes=3)
        chain.enroll(nodes)
        register_data(chain, nodes)
        chain.open_round(1, b"\x01" * 32, [0, 1, 2])
        contexts = chain.tx_contexts({n.index: n.address for n in nodes})
        raws = [sign_update_tx(n, contexts[n.index], 1, b"\x03" * 32, 1) for n in nodes]
        block = chain.w3.eth.block_number
        while chain.w3.eth.block_number == block:  # start just after a block: 250 ms to go
            time.sleep(0.005)

        records = chain.send_raw_many(raws, kind="submit_update")

    assert [r.status for r in records] == [1, 1, 1]
    assert len({r.block for r in records}) == 1
    assert all(0 < r.seconds <= 1.5 for r in records)
