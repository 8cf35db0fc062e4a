"""Edge-node identities and offline transaction signing (eth-account + eth-abi, no web3).

Ray workers cannot reach the chain, which lives in the server's process (embedded) or behind
an endpoint the workers do not know. A node therefore signs its own ``registerData`` and
``submitUpdate`` transactions from a :class:`TxContext` that the server sends with the round's
configuration, and returns the raw bytes; the server relays them unchanged, so ``msg.sender``
on chain is the node and no one can register on its behalf (DESIGN.md, "Why clients sign and
the server relays").

Where a node's key comes from is ``ledger.key_source`` (:func:`node_identities`):

- ``seed``: ``sha256(tag || seed || i)`` from ``ledger.key_seed`` (default ``federation.seed``).
  The seed is in the manifest, so anyone holding the run folder can re-sign a whole run.
- ``env``: the same derivation with a secret mixed in, read from the environment variable
  ``ledger.key_secret_env`` (default ``BFLSIM_NODE_KEY_SECRET``, at least 16 characters).
  Ray workers inherit the variable; it is never written to the run folder.
- ``keystore``: one file per node, ``<ledger.keystore>/node-<i>.key`` (64 hex digits, mode
  0600), created with a random key when missing. The folder is not part of the run folder.

An auditor without the secret or the keystore can check that the registry's addresses are
the trail's, not that they belong to the keys the run's nodes held
(:func:`expected_addresses` says which it can do).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rlp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_keys.constants import SECPK1_N
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

if TYPE_CHECKING:
    from bflsim.config import ExperimentConfig

__all__ = [
    "DATA_GAS_LIMIT",
    "REFUSAL_CHECKS",
    "UPDATE_GAS_LIMIT",
    "NodeIdentity",
    "SignedTx",
    "SignedUpdate",
    "TxContext",
    "check_alert_tx",
    "check_update_tx",
    "derive_identities",
    "encode_alert",
    "encode_register_data",
    "encode_submit_update",
    "expected_addresses",
    "keystore_identities",
    "node_identities",
    "read_alert_tx",
    "read_data_tx",
    "read_tx",
    "read_update_tx",
    "recover_data_typed",
    "recover_update_typed",
    "sign_alert_tx",
    "sign_data_tx",
    "sign_data_typed",
    "sign_tx",
    "sign_update_tx",
    "sign_update_typed",
]

# Gas limits the nodes sign with. submitUpdate's limit is also its budget (the design asks for
# <= 60,000 per update registration): a contract change that breaks it fails loudly.
UPDATE_GAS_LIMIT = 60_000
DATA_GAS_LIMIT = 100_000
ALERT_GAS_LIMIT = 100_000  # an edge node's alert about a device (registry v4)

SUBMIT_UPDATE_SIGNATURE = "submitUpdate(bytes32,uint32,bytes32,uint32)"
REGISTER_DATA_SIGNATURE = "registerData(bytes32,uint64,uint32)"
ALERT_SIGNATURE = "alert(bytes32,uint32,bytes32,uint32)"
_SUBMIT_UPDATE_TYPES = ["bytes32", "uint32", "bytes32", "uint32"]
_REGISTER_DATA_TYPES = ["bytes32", "uint64", "uint32"]
_SUBMIT_UPDATE_SELECTOR = function_signature_to_4byte_selector(SUBMIT_UPDATE_SIGNATURE)
_REGISTER_DATA_SELECTOR = function_signature_to_4byte_selector(REGISTER_DATA_SIGNATURE)
_ALERT_TYPES = ["bytes32", "uint32", "bytes32", "uint32"]
_ALERT_SELECTOR = function_signature_to_4byte_selector(ALERT_SIGNATURE)

_KEY_TAG = b"bflsim/node-key/v1"
_SECRET_KEY_TAG = b"bflsim/node-key/v2-secret"
MIN_SECRET_LENGTH = 16
KEY_FILE = "node-{index}.key"


@dataclass(frozen=True)
class NodeIdentity:
    """An edge node: its index on chain (a uint32) and its secp256k1 key."""

    index: int
    private_key: bytes = field(repr=False)
    address: str = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < 2**32 - 1:
            raise ValueError(f"node index must be in 0..{2**32 - 2} (a uint32); got {self.index}")
        if len(self.private_key) != 32:
            raise ValueError(f"a private key has 32 bytes; got {len(self.private_key)}")
        public = keys.PrivateKey(self.private_key).public_key
        object.__setattr__(self, "address", public.to_checksum_address())


def derive_identities(seed: int, num_nodes: int, secret: bytes | None = None) -> list[NodeIdentity]:
    """Deterministic identities for nodes 0..num_nodes-1 from an experiment seed.

    key_i = sha256(tag || seed (8 bytes) || i (4 bytes) || counter (1 byte)), with the
    counter raised in the (astronomically rare) case the hash is not a valid secp256k1 key.
    The same seed gives the same addresses in the server and in every worker. With
    ``secret`` (``ledger.key_source = "env"``) the material is instead
    ``tag_v2 || sha256(secret) || seed || i || counter``: without the secret the keys
    cannot be derived from the manifest.
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits; got {seed}")
    prefix = _KEY_TAG if secret is None else _SECRET_KEY_TAG + hashlib.sha256(secret).digest()
    identities = []
    for index in range(num_nodes):
        for counter in range(256):
            material = prefix + seed.to_bytes(8, "big") + index.to_bytes(4, "big")
            key = hashlib.sha256(material + bytes([counter])).digest()
            if 0 < int.from_bytes(key, "big") < SECPK1_N:
                break
        identities.append(NodeIdentity(index, key))
    return identities


