"""Node identities and offline signing (no provider), TxContext transport, and NoLedger."""

import subprocess
import sys
from dataclasses import replace

import pytest
from eth_account import Account

from bflsim.ledger import (
    EmbeddedLedger,
    NodeIdentity,
    NoLedger,
    TxContext,
    derive_identities,
    from_bitmap,
    node_set,
    read_update_tx,
    sign_data_tx,
    sign_update_tx,
    sorted_indices,
    to_bitmap,
)
from bflsim.ledger.identity import (
    ALERT_REFUSAL_CHECKS,
    UPDATE_GAS_LIMIT,
    check_alert_tx,
    check_update_tx,
    encode_submit_update,
    read_alert_tx,
    read_data_tx,
    sign_alert_tx,
    sign_tx,
)

RUN = b"\x4a" * 32
CTX = TxContext(chain_id=31337, contract_address="0x5FbDB2315678afecb367f032d93F642f64180aa3",
                nonce=7, max_fee_per_gas=3 * 10**9, max_priority_fee_per_gas=10**9, run_digest=RUN)


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
    assert NodeIdentity(70_000, b"\x01" * 32).index == 70_000  # registry v3: uint32 indices
    with pytest.raises(ValueError, match="0..4294967294"):
        NodeIdentity(2**32 - 1, b"\x01" * 32)
    with pytest.raises(ValueError, match="0..4294967294"):
        NodeIdentity(-1, b"\x01" * 32)


def test_signed_update_tx_recovers_to_the_node_and_encodes_the_call():
    node = derive_identities(seed=1, num_nodes=1)[0]

    raw = sign_update_tx(node, CTX, 4, b"\xee" * 32, 128)

    assert Account.recover_transaction(raw) == node.address
    assert raw[0] == 2  # EIP-1559 envelope
    assert encode_submit_update(RUN, 4, b"\xee" * 32, 128).hex() in raw.hex()


@pytest.mark.parametrize("gas_price", [None, 10**9], ids=["eip1559", "legacy"])
def test_server_reads_what_a_signed_update_commits_to(gas_price):
    node = derive_identities(seed=1, num_nodes=1)[0]
    ctx = TxContext(CTX.chain_id, CTX.contract_address, CTX.nonce, CTX.max_fee_per_gas,
                    CTX.max_priority_fee_per_gas, gas_price, run_digest=RUN)

    claim = read_update_tx(sign_update_tx(node, ctx, 4, b"\xee" * 32, 128))

    assert (claim.sender, claim.chain_id, claim.contract_address, claim.nonce) == (
        node.address, CTX.chain_id, CTX.contract_address, CTX.nonce
    )
    assert (claim.run_digest, claim.server_round, claim.update_digest, claim.num_samples) == (
        RUN, 4, b"\xee" * 32, 128
    )
    assert (claim.gas, claim.value, claim.tx.tx_type) == (UPDATE_GAS_LIMIT, 0, 0 if gas_price else 2)


def test_read_update_tx_refuses_other_calls():
    node = derive_identities(seed=1, num_nodes=1)[0]

    with pytest.raises(ValueError, match="not a submitUpdate call"):
        read_update_tx(sign_data_tx(node, CTX, b"\x01" * 32, 1, 10))
    with pytest.raises(ValueError, match="calldata has 133 bytes"):
        read_update_tx(sign_tx(node, CTX, encode_submit_update(RUN, 1, bytes(32), 1) + b"\x00", UPDATE_GAS_LIMIT))
    with pytest.raises(ValueError, match="not a legacy or EIP-1559"):
        read_update_tx(b"\x01\x02")
    with pytest.raises(ValueError, match="not a valid signed transaction"):
        read_update_tx(b"\x02" + bytes(30))


def test_read_data_tx_decodes_the_sample_count():
    node = derive_identities(seed=1, num_nodes=1)[0]

    tx, digest, timestamp, num_samples = read_data_tx(sign_data_tx(node, CTX, b"\x01" * 32, 5, 4096))

    assert (tx.sender, digest, timestamp, num_samples) == (node.address, b"\x01" * 32, 5, 4096)


def test_legacy_gas_price_signs_a_type_0_tx():
    node = derive_identities(seed=1, num_nodes=1)[0]
    legacy = TxContext(chain_id=1337, contract_address=CTX.contract_address, nonce=0,
                       gas_price=10**9)

    raw = sign_data_tx(node, legacy, b"\x01" * 32, 1, 1)

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

    assert all(isinstance(v, int | str | bytes) for v in config.values())
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

    record = ledger.send_raw(sign_data_tx(node, legacy, b"\x0d" * 32, 9, 33), kind="register_data")

    assert record.sender == node.address
    assert ledger.data_digest(node.address) == (b"\x0d" * 32, 9)
    assert ledger.node_info(node.address).num_samples == 33


def test_node_sets_of_every_registry_version():
    assert to_bitmap([0, 3, 254]) == 1 | 8 | 1 << 254  # v1, v2
    assert from_bitmap(to_bitmap([5, 1, 5])) == (1, 5)
    with pytest.raises(ValueError, match="0..254"):
        to_bitmap([255])
    assert node_set(0b1010) == (1, 3) and node_set((70_000, 2, 9)) == (2, 9, 70_000)  # v3: index lists
    assert sorted_indices([5, 1, 5], "cohort") == [1, 5]
    with pytest.raises(ValueError, match=r"cohort: node index must be in 0..4294967294; got -1"):
        sorted_indices([3, -1], "cohort")


