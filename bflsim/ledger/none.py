"""Standard FL: the ledger interface with no chain behind it (records nothing, costs nothing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bflsim.ledger.base import ChainEvent, Ledger, NodeInfo, RoundInfo, TxRecord
from bflsim.ledger.identity import TxContext

__all__ = ["NoLedger"]

_ZERO_DIGEST = bytes(32)
_ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class NoLedger(Ledger):
    """Every write is a no-op returning None; reads describe an empty registry.

    Check :attr:`enabled` (False here) before asking nodes to sign anything.
    """

    enabled = False

    @property
    def chain_id(self) -> int:
        return 0

    @property
    def address(self) -> str | None:
        return None

    @property
    def operator(self) -> str:
        return _ZERO_ADDRESS

    @property
    def endpoint(self) -> str:
        return "none"

    def deploy(self, max_rejections: int, run_digest: bytes = _ZERO_DIGEST) -> str:
        return _ZERO_ADDRESS

    def attach(self, address: str) -> None:
        return None

    def fund(self, addresses: Sequence[str], wei: int) -> list[TxRecord]:
        return []

    def register_nodes(self, nodes: Mapping[int, str]) -> list[TxRecord]:
        return []

    def set_aggregator(self, address: str) -> None:
        return None

    def tx_context(self, node_address: str) -> TxContext:
        return TxContext(chain_id=0, contract_address=_ZERO_ADDRESS, nonce=0)

    def open_round(self, server_round: int, global_digest: bytes, cohort: Iterable[int]) -> None:
        return None

    def commit_round(
        self,
        server_round: int,
        new_global_digest: bytes,
        accepted: Iterable[int],
        scores_digest: bytes,
        evaluation_digest: bytes = _ZERO_DIGEST,
        *,
        cohort: Iterable[int] | None = None,
    ) -> None:
        return None

    def send_raw(self, raw_tx: bytes, kind: str = "relay") -> None:
        return None

    def send_raw_many(self, raw_txs: Sequence[bytes], kind: str = "relay") -> list[TxRecord]:
        return []

    def node_info(self, address: str) -> NodeInfo:
        return NodeInfo(address, False, False, 0, 0, _ZERO_DIGEST, 0)

    def active_nodes(self) -> tuple[int, ...]:
        return ()

    def round_info(self, server_round: int) -> RoundInfo:
        return RoundInfo(server_round, "none", (), (), (), _ZERO_DIGEST, _ZERO_DIGEST,
                         _ZERO_DIGEST)

    def events(self, from_block: int = 0) -> list[ChainEvent]:
        return []