@lru_cache(maxsize=4)
def _identities(seed: int, num_nodes: int, secret: bytes | None = None) -> tuple[NodeIdentity, ...]:
    return tuple(derive_identities(seed, num_nodes, secret))


def _key_seed(config: ExperimentConfig) -> int:
    return config.ledger.key_seed if config.ledger.key_seed is not None else config.federation.seed


def _secret(config: ExperimentConfig, *, required: bool = True) -> bytes | None:
    name = config.ledger.key_secret_env
    value = os.environ.get(name)
    if value is None or len(value) < MIN_SECRET_LENGTH:
        if not required:
            return None
        got = "it is not set" if value is None else f"it has {len(value)} characters"
        raise ValueError(
            f"ledger.key_source = 'env' reads the nodes' key secret from ${name}, but {got}; "
            f"set it to at least {MIN_SECRET_LENGTH} random characters (e.g. `export {name}=$(openssl rand -hex 32)`)"
        )
    return value.encode("utf-8")


def parse_private_key(text: str) -> bytes | None:
    """The secp256k1 private key written as 64 hex digits (``0x`` and surrounding blanks
    allowed); None if ``text`` is not one."""
    try:
        key = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        return None
    return key if len(key) == 32 and 0 < int.from_bytes(key, "big") < SECPK1_N else None


def _read_key(path: Path) -> bytes:
    key = parse_private_key(path.read_text())
    if key is None:
        raise ValueError(f"{path}: expected a secp256k1 private key as 64 hex digits")
    return key


