"""The ledger interface, its record types and errors, and the registry's compiled artifact."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from bflsim.ledger.identity import NodeIdentity, TxContext
from bflsim.runfolder.folder import RunStopped

__all__ = [
    "BITMAP_NODES",
    "MAX_NODES",
    "REGISTRY_VERSION",
    "ChainEvent",
    "ChainIdMismatch",
    "ContractNotFound",
    "DeviceInfo",
    "EndpointUnreachable",
    "InsufficientFunds",
    "Ledger",
    "LedgerError",
    "NodeInfo",
    "RegistryArtifact",
    "RoundInfo",
    "TransactionReverted",
    "TxRecord",
    "from_bitmap",
    "load_artifact",
    "node_set",
    "sorted_indices",
    "to_bitmap",
]

MAX_NODES = 2**32 - 1  # registry v3: node indices are uint32 (0..2**32 - 2)
BITMAP_NODES = 255  # registries v1 and v2 kept node sets in uint256 bitmaps: indices 0..254
ARTIFACT_ENV = "BFLSIM_REGISTRY_ARTIFACT"
REGISTRY_VERSION = 4  # what runs deploy now; trail/chain.json says which one a run used
_CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
_DEFAULT_ARTIFACT = _CONTRACTS / "FederatedRegistry.json"
# Registries of earlier versions, kept to audit the runs that used them (no registry_version
# in their trail/chain.json: 1). v1: one key for owner and aggregator, no run digest, no
# sample counts, no evaluation digest; v2: node sets as uint256 bitmaps (255 nodes at most),
# no batched mode; v3: no devices, alerts or quarantine (sources: git history of
# contracts/FederatedRegistry.sol; each artifact keeps its source's sha256).
_OLD_ARTIFACTS = {1: _CONTRACTS / "FederatedRegistry.v1.json", 2: _CONTRACTS / "FederatedRegistry.v2.json",
                  3: _CONTRACTS / "FederatedRegistry.v3.json"}


# ---- errors ----------------------------------------------------------------------------


class LedgerError(RunStopped):
    """Anything that went wrong talking to the chain; the message names endpoint and tx.

    During a run it stops the run (``stopped``: the rounds already committed stand).
    """


class EndpointUnreachable(LedgerError):
    """The JSON-RPC endpoint does not answer."""


class ChainIdMismatch(LedgerError):
    """The endpoint serves another chain than the one asked for."""


class ContractNotFound(LedgerError):
    """No code, or not the FederatedRegistry's code, at the given address."""


class InsufficientFunds(LedgerError):
    """The sending account cannot pay for the transaction's gas."""


class TransactionReverted(LedgerError):
    """The contract reverted; ``error`` is the decoded custom error, e.g. ``NotInCohort``."""

    def __init__(
        self, message: str, *, kind: str, tx_hash: str | None, error: str | None, args: tuple
    ):
        super().__init__(message)
        self.kind = kind
        self.tx_hash = tx_hash
        self.error = error
        self.args_decoded = args


# ---- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TxRecord:
    """One mined transaction (a condensed receipt) and its latency, send to receipt."""

    kind: str
    tx_hash: str
    gas_used: int
    seconds: float
    block: int
    sender: str
    status: int = 1  # 1 = success, 0 = reverted (still mined, gas still paid)
    error: str | None = None  # decoded revert reason when status == 0
    raw: bytes | None = field(default=None, repr=False)  # the signed bytes (None if unlocked-sent)


@dataclass(frozen=True)
class NodeInfo:
    address: str
    registered: bool
    active: bool
    index: int
    rejections: int
    data_digest: bytes
    data_timestamp: int
    num_samples: int = 0  # the registered size of the node's data batch


@dataclass(frozen=True)
class DeviceInfo:
    """A device in the registry (v4), as one edge node sees it."""

    device: int
    edge_node: int
    registered: bool
    quarantined: bool
    alerters: int  # edge nodes that have sent the rule's number of alerts about it
    behind: bool  # the device sits behind ``edge_node``
    alerts: int  # the alerts ``edge_node`` sent about it


@dataclass(frozen=True)
class RoundInfo:
    """A round as the registry knows it. ``scores_digest`` is stored by v1/v2 registries;
    v3 keeps it in the RoundCommitted event, from which it is read. Batched rounds (v3) have
    no per-node sets on chain: ``cohort``/``submitted``/``accepted`` are empty, and
    ``cohort_digest`` (the cohort's Merkle root), ``updates_root`` and the counts say what was
    committed."""

    server_round: int
    status: Literal["none", "open", "committed"]
    cohort: tuple[int, ...]
    submitted: tuple[int, ...]
    accepted: tuple[int, ...]
    global_digest: bytes
    new_global_digest: bytes
    scores_digest: bytes
    batched: bool = False
    cohort_size: int = 0
    num_submitted: int = 0
    num_accepted: int = 0
    cohort_digest: bytes = bytes(32)
    updates_root: bytes = bytes(32)


@dataclass(frozen=True)
class ChainEvent:
    name: str
    block: int
    tx_hash: str
    log_index: int
    args: dict[str, Any] = field(default_factory=dict)