def test_no_ledger_records_nothing():
    ledger = NoLedger()
    node = derive_identities(seed=1, num_nodes=1)[0]

    ledger.deploy(max_rejections=3)
    results = [
        ledger.enroll([node]),
        ledger.open_round(1, bytes(32), [0]),
        ledger.send_raw(b"\x00"),
        ledger.commit_round(1, bytes(32), [0], bytes(32), bytes(32)),
    ]

    assert not ledger.enabled
    assert results == [[], None, None, None]
    assert ledger.records == [] and ledger.events() == []
    assert ledger.round_info(1).status == "none"


# --- the server's checks of a signed submitUpdate ----------------------------------------

NODE = derive_identities(seed=1, num_nodes=2)[0]
DIGEST = b"\xee" * 32


def check(raw, *, ctx=CTX, server_round=4, digest=DIGEST, num_samples=128):
    return check_update_tx(raw, node_address=NODE.address, ctx=ctx, server_round=server_round,
                           update_digest=digest, num_samples=num_samples)


def test_the_update_asked_for_passes_every_check():
    assert check(sign_update_tx(NODE, CTX, 4, DIGEST, 128)) is None


@pytest.mark.parametrize(("signed", "expected", "why"), [
    ({"identity": derive_identities(seed=1, num_nodes=2)[1]}, "signer", "not by the node's key"),
    ({"ctx": replace(CTX, chain_id=1)}, "chain_id", "chain id 1, not 31337"),
    ({"ctx": replace(CTX, contract_address="0x" + "42" * 20)}, "to", "not to the registry"),
    ({"ctx": replace(CTX, nonce=8)}, "nonce", "nonce 8, not the node's next nonce 7"),
    ({"ctx": replace(CTX, max_fee_per_gas=1)}, "fees", "fees max fee 1"),
    ({"ctx": replace(CTX, gas_price=10**9)}, "fees", "gas price"),
    ({"gas": 21_000}, "gas", "gas limit 21000, not 60000"),
    ({"ctx": replace(CTX, run_digest=b"\x4b" * 32)}, "run_digest", "not this run's"),
    ({"server_round": 3}, "round", "round 3, not 4"),
    ({"digest": b"\xef" * 32}, "update_digest", "update digest mismatch"),
    ({"num_samples": 2**32 - 1}, "num_samples", "claims 4294967295 samples; the node registered 128"),
])
def test_each_wrong_field_is_refused_by_name(signed, expected, why):
    args = {"identity": NODE, "ctx": CTX, "server_round": 4, "digest": DIGEST, "num_samples": 128, **signed}
    raw = sign_update_tx(args["identity"], args["ctx"], args["server_round"], args["digest"],
                         args["num_samples"], **({"gas": signed["gas"]} if "gas" in signed else {}))

    refusal = check(raw)

    assert refusal is not None and refusal[0] == expected and why in refusal[1], refusal


def test_a_value_or_another_call_is_refused():
    paying = {"chainId": CTX.chain_id, "nonce": CTX.nonce, "to": CTX.contract_address, "value": 1,
              "gas": UPDATE_GAS_LIMIT, "maxFeePerGas": CTX.max_fee_per_gas,
              "maxPriorityFeePerGas": CTX.max_priority_fee_per_gas,
              "data": encode_submit_update(RUN, 4, DIGEST, 128)}
    raw = bytes(Account.sign_transaction(paying, NODE.private_key).raw_transaction)

    assert check(raw)[0] == "value"
    assert check(sign_data_tx(NODE, CTX, DIGEST, 1, 128))[0] == "malformed"
    assert check(b"")[0] == "malformed"


# --- an edge node's alert (registry v4) ------------------------------------------------------

WINDOW = b"\x77" * 32


def check_alert(raw, *, ctx=CTX, device=12, window=WINDOW, score=9):
    return check_alert_tx(raw, node_address=NODE.address, ctx=ctx, device=device, window_digest=window, score=score)


def test_the_alert_sent_passes_every_check_and_decodes():
    raw = sign_alert_tx(NODE, CTX, 12, WINDOW, 9)

    claim = read_alert_tx(raw)
    assert check_alert(raw) is None
    assert (claim.run_digest, claim.device, claim.window_digest, claim.score, claim.tx.sender) == (
        RUN, 12, WINDOW, 9, NODE.address)


@pytest.mark.parametrize(("signed", "expected", "why"), [
    ({"identity": derive_identities(seed=1, num_nodes=2)[1]}, "signer", "not by the node's key"),
    ({"ctx": replace(CTX, nonce=8)}, "nonce", "nonce 8, not the node's next nonce 7"),
    ({"gas": 60_000}, "gas", "gas limit 60000, not 100000"),
    ({"ctx": replace(CTX, run_digest=b"\x4b" * 32)}, "run_digest", "not this run's"),
    ({"device": 13}, "device", "names device 13, not 12"),
    ({"window": b"\x78" * 32}, "window_digest", "window digest mismatch"),
    ({"score": 10}, "score", "claims 10 attack verdicts; the window sent holds 9"),
])
def test_each_wrong_field_of_an_alert_is_refused_by_name(signed, expected, why):
    args = {"identity": NODE, "ctx": CTX, "device": 12, "window": WINDOW, "score": 9, **signed}
    raw = sign_alert_tx(args["identity"], args["ctx"], args["device"], args["window"], args["score"],
                        **({"gas": signed["gas"]} if "gas" in signed else {}))

    refusal = check_alert(raw)

    assert refusal is not None and refusal[0] == expected and why in refusal[1], refusal
    assert refusal[0] in ALERT_REFUSAL_CHECKS and refusal[1].startswith("alert ")


def test_an_update_is_not_an_alert():
    assert check_alert(sign_update_tx(NODE, CTX, 4, DIGEST, 128))[0] == "malformed"
    with pytest.raises(ValueError, match="not an alert call"):
        read_alert_tx(sign_update_tx(NODE, CTX, 4, DIGEST, 128))