def _create_key(path: Path) -> None:
    """Write a fresh random key to ``path`` unless a key is already there (race-free across processes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        while True:
            key = secrets.token_bytes(32)
            if 0 < int.from_bytes(key, "big") < SECPK1_N:
                break
        fh.write(key.hex() + "\n")
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs stands
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def keystore_identities(folder: str | Path, num_nodes: int, *, create: bool = True) -> tuple[NodeIdentity, ...]:
    """Nodes 0..num_nodes-1 from their key files ``folder/node-<i>.key``; missing ones are
    created with random keys when ``create`` (else a FileNotFoundError names the file)."""
    folder = Path(folder).expanduser()
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    identities = []
    for index in range(num_nodes):
        path = folder / KEY_FILE.format(index=index)
        if not path.is_file():
            if not create:
                raise FileNotFoundError(f"ledger.keystore: no key file {path} for node {index}")
            _create_key(path)
        identities.append(NodeIdentity(index, _read_key(path)))
    return tuple(identities)


@lru_cache(maxsize=4)
def _keystore(folder: str, num_nodes: int) -> tuple[NodeIdentity, ...]:
    return keystore_identities(folder, num_nodes)


def node_identities(config: ExperimentConfig) -> tuple[NodeIdentity, ...]:
    """Every edge node's key pair, from ``ledger.key_source`` (see the module docstring).

    In a simulation one process can hold all keys; on real devices each node keeps its own.
    """
    ledger, num_nodes = config.ledger, config.federation.num_nodes
    if ledger.key_source == "keystore":
        return _keystore(str(Path(str(ledger.keystore)).expanduser().resolve()), num_nodes)
    secret = _secret(config) if ledger.key_source == "env" else None
    return _identities(_key_seed(config), num_nodes, secret)


def expected_addresses(config: ExperimentConfig) -> tuple[dict[int, str] | None, str]:
    """The nodes' addresses as an auditor here can establish them, without creating keys.

    Returns ``(addresses, how)``; ``addresses`` is None when this process cannot know them
    (``env`` without the secret, ``keystore`` without the key files), and ``how`` says why.
    """
    ledger, num_nodes = config.ledger, config.federation.num_nodes
    if ledger.key_source == "seed":
        return {i.index: i.address for i in _identities(_key_seed(config), num_nodes)}, "the run's key seed"
    if ledger.key_source == "env":
        secret = _secret(config, required=False)
        if secret is None:
            return None, f"the key secret (${ledger.key_secret_env}) is not set here"
        return ({i.index: i.address for i in _identities(_key_seed(config), num_nodes, secret)},
                f"the key secret in ${ledger.key_secret_env}")
    try:
        identities = keystore_identities(str(ledger.keystore), num_nodes, create=False)
    except (FileNotFoundError, ValueError) as err:
        return None, f"the keystore is not readable here ({err})"
    return {i.index: i.address for i in identities}, f"the keystore {ledger.keystore}"


@dataclass(frozen=True)
class TxContext:
    """What a node needs to sign a transaction offline; the server sends one per node.

    Fees: EIP-1559 (``max_fee_per_gas`` / ``max_priority_fee_per_gas``), or a legacy
    ``gas_price`` on chains without a base fee (then the 1559 fields are ignored).
    ``run_digest`` is the registry's: every ``submitUpdate`` names it, so a signed update
    belongs to one run and cannot be replayed into another.
    """

    chain_id: int
    contract_address: str
    nonce: int
    max_fee_per_gas: int = 0
    max_priority_fee_per_gas: int = 0
    gas_price: int | None = None
    run_digest: bytes = bytes(32)

    def to_config(self, prefix: str = "chain.") -> dict[str, int | str]:
        """Flat str/int entries for a Flower ConfigRecord."""
        config: dict[str, int | str] = {
            f"{prefix}chain_id": self.chain_id,
            f"{prefix}contract_address": self.contract_address,
            f"{prefix}nonce": self.nonce,
            f"{prefix}max_fee_per_gas": self.max_fee_per_gas,
            f"{prefix}max_priority_fee_per_gas": self.max_priority_fee_per_gas,
            f"{prefix}run_digest": self.run_digest,
        }
        if self.gas_price is not None:
            config[f"{prefix}gas_price"] = self.gas_price
        return config

    def to_json(self) -> dict[str, int | str | None]:
        """JSON-ready form (the trail keeps the context a refused node was given)."""
        return {
            "chain_id": self.chain_id, "contract_address": self.contract_address, "nonce": self.nonce,
            "max_fee_per_gas": self.max_fee_per_gas, "max_priority_fee_per_gas": self.max_priority_fee_per_gas,
            "gas_price": self.gas_price, "run_digest": "0x" + self.run_digest.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> TxContext:
        """Inverse of :meth:`to_json`."""
        return cls(**{**data, "run_digest": bytes.fromhex(str(data["run_digest"]).removeprefix("0x"))})

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
            run_digest=bytes(config.get(f"{prefix}run_digest", bytes(32))),
        )


def bytes32(value: bytes, name: str) -> bytes:
    """``value`` as exactly 32 bytes (a digest for the chain), or a ValueError naming it."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes; got {value!r:.80}")
    return bytes(value)