# ---- node sets ------------------------------------------------------------------------


def to_bitmap(indices: Iterable[int]) -> int:
    """Set of node indices -> a v1/v2 registry's uint256 bitmap (bit i = node i)."""
    bitmap = 0
    for index in indices:
        index = int(index)
        if not 0 <= index < BITMAP_NODES:
            raise ValueError(f"node index must be in 0..{BITMAP_NODES - 1}; got {index}")
        bitmap |= 1 << index
    return bitmap


def from_bitmap(bitmap: int) -> tuple[int, ...]:
    """uint256 bitmap -> sorted node indices."""
    return tuple(i for i in range(bitmap.bit_length()) if bitmap >> i & 1)


def node_set(value: int | Sequence[int]) -> tuple[int, ...]:
    """A node set as an event carries it -> sorted indices: a bitmap (registries v1, v2) or a
    list of indices (v3)."""
    if isinstance(value, int):
        return from_bitmap(value)
    return tuple(sorted(int(i) for i in value))


def sorted_indices(indices: Iterable[int], what: str) -> list[int]:
    """Distinct node indices, sorted, each a uint32 below 2**32 - 1, as the v3 registry takes
    them; a ValueError names ``what`` and the offending value."""
    result = sorted({int(i) for i in indices})
    if result and not 0 <= result[0] <= result[-1] < MAX_NODES:
        bad = result[0] if result[0] < 0 else result[-1]
        raise ValueError(f"{what}: node index must be in 0..{MAX_NODES - 1}; got {bad}")
    return result


