"""Node identities and offline signing (no provider), TxContext transport, and NoLedger."""

import subprocess
import sys

import pytest
from eth_account import Account

from bflsim.ledger import (
    EmbeddedLedger,
    NodeIdentity,
    NoLedger,
    TxContext,
    derive_identities,
    from_bitmap,
    read_update_tx,
    sign_data_tx,
    sign_update_tx,
    to_bitmap,
)
from bflsim.ledger.identity import encode_submit_update

CTX = TxContext(chain_id=31337, contract_address="0x5FbDB2315678afecb367f032d93F642f64180aa3",
                nonce=7, max_fee_per_gas=3 * 10**9, max_priority_fee_per_gas=10**9)


def test_identities_are_deterministic_per_seed():
    first = derive_identities(seed=1, num_nodes=3)

    assert derive_identities(seed=1, num_nodes=3) == first
    assert len({n.address for n in first}) == 3
    assert {n.address for n in derive_identities(seed=2, num_nodes=3)}.isdisjoint(
        {n.address for n in first}
    )
    assert [n.index for n in first] == [0, 1, 2]
    assert first[0].address == Account.from_key(first[0].private_key).address


def test_identity_repr_hides_the_key():
    node = derive_identities(seed=1, num_nodes=1)[0]

    assert node.private_key.hex() not in repr(node)


def test_identity_rejects_bad_index():
    with pytest.raises(ValueError, match="0..254"):
        NodeIdentity(255, b"\x01" * 32)


def test_signed_update_tx_recovers_to_the_node_and_encodes_the_call():
    node = derive_identities(seed=1, num_nodes=1)[0]

    raw = sign_update_tx(node, CTX, 4, b"\xee" * 32, 128)

    assert Account.recover_transaction(raw) == node.address
    assert raw[0] == 2  # EIP-1559 envelope
    assert encode_submit_update(4, b"\xee" * 32, 128).hex() in raw.hex()


@pytest.mark.parametrize("gas_price", [None, 10**9], ids=["eip1559", "legacy"])
def test_server_reads_what_a_signed_update_commits_to(gas_price):
    node = derive_identities(seed=1, num_nodes=1)[0]
    ctx = TxContext(CTX.chain_id, CTX.contract_address, CTX.nonce, CTX.max_fee_per_gas,
                    CTX.max_priority_fee_per_gas, gas_price)

    claim = read_update_tx(sign_update_tx(node, ctx, 4, b"\xee" * 32, 128))

    assert (claim.sender, claim.chain_id, claim.contract_address, claim.nonce) == (
        node.address, CTX.chain_id, CTX.contract_address, CTX.nonce
    )
    assert (claim.server_round, claim.update_digest, claim.num_samples) == (4, b"\xee" * 32, 128)


def test_read_update_tx_refuses_other_calls():
    node = derive_identities(seed=1, num_nodes=1)[0]

    with pytest.raises(ValueError, match="not a submitUpdate call"):
        read_update_tx(sign_data_tx(node, CTX, b"\x01" * 32, 1))


def test_legacy_gas_price_signs_a_type_0_tx():
    node = derive_identities(seed=1, num_nodes=1)[0]
    legacy = TxContext(chain_id=1337, contract_address=CTX.contract_address, nonce=0,
                       gas_price=10**9)

    raw = sign_data_tx(node, legacy, b"\x01" * 32, 1)

    assert raw[0] >= 0xC0  # RLP list, no type byte
    assert Account.recover_transaction(raw) == node.address


def test_signing_rejects_bad_digest():
    node = derive_identities(seed=1, num_nodes=1)[0]

    with pytest.raises(ValueError, match="update_digest must be 32 bytes"):
        sign_update_tx(node, CTX, 1, b"\x01" * 31, 1)


def test_signing_needs_no_web3():
    code = (
        "import sys\n"
        "from bflsim.ledger import derive_identities, sign_update_tx, TxContext\n"
        f"ctx = TxContext(31337, '{CTX.contract_address}', 0, 2, 1)\n"
        "sign_update_tx(derive_identities(0, 1)[0], ctx, 1, bytes(32), 1)\n"
        "assert 'web3' not in sys.modules, 'web3 imported'\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tx_context_travels_as_flat_config():
    config = CTX.to_config()

    assert all(isinstance(v, int | str) for v in config.values())
    assert TxContext.from_config(config) == CTX
    legacy = TxContext(1, CTX.contract_address, 0, gas_price=5)
    assert TxContext.from_config(legacy.to_config(prefix="x."), prefix="x.") == legacy


def test_embedded_chain_accepts_offline_signed_legacy_tx():
    ledger = EmbeddedLedger()
    ledger.deploy(max_rejections=1)
    node = derive_identities(seed=3, num_nodes=1)[0]
    ledger.enroll([node])
    ctx = ledger.tx_context(node.address)
    legacy = TxContext(ctx.chain_id, ctx.contract_address, ctx.nonce, gas_price=4 * 10**9)

    record = ledger.send_raw(sign_data_tx(node, legacy, b"\x0d" * 32, 9), kind="register_data")

    assert record.sender == node.address
    assert ledger.data_digest(node.address) == (b"\x0d" * 32, 9)


def test_bitmaps():
    assert to_bitmap([0, 3, 254]) == 1 | 8 | 1 << 254
    assert from_bitmap(to_bitmap([5, 1, 5])) == (1, 5)
    with pytest.raises(ValueError, match="0..254"):
        to_bitmap([255])


def test_no_ledger_records_nothing():
    ledger = NoLedger()
    node = derive_identities(seed=1, num_nodes=1)[0]

    ledger.deploy(max_rejections=3)
    results = [
        ledger.enroll([node]),
        ledger.open_round(1, bytes(32), [0]),
        ledger.send_raw(b"\x00"),
        ledger.commit_round(1, bytes(32), [0], bytes(32)),
    ]

    assert not ledger.enabled
    assert results == [[], None, None, None]
    assert ledger.records == [] and ledger.events() == []
    assert ledger.round_info(1).status == "none"