def encode_submit_update(run_digest: bytes, server_round: int, update_digest: bytes, num_samples: int) -> bytes:
    """Calldata of ``submitUpdate(runDigest, round, updateDigest, numSamples)``."""
    args = [bytes32(run_digest, "run_digest"), server_round, bytes32(update_digest, "update_digest"), num_samples]
    return _SUBMIT_UPDATE_SELECTOR + abi_encode(_SUBMIT_UPDATE_TYPES, args)


def encode_register_data(data_digest: bytes, timestamp: int, num_samples: int) -> bytes:
    """Calldata of ``registerData(digest, timestamp, numSamples)``."""
    args = [bytes32(data_digest, "data_digest"), timestamp, num_samples]
    return _REGISTER_DATA_SELECTOR + abi_encode(_REGISTER_DATA_TYPES, args)


def encode_alert(run_digest: bytes, device: int, window_digest: bytes, score: int) -> bytes:
    """Calldata of ``alert(runDigest, device, windowDigest, score)`` (registry v4)."""
    args = [bytes32(run_digest, "run_digest"), device, bytes32(window_digest, "window_digest"), score]
    return _ALERT_SELECTOR + abi_encode(_ALERT_TYPES, args)


def sign_tx(identity: NodeIdentity, ctx: TxContext, data: bytes, gas: int) -> bytes:
    """Raw signed transaction calling the registry of ``ctx`` with calldata ``data``."""
    return _sign(identity, ctx, data, gas)


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
    """Raw signed ``submitUpdate`` transaction for ``ctx``'s run, built offline; relay it with
    ``send_raw``."""
    data = encode_submit_update(ctx.run_digest, server_round, update_digest, num_samples)
    return _sign(identity, ctx, data, gas)


def sign_alert_tx(
    identity: NodeIdentity, ctx: TxContext, device: int, window_digest: bytes, score: int, *,
    gas: int = ALERT_GAS_LIMIT,
) -> bytes:
    """Raw signed ``alert`` transaction of an edge node about ``device`` (``window_digest``:
    :func:`bflsim.traffic.window_digest`; ``score``: the window's attack verdicts), built
    offline for ``ctx``'s run; relay it with ``send_raw``."""
    return _sign(identity, ctx, encode_alert(ctx.run_digest, device, window_digest, score), gas)


def sign_data_tx(
    identity: NodeIdentity,
    ctx: TxContext,
    data_digest: bytes,
    timestamp: int,
    num_samples: int,
    *,
    gas: int = DATA_GAS_LIMIT,
) -> bytes:
    """Raw signed ``registerData`` transaction (digest, timestamp and size of the node's data
    batch), built offline; relay it with ``send_raw``."""
    return _sign(identity, ctx, encode_register_data(data_digest, timestamp, num_samples), gas)


@dataclass(frozen=True)
class SignedTx:
    """Every field of a raw signed transaction, decoded (nothing is sent)."""

    sender: str
    tx_type: int  # 0 legacy (EIP-155), 2 EIP-1559
    chain_id: int | None  # None: a pre-EIP-155 legacy transaction, valid on any chain
    nonce: int
    gas: int
    to: str | None  # None: contract creation
    value: int
    data: bytes
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None


