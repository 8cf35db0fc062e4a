"""Edge-node identities and offline transaction signing (eth-account + eth-abi, no web3).

Ray workers cannot reach the chain, which lives in the server's process (embedded) or behind
an endpoint the workers do not know. A node therefore signs its own ``registerData`` and
``submitUpdate`` transactions from a :class:`TxContext` that the server sends with the round's
configuration, and returns the raw bytes; the server relays them unchanged, so ``msg.sender``
on chain is the node and no one can register on its behalf (DESIGN.md, "Why clients sign and
the server relays").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import rlp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_keys import keys
from eth_keys.constants import SECPK1_N
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

if TYPE_CHECKING:
    from bflsim.config import ExperimentConfig

__all__ = [
    "DATA_GAS_LIMIT",
    "UPDATE_GAS_LIMIT",
    "NodeIdentity",
    "SignedUpdate",
    "TxContext",
    "derive_identities",
    "encode_register_data",
    "encode_submit_update",
    "node_identities",
    "read_update_tx",
    "sign_data_tx",
    "sign_update_tx",
]

# Gas limits the nodes sign with. submitUpdate's limit is also its budget (the design asks for
# <= 60,000 per update registration): a contract change that breaks it fails loudly.
UPDATE_GAS_LIMIT = 60_000
DATA_GAS_LIMIT = 100_000

SUBMIT_UPDATE_SIGNATURE = "submitUpdate(uint32,bytes32,uint32)"
REGISTER_DATA_SIGNATURE = "registerData(bytes32,uint64)"
_SUBMIT_UPDATE_SELECTOR = function_signature_to_4byte_selector(SUBMIT_UPDATE_SIGNATURE)
_REGISTER_DATA_SELECTOR = function_signature_to_4byte_selector(REGISTER_DATA_SIGNATURE)

_KEY_TAG = b"bflsim/node-key/v1"


@dataclass(frozen=True)
class NodeIdentity:
    """An edge node: its index on chain (0..254) and its secp256k1 key."""

    index: int
    private_key: bytes = field(repr=False)
    address: str = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < 255:
            raise ValueError(f"node index must be in 0..254 (a uint256 bitmap); got {self.index}")
        if len(self.private_key) != 32:
            raise ValueError(f"a private key has 32 bytes; got {len(self.private_key)}")
        public = keys.PrivateKey(self.private_key).public_key
        object.__setattr__(self, "address", public.to_checksum_address())


def derive_identities(seed: int, num_nodes: int) -> list[NodeIdentity]:
    """Deterministic identities for nodes 0..num_nodes-1 from an experiment seed.

    key_i = sha256(tag || seed (8 bytes) || i (4 bytes) || counter (1 byte)), with the
    counter raised in the (astronomically rare) case the hash is not a valid secp256k1 key.
    The same seed gives the same addresses in the server and in every worker.
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits; got {seed}")
    identities = []
    for index in range(num_nodes):
        for counter in range(256):
            material = _KEY_TAG + seed.to_bytes(8, "big") + index.to_bytes(4, "big")
            key = hashlib.sha256(material + bytes([counter])).digest()
            if 0 < int.from_bytes(key, "big") < SECPK1_N:
                break
        identities.append(NodeIdentity(index, key))
    return identities


@lru_cache(maxsize=4)
def _identities(seed: int, num_nodes: int) -> tuple[NodeIdentity, ...]:
    return tuple(derive_identities(seed, num_nodes))


def node_identities(config: ExperimentConfig) -> tuple[NodeIdentity, ...]:
    """Every edge node's key pair, from ``ledger.key_seed`` (default ``federation.seed``).

    In a simulation one seed yields all keys; on real devices each node keeps its own.
    """
    seed = config.ledger.key_seed if config.ledger.key_seed is not None else config.federation.seed
    return _identities(seed, config.federation.num_nodes)


@dataclass(frozen=True)
class TxContext:
    """What a node needs to sign a transaction offline; the server sends one per node.

    Fees: EIP-1559 (``max_fee_per_gas`` / ``max_priority_fee_per_gas``), or a legacy
    ``gas_price`` on chains without a base fee (then the 1559 fields are ignored).
    """

    chain_id: int
    contract_address: str
    nonce: int
    max_fee_per_gas: int = 0
    max_priority_fee_per_gas: int = 0
    gas_price: int | None = None

    def to_config(self, prefix: str = "chain.") -> dict[str, int | str]:
        """Flat str/int entries for a Flower ConfigRecord."""
        config: dict[str, int | str] = {
            f"{prefix}chain_id": self.chain_id,
            f"{prefix}contract_address": self.contract_address,
            f"{prefix}nonce": self.nonce,
            f"{prefix}max_fee_per_gas": self.max_fee_per_gas,
            f"{prefix}max_priority_fee_per_gas": self.max_priority_fee_per_gas,
        }
        if self.gas_price is not None:
            config[f"{prefix}gas_price"] = self.gas_price
        return config

    @classmethod
    def from_config(cls, config: Any, prefix: str = "chain.") -> TxContext:
        """Inverse of :meth:`to_config` (accepts any mapping, e.g. a ConfigRecord)."""
        gas_price = config.get(f"{prefix}gas_price")
        return cls(
            chain_id=int(config[f"{prefix}chain_id"]),
            contract_address=str(config[f"{prefix}contract_address"]),
            nonce=int(config[f"{prefix}nonce"]),
            max_fee_per_gas=int(config[f"{prefix}max_fee_per_gas"]),
            max_priority_fee_per_gas=int(config[f"{prefix}max_priority_fee_per_gas"]),
            gas_price=None if gas_price is None else int(gas_price),
        )


