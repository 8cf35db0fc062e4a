"""On-chain registry of a federated run: one interface, three backends.

- :class:`EmbeddedLedger`: in-process py-evm chain (default; offline, no node to run);
- :class:`RpcLedger`: any EVM JSON-RPC endpoint (anvil, geth, a PoA network);
- :class:`NoLedger`: Standard FL, records nothing.

Edge nodes sign their own transactions offline (:func:`sign_update_tx`, :func:`sign_data_tx`)
from a :class:`TxContext` the server sends them (chain, registry, nonce, fees, run digest),
and the server relays the raw bytes (:meth:`Ledger.send_raw`) once
:func:`check_update_tx` finds them exactly what was asked for. The server itself holds two
keys, the registry's owner and its aggregator. The identity/signing part imports eth-account only, so Ray
workers can use it without web3; the web3 backends are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bflsim.ledger.base import (
    BITMAP_NODES,
    MAX_NODES,
    REGISTRY_VERSION,
    ChainEvent,
    ChainIdMismatch,
    ContractNotFound,
    DeviceInfo,
    EndpointUnreachable,
    InsufficientFunds,
    Ledger,
    LedgerError,
    NodeInfo,
    RegistryArtifact,
    RoundInfo,
    TransactionReverted,
    TxRecord,
    from_bitmap,
    load_artifact,
    node_set,
    sorted_indices,
    to_bitmap,
)
from bflsim.ledger.identity import (
    ALERT_GAS_LIMIT,
    DATA_GAS_LIMIT,
    UPDATE_GAS_LIMIT,
    NodeIdentity,
    SignedUpdate,
    TxContext,
    check_update_tx,
    derive_identities,
    read_update_tx,
    sign_alert_tx,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.none import NoLedger

if TYPE_CHECKING:
    from bflsim.ledger.anvil import AnvilNode
    from bflsim.ledger.web3_ledger import EmbeddedLedger, RpcLedger

_LAZY = {
    "EmbeddedLedger": "bflsim.ledger.web3_ledger",
    "RpcLedger": "bflsim.ledger.web3_ledger",
    "AnvilNode": "bflsim.ledger.anvil",
}

__all__ = [
    "ALERT_GAS_LIMIT",
    "BITMAP_NODES",
    "DATA_GAS_LIMIT",
    "MAX_NODES",
    "REGISTRY_VERSION",
    "UPDATE_GAS_LIMIT",
    "AnvilNode",
    "ChainEvent",
    "ChainIdMismatch",
    "ContractNotFound",
    "DeviceInfo",
    "EmbeddedLedger",
    "EndpointUnreachable",
    "InsufficientFunds",
    "Ledger",
    "LedgerError",
    "NoLedger",
    "NodeIdentity",
    "NodeInfo",
    "RegistryArtifact",
    "RoundInfo",
    "RpcLedger",
    "SignedUpdate",
    "TransactionReverted",
    "TxContext",
    "TxRecord",
    "check_update_tx",
    "derive_identities",
    "from_bitmap",
    "load_artifact",
    "node_set",
    "read_update_tx",
    "sign_alert_tx",
    "sign_data_tx",
    "sign_update_tx",
    "sorted_indices",
    "to_bitmap",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bflsim.ledger' has no attribute {name!r}")