@dataclass(frozen=True)
class SignedUpdate:
    """What a raw ``submitUpdate`` transaction commits its signer to."""

    sender: str
    chain_id: int | None
    contract_address: str
    nonce: int
    server_round: int
    update_digest: bytes
    num_samples: int
    run_digest: bytes = bytes(32)
    gas: int = 0
    value: int = 0
    tx: SignedTx | None = field(default=None, repr=False, compare=False)


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def read_tx(raw_tx: bytes) -> SignedTx:
    """Decode any legacy or EIP-1559 signed transaction, recovering its signer.

    Raises ValueError (naming what is wrong) for bytes that are not such a transaction.
    """
    raw_tx = bytes(raw_tx)
    try:
        if raw_tx[:1] == b"\x02":  # chainId, nonce, tip, maxFee, gas, to, value, data, access list, v, r, s
            fields = rlp.decode(raw_tx[1:])
            if len(fields) != 12:
                raise ValueError(f"an EIP-1559 transaction has 12 fields; got {len(fields)}")
            chain_id, nonce, tip, max_fee, gas, to, value, data = fields[:8]
            extra = {"max_fee_per_gas": _int(max_fee), "max_priority_fee_per_gas": _int(tip)}
            tx_type, chain = 2, _int(chain_id)
        elif raw_tx[:1] and raw_tx[0] >= 0xC0:  # nonce, gasPrice, gas, to, value, data, v, r, s
            fields = rlp.decode(raw_tx)
            if len(fields) != 9:
                raise ValueError(f"a legacy transaction has 9 fields; got {len(fields)}")
            nonce, gas_price, gas, to, value, data, v = fields[:7]
            extra = {"gas_price": _int(gas_price)}
            tx_type, chain = 0, (_int(v) - 35) // 2 if _int(v) >= 35 else None
        else:
            raise ValueError(f"not a legacy or EIP-1559 transaction (type byte {raw_tx[:1]!r})")
        sender = Account.recover_transaction(raw_tx)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"not a valid signed transaction: {type(err).__name__}: {err}") from err
    return SignedTx(
        sender=sender, tx_type=tx_type, chain_id=chain, nonce=_int(nonce), gas=_int(gas),
        to=to_checksum_address(to) if to else None, value=_int(value), data=bytes(data), **extra,
    )


def read_update_tx(raw_tx: bytes) -> SignedUpdate:
    """Decode a node's signed ``submitUpdate`` without sending it.

    The calldata must be exactly a ``submitUpdate`` call (selector and four words). The server
    compares every field with what it expects (:meth:`bflsim.ledger.session.ChainSession.relay_updates`)
    before relaying.
    """
    tx, (run, server_round, digest, num_samples) = _decode_call(
        raw_tx, _SUBMIT_UPDATE_SELECTOR, _SUBMIT_UPDATE_TYPES, "submitUpdate")
    return SignedUpdate(
        sender=tx.sender, chain_id=tx.chain_id, contract_address=tx.to, nonce=tx.nonce,
        server_round=server_round, update_digest=bytes(digest), num_samples=num_samples,
        run_digest=bytes(run), gas=tx.gas, value=tx.value, tx=tx,
    )


# Why the server refuses a node's signed submitUpdate before relaying it (the ``refusal`` of a
# trail update); "reverted" is a relayed one that failed on chain anyway.
REFUSAL_CHECKS = (
    "malformed", "signer", "chain_id", "to", "nonce", "fees", "gas", "value", "run_digest", "round",
    "update_digest", "num_samples", "signature",  # signature: batched mode's EIP-712 Update does not verify
)