def bytes32(value: bytes, name: str) -> bytes:
    """``value`` as exactly 32 bytes (a digest for the chain), or a ValueError naming it."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes; got {value!r:.80}")
    return bytes(value)


def encode_submit_update(server_round: int, update_digest: bytes, num_samples: int) -> bytes:
    """Calldata of ``submitUpdate(round, updateDigest, numSamples)``."""
    digest = bytes32(update_digest, "update_digest")
    args = abi_encode(["uint32", "bytes32", "uint32"], [server_round, digest, num_samples])
    return _SUBMIT_UPDATE_SELECTOR + args


def encode_register_data(data_digest: bytes, timestamp: int) -> bytes:
    """Calldata of ``registerData(digest, timestamp)``."""
    digest = bytes32(data_digest, "data_digest")
    return _REGISTER_DATA_SELECTOR + abi_encode(["bytes32", "uint64"], [digest, timestamp])


def _sign(identity: NodeIdentity, ctx: TxContext, data: bytes, gas: int) -> bytes:
    tx: dict[str, Any] = {
        "chainId": ctx.chain_id,
        "nonce": ctx.nonce,
        "to": to_checksum_address(ctx.contract_address),
        "value": 0,
        "gas": gas,
        "data": data,
    }
    if ctx.gas_price is not None:
        tx["gasPrice"] = ctx.gas_price
    else:
        tx["maxFeePerGas"] = ctx.max_fee_per_gas
        tx["maxPriorityFeePerGas"] = ctx.max_priority_fee_per_gas
    return bytes(Account.sign_transaction(tx, identity.private_key).raw_transaction)


def sign_update_tx(
    identity: NodeIdentity,
    ctx: TxContext,
    server_round: int,
    update_digest: bytes,
    num_samples: int,
    *,
    gas: int = UPDATE_GAS_LIMIT,
) -> bytes:
    """Raw signed ``submitUpdate`` transaction, built offline; relay it with ``send_raw``."""
    return _sign(identity, ctx, encode_submit_update(server_round, update_digest, num_samples), gas)


def sign_data_tx(
    identity: NodeIdentity,
    ctx: TxContext,
    data_digest: bytes,
    timestamp: int,
    *,
    gas: int = DATA_GAS_LIMIT,
) -> bytes:
    """Raw signed ``registerData`` transaction, built offline; relay it with ``send_raw``."""
    return _sign(identity, ctx, encode_register_data(data_digest, timestamp), gas)


@dataclass(frozen=True)
class SignedUpdate:
    """What a raw ``submitUpdate`` transaction commits its signer to."""

    sender: str
    chain_id: int
    contract_address: str
    nonce: int
    server_round: int
    update_digest: bytes
    num_samples: int


def read_update_tx(raw_tx: bytes) -> SignedUpdate:
    """Decode a node's signed ``submitUpdate`` without sending it.

    The server compares ``update_digest`` with the digest it recomputes from the update it
    received, and ``sender`` with the node it expects, before relaying.
    """
    raw_tx = bytes(raw_tx)
    if raw_tx[:1] == b"\x02":  # EIP-1559: chainId, nonce, tip, maxFee, gas, to, value, data, ...
        fields = rlp.decode(raw_tx[1:])
        chain_id, nonce, to, data = fields[0], fields[1], fields[5], fields[7]
    elif raw_tx[:1] and raw_tx[0] >= 0xC0:  # legacy: nonce, gasPrice, gas, to, value, data, v
        fields = rlp.decode(raw_tx)
        nonce, to, data = fields[0], fields[3], fields[5]
        chain_id = (int.from_bytes(fields[6], "big") - 35) // 2
    else:
        raise ValueError(f"not a legacy or EIP-1559 transaction (type byte {raw_tx[:1]!r})")
    data = bytes(data)
    if data[:4] != _SUBMIT_UPDATE_SELECTOR:
        raise ValueError(f"not a submitUpdate call (selector 0x{data[:4].hex()})")
    server_round, digest, num_samples = abi_decode(["uint32", "bytes32", "uint32"], data[4:])
    return SignedUpdate(
        sender=Account.recover_transaction(raw_tx),
        chain_id=int.from_bytes(chain_id, "big") if isinstance(chain_id, bytes) else chain_id,
        contract_address=to_checksum_address(to),
        nonce=int.from_bytes(nonce, "big"),
        server_round=server_round,
        update_digest=bytes(digest),
        num_samples=num_samples,
    )