# ---- artifact --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RegistryArtifact:
    """contracts/FederatedRegistry.json, with the ABI indexed for encoding and decoding."""

    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    compiler_version: str
    source_sha256: str
    path: Path
    # 4-byte selector -> (name, input names, input types): custom errors + Error/Panic
    errors: dict[bytes, tuple[str, list[str], list[str]]] = field(init=False, repr=False)
    # topic0 -> event ABI entry
    events: dict[bytes, dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        errors = {
            keccak(text="Error(string)")[:4]: ("Error", ["reason"], ["string"]),
            keccak(text="Panic(uint256)")[:4]: ("Panic", ["code"], ["uint256"]),
        }
        events = {}
        for item in self.abi:
            if item["type"] not in ("error", "event"):
                continue
            types = [i["type"] for i in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            if item["type"] == "error":
                errors[keccak(text=signature)[:4]] = (
                    item["name"], [i["name"] for i in item["inputs"]], types
                )
            else:
                events[keccak(text=signature)] = item
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "events", events)

    @property
    def version(self) -> int:
        """The registry version this artifact is: 4 has device alerts, 3 batched rounds, 2 a run digest."""
        names = {item.get("name") for item in self.abi}
        return 4 if "alert" in names else 3 if "openBatch" in names else 2 if "runDigest" in names else 1

    @property
    def code_hash(self) -> bytes:
        """keccak256 of the runtime code: what ``eth_getCode`` must hash to at our address."""
        return keccak(self.deployed_bytecode)

    def decode_revert(self, data: bytes) -> tuple[str | None, tuple, str]:
        """Revert data -> (error name, arguments, a readable sentence)."""
        if len(data) < 4:
            return None, (), "reverted without a reason" if not data else f"0x{data.hex()}"
        entry = self.errors.get(data[:4])
        if entry is None:
            return None, (), f"unknown revert data 0x{data.hex()}"
        name, names, types = entry
        try:
            values = abi_decode(types, data[4:])
        except Exception:  # noqa: BLE001 - malformed data: show it raw
            return name, (), f"{name}(0x{data[4:].hex()})"
        shown = ", ".join(
            f"{n}={_show(v, t)}" if n else _show(v, t) for n, v, t in zip(names, values, types)
        )
        if name == "Error":
            return name, tuple(values), str(values[0])
        return name, tuple(values), f"{name}({shown})"


def _show(value: Any, abi_type: str) -> str:
    if abi_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def load_artifact(path: str | Path | None = None, *, version: int | None = None) -> RegistryArtifact:
    """Read the compiled registry (default: contracts/FederatedRegistry.json in the repo,
    or ``$BFLSIM_REGISTRY_ARTIFACT``); ``version`` 1 is the registry of runs made before v2."""
    if version is not None and version != REGISTRY_VERSION:
        if version not in _OLD_ARTIFACTS:
            known = sorted([*_OLD_ARTIFACTS, REGISTRY_VERSION])
            raise ValueError(f"registry_version must be one of {known}; got {version!r}")
        path = _OLD_ARTIFACTS[version]
    path = Path(path or os.environ.get(ARTIFACT_ENV) or _DEFAULT_ARTIFACT)
    return _load_artifact(path.resolve())


@cache
def _load_artifact(path: Path) -> RegistryArtifact:
    if not path.is_file():
        raise FileNotFoundError(
            f"registry artifact {path} not found: build it with `python contracts/build.py`, "
            f"or point ${ARTIFACT_ENV} at a copy"
        )
    raw = json.loads(path.read_text())
    return RegistryArtifact(
        abi=raw["abi"],
        bytecode=bytes.fromhex(raw["bytecode"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(raw["deployedBytecode"].removeprefix("0x")),
        compiler_version=raw["compiler"]["version"],
        source_sha256=raw["sourceSha256"],
        path=path,
    )


# ---- the interface ---------------------------------------------------------------------


class Ledger(ABC):
    """A FederatedRegistry on some chain, driven by the server: the owner (deploys, registers
    the nodes, names the aggregator) and the aggregator (opens and commits the rounds), two
    keys where the backend has a second one.

    Transactions the server sends are recorded in :attr:`records` (kind, hash, gas, seconds,
    block). Nodes' own transactions are signed offline (``sign_update_tx``) and relayed with
    :meth:`send_raw`. Node sets are given as indices; bitmaps stay inside.
    """

    enabled: bool = True

    def __init__(self) -> None:
        self.records: list[TxRecord] = []

    # -- chain ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def chain_id(self) -> int: ...

    @property
    @abstractmethod
    def address(self) -> str | None:
        """The registry's address (None before deploy/attach)."""

    @property
    @abstractmethod
    def operator(self) -> str:
        """The server's owner account (deploys the registry and registers the nodes)."""

    @property
    def aggregator(self) -> str:
        """The account that opens and commits rounds (the operator unless the backend has a
        separate aggregator key)."""
        return self.operator

    @property
    def run_digest(self) -> bytes:
        """The run digest the registry was deployed with (zero before deploy/attach)."""
        return bytes(32)

    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    # -- setup ---------------------------------------------------------------------------
    @abstractmethod
    def deploy(self, max_rejections: int, run_digest: bytes = bytes(32)) -> str:
        """Deploy a fresh registry for the run ``run_digest``, owned by :attr:`operator`, and
        hand the rounds to :attr:`aggregator`; returns its address."""

    @abstractmethod
    def attach(self, address: str) -> None:
        """Use the registry at ``address``, checking that its code is ours."""

    @abstractmethod
    def fund(self, addresses: Sequence[str], wei: int) -> list[TxRecord]:
        """Send ``wei`` from the operator to every address that holds less."""

    @abstractmethod
    def register_nodes(self, nodes: Mapping[int, str]) -> list[TxRecord]:
        """Register ``{index: address}``, in as many transactions as the block gas limit needs."""

    def enroll(
        self, identities: Sequence[NodeIdentity], fund_wei: int = 10**18
    ) -> list[TxRecord]:
        """Fund the nodes' accounts and register them: the setup step for a federation."""
        records = list(self.fund([n.address for n in identities], fund_wei))
        return records + self.register_nodes({n.index: n.address for n in identities})

    @abstractmethod
    def set_aggregator(self, address: str) -> TxRecord | None: ...

    # -- rounds --------------------------------------------------------------------------
    @abstractmethod
    def tx_context(self, node_address: str) -> TxContext:
        """What the node needs to sign its next transaction offline (chain, contract, nonce,
        fees)."""

    def tx_contexts(self, nodes: Mapping[int, str]) -> dict[int, TxContext]:
        """:meth:`tx_context` for ``{index: address}``, keyed by index."""
        return {index: self.tx_context(address) for index, address in nodes.items()}

    @abstractmethod
    def open_round(
        self, server_round: int, global_digest: bytes, cohort: Iterable[int]
    ) -> TxRecord | None: ...

    @abstractmethod
    def commit_round(
        self,
        server_round: int,
        new_global_digest: bytes,
        accepted: Iterable[int],
        scores_digest: bytes,
        evaluation_digest: bytes = bytes(32),
        *,
        cohort: Iterable[int] | None = None,
    ) -> TxRecord | None:
        """Close the round: submitters not in ``accepted`` get a rejection each. ``cohort``:
        the round's cohort as opened (default: what :meth:`open_round` was given)."""

    @abstractmethod
    def send_raw(self, raw_tx: bytes, kind: str = "relay") -> TxRecord | None:
        """Relay a transaction a node signed; raises TransactionReverted if it reverts."""

    @abstractmethod
    def send_raw_many(self, raw_txs: Sequence[bytes], kind: str = "relay") -> list[TxRecord]:
        """Relay many signed transactions at once, then wait for all receipts (one block
        with ``--block-time``). Reverts do not raise: see each record's status/error."""

    # -- reads ---------------------------------------------------------------------------
    @abstractmethod
    def node_info(self, address: str) -> NodeInfo: ...

    def data_digest(self, address: str) -> tuple[bytes, int]:
        """The node's latest registered data digest and its timestamp."""
        info = self.node_info(address)
        return info.data_digest, info.data_timestamp

    @abstractmethod
    def active_nodes(self) -> tuple[int, ...]:
        """Indices of registered, not revoked nodes (sample cohorts from these)."""

    @abstractmethod
    def round_info(self, server_round: int) -> RoundInfo: ...

    @abstractmethod
    def events(self, from_block: int = 0) -> list[ChainEvent]:
        """The registry's events, oldest first, decoded: the audit trail."""