def check_update_tx(
    raw_tx: bytes,
    *,
    node_address: str,
    ctx: TxContext,
    server_round: int,
    update_digest: bytes,
    num_samples: int,
) -> tuple[str, str] | None:
    """Why the server must not relay ``raw_tx`` as this node's update, or None if it may.

    ``ctx`` is the context the server gave the node for the round (chain, registry, nonce,
    fees, run digest); ``update_digest`` the digest of the weights the server received;
    ``num_samples`` the node's registered sample count. Returns ``(check, reason)``, check one
    of :data:`REFUSAL_CHECKS`. A transaction that passes every check can still revert only
    if the chain's state differs from what the server read (it never relays such a claim as
    accepted: only mined successes are).
    """
    try:
        claim = read_update_tx(raw_tx)
    except ValueError as err:
        return "malformed", f"not a signed submitUpdate: {err}"
    assert claim.tx is not None
    checks = _tx_checks(claim.tx, node_address, ctx, UPDATE_GAS_LIMIT, "submitUpdate", claim.run_digest) + [
        ("round", claim.server_round == server_round, f"signed for round {claim.server_round}, not {server_round}"),
        ("update_digest", claim.update_digest == update_digest,
         f"update digest mismatch: signed 0x{claim.update_digest.hex()}, received weights hash to 0x{update_digest.hex()}"),
        ("num_samples", claim.num_samples == num_samples,
         f"claims {claim.num_samples} samples; the node registered {num_samples} with its data"),
    ]
    return _first_failed(checks, "submitUpdate")


def _tx_checks(tx: SignedTx, node_address: str, ctx: TxContext, gas: int, call: str,
               run_digest: bytes) -> list[tuple[str, bool, str]]:
    """The checks every node transaction the server relays must pass: its signer, chain,
    registry, nonce, fees, gas limit, value and the run it is signed for (``run_digest``,
    decoded from its calldata), against the context the node was given."""
    expected_address = to_checksum_address(node_address)
    return [
        ("signer", tx.sender == expected_address, f"signed by {tx.sender}, not by the node's key {expected_address}"),
        ("chain_id", tx.chain_id == ctx.chain_id, f"signed for chain id {tx.chain_id}, not {ctx.chain_id}"),
        ("to", tx.to == to_checksum_address(ctx.contract_address),
         f"sent to {tx.to}, not to the registry {to_checksum_address(ctx.contract_address)}"),
        ("nonce", tx.nonce == ctx.nonce, f"signed with nonce {tx.nonce}, not the node's next nonce {ctx.nonce}"),
        ("fees", _fees_match(tx, ctx), f"fees {_fees(tx)} differ from the round's {_ctx_fees(ctx)}"),
        ("gas", tx.gas == gas, f"gas limit {tx.gas}, not {gas}"),
        ("value", tx.value == 0, f"sends {tx.value} wei; {call} takes none"),
        ("run_digest", run_digest == ctx.run_digest,
         f"signed for run 0x{run_digest.hex()}, not this run's 0x{ctx.run_digest.hex()}"),
    ]


def _first_failed(checks: list[tuple[str, bool, str]], call: str) -> tuple[str, str] | None:
    for check, ok, reason in checks:
        if not ok:
            return check, f"{call} {reason}"
    return None


@dataclass(frozen=True)
class SignedAlert:
    """What a raw ``alert`` transaction (registry v4) commits its signer to."""

    run_digest: bytes
    device: int
    window_digest: bytes
    score: int
    tx: SignedTx = field(repr=False, compare=False)


def read_alert_tx(raw_tx: bytes) -> SignedAlert:
    """Decode an edge node's signed ``alert`` without sending it; ValueError for anything else."""
    tx, (run, device, window, score) = _decode_call(raw_tx, _ALERT_SELECTOR, _ALERT_TYPES, "alert")
    return SignedAlert(bytes(run), int(device), bytes(window), int(score), tx)


def _decode_call(raw_tx: bytes, selector: bytes, types: list[str], call: str) -> tuple[SignedTx, tuple]:
    """A signed transaction that must be exactly one ``call`` of the registry (selector and
    one word per argument), and its decoded arguments; ValueError naming what is wrong."""
    tx = read_tx(raw_tx)
    if tx.data[:4] != selector:
        raise ValueError(f"not a{'n' if call[0] in 'aeiou' else ''} {call} call (selector 0x{tx.data[:4].hex()})")
    if len(tx.data) != 4 + 32 * len(types):
        raise ValueError(f"{call} calldata has {len(tx.data)} bytes, not {4 + 32 * len(types)}")
    if tx.to is None:
        raise ValueError(f"a contract creation, not a{'n' if call[0] in 'aeiou' else ''} {call} call")
    try:
        return tx, tuple(abi_decode(types, tx.data[4:], strict=True))
    except Exception as err:
        raise ValueError(f"{call} arguments do not decode: {err}") from err


ALERT_REFUSAL_CHECKS = (
    "malformed", "signer", "chain_id", "to", "nonce", "fees", "gas", "value", "run_digest", "device",
    "window_digest", "score",
)
"""Why the server refuses an edge node's signed alert before relaying it (a forged or
mismatched transaction; a window that does not re-score as claimed is disputed instead)."""


def check_alert_tx(
    raw_tx: bytes, *, node_address: str, ctx: TxContext, device: int, window_digest: bytes, score: int,
) -> tuple[str, str] | None:
    """Why the server must not relay ``raw_tx`` as this edge node's alert about ``device``
    (the window it sent hashes to ``window_digest`` and holds ``score`` attack verdicts), or
    None if it may; the check is one of :data:`ALERT_REFUSAL_CHECKS`."""
    try:
        claim = read_alert_tx(raw_tx)
    except ValueError as err:
        return "malformed", f"not a signed alert: {err}"
    checks = _tx_checks(claim.tx, node_address, ctx, ALERT_GAS_LIMIT, "alert", claim.run_digest) + [
        ("device", claim.device == device, f"names device {claim.device}, not {device}"),
        ("window_digest", claim.window_digest == window_digest,
         f"window digest mismatch: signed 0x{claim.window_digest.hex()}, the window sent hashes to 0x{window_digest.hex()}"),
        ("score", claim.score == score, f"claims {claim.score} attack verdicts; the window sent holds {score}"),
    ]
    return _first_failed(checks, "alert")


def _fees(tx: SignedTx) -> str:
    if tx.tx_type == 0:
        return f"gas price {tx.gas_price}"
    return f"max fee {tx.max_fee_per_gas}, tip {tx.max_priority_fee_per_gas}"


def _ctx_fees(ctx: TxContext) -> str:
    if ctx.gas_price is not None:
        return f"gas price {ctx.gas_price}"
    return f"max fee {ctx.max_fee_per_gas}, tip {ctx.max_priority_fee_per_gas}"


def _fees_match(tx: SignedTx, ctx: TxContext) -> bool:
    if ctx.gas_price is not None:
        return tx.tx_type == 0 and tx.gas_price == ctx.gas_price
    return (tx.tx_type == 2 and tx.max_fee_per_gas == ctx.max_fee_per_gas
            and tx.max_priority_fee_per_gas == ctx.max_priority_fee_per_gas)


def read_data_tx(raw_tx: bytes) -> tuple[SignedTx, bytes, int, int]:
    """Decode a signed ``registerData``: the transaction, and the digest, timestamp and sample
    count it registers. Raises ValueError for anything else."""
    tx = read_tx(raw_tx)
    if tx.data[:4] != _REGISTER_DATA_SELECTOR or len(tx.data) != 4 + 32 * len(_REGISTER_DATA_TYPES):
        raise ValueError(f"not a registerData call (selector 0x{tx.data[:4].hex()}, {len(tx.data)} bytes)")
    try:
        digest, timestamp, num_samples = abi_decode(_REGISTER_DATA_TYPES, tx.data[4:], strict=True)
    except Exception as err:
        raise ValueError(f"registerData arguments do not decode: {err}") from err
    return tx, bytes(digest), int(timestamp), int(num_samples)


# --- batched mode (registry v3): EIP-712 typed data a node signs instead of a transaction --------

EIP712_NAME = "bflsim FederatedRegistry"
EIP712_VERSION = "3"
_EIP712_DOMAIN = [
    {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
]
_TYPES = {
    "Update": [
        {"name": "run", "type": "bytes32"}, {"name": "round", "type": "uint32"}, {"name": "node", "type": "uint32"},
        {"name": "updateDigest", "type": "bytes32"}, {"name": "numSamples", "type": "uint32"},
    ],
    "Data": [
        {"name": "run", "type": "bytes32"}, {"name": "node", "type": "uint32"}, {"name": "dataDigest", "type": "bytes32"},
        {"name": "timestamp", "type": "uint64"}, {"name": "numSamples", "type": "uint32"},
    ],
}


def _typed(primary: str, ctx: TxContext, message: dict[str, Any]) -> Any:
    return encode_typed_data(full_message={
        "types": {"EIP712Domain": _EIP712_DOMAIN, primary: _TYPES[primary]},
        "primaryType": primary,
        "domain": {"name": EIP712_NAME, "version": EIP712_VERSION, "chainId": ctx.chain_id,
                   "verifyingContract": to_checksum_address(ctx.contract_address)},
        "message": {"run": bytes32(ctx.run_digest, "run_digest"), **message},
    })


def _update_message(node: int, server_round: int, update_digest: bytes, num_samples: int) -> dict[str, Any]:
    return {"round": server_round, "node": node, "updateDigest": bytes32(update_digest, "update_digest"),
            "numSamples": num_samples}


def _data_message(node: int, data_digest: bytes, timestamp: int, num_samples: int) -> dict[str, Any]:
    return {"node": node, "dataDigest": bytes32(data_digest, "data_digest"), "timestamp": timestamp,
            "numSamples": num_samples}


def sign_update_typed(
    identity: NodeIdentity, ctx: TxContext, server_round: int, update_digest: bytes, num_samples: int
) -> bytes:
    """The node's 65-byte signature (r, s, v) of the EIP-712 ``Update`` of its update for
    ``ctx``'s run and registry (batched mode: nothing is sent; the aggregator puts it in the
    round's Merkle tree). The registry's ``recoverUpdate`` recovers the same signer."""
    message = _typed("Update", ctx, _update_message(identity.index, server_round, update_digest, num_samples))
    return bytes(Account.sign_message(message, identity.private_key).signature)


def recover_update_typed(
    signature: bytes, ctx: TxContext, node: int, server_round: int, update_digest: bytes, num_samples: int
) -> str | None:
    """Who signed this ``Update`` (checksummed), or None for a malformed signature."""
    message = _typed("Update", ctx, _update_message(node, server_round, update_digest, num_samples))
    return _recover(message, signature)


def sign_data_typed(
    identity: NodeIdentity, ctx: TxContext, data_digest: bytes, timestamp: int, num_samples: int
) -> bytes:
    """The node's signature of the EIP-712 ``Data`` registration of its batch (batched mode)."""
    message = _typed("Data", ctx, _data_message(identity.index, data_digest, timestamp, num_samples))
    return bytes(Account.sign_message(message, identity.private_key).signature)


def recover_data_typed(
    signature: bytes, ctx: TxContext, node: int, data_digest: bytes, timestamp: int, num_samples: int
) -> str | None:
    """Who signed this ``Data`` registration (checksummed), or None for a malformed signature."""
    return _recover(_typed("Data", ctx, _data_message(node, data_digest, timestamp, num_samples)), signature)


def _recover(message: Any, signature: bytes) -> str | None:
    signature = bytes(signature)
    if len(signature) != 65 or int.from_bytes(signature[32:64], "big") > SECPK1_N // 2:
        return None  # the registry's recover* refuse the high-s twin of a signature too
    try:
        return to_checksum_address(Account.recover_message(message, signature=signature))
    except Exception:  # noqa: BLE001 - any undecodable signature
        return None
