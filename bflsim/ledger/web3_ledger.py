"""Ledger backends over web3.py: the in-process py-evm chain and any JSON-RPC endpoint.

Both drive the same ``Web3`` object, so one code path serves EthereumTesterProvider and
anvil/geth (the web3.py/Ape idiom, STYLE.md). The server holds two keys: the owner's
(deploys the registry, funds and registers the nodes) and the aggregator's (opens and
commits the rounds). Its transactions are signed locally (or, on RPC without a key, sent from
the node's unlocked accounts); nodes' transactions arrive already signed and are relayed
unchanged.

Where the aggregator key comes from: on the embedded chain, eth-tester's second funded
account; on anvil, its second development account; on another endpoint,
:func:`derive_aggregator_key` of the operator key (funded by the owner at deploy), or the
endpoint's second unlocked account without an operator key.
"""

from __future__ import annotations

import ast
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound

from bflsim.ledger.base import (
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
    sorted_indices,
    to_bitmap,
)
from bflsim.ledger.identity import NodeIdentity, TxContext, bytes32, sign_tx

__all__ = ["EmbeddedLedger", "RpcLedger", "Web3Ledger", "check_rpc_endpoint", "derive_aggregator_key", "operator_gas_need"]

_ROUND_STATUS = {0: "none", 1: "open", 2: "committed"}
_GAS_MARGIN = 1.25  # on top of eth_estimateGas for the server's own transactions
# registerNodes (v3) costs ~48,400-55,600 gas per node (contracts/README.md); batches are sized
# with this bound, so that each fits half a block.
REGISTER_GAS_PER_NODE = 60_000


def _revert_data(exc: BaseException) -> bytes | str | None:
    """Revert payload from a web3 / eth-tester exception: raw bytes, a reason string, or None
    when the exception is not a revert."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        if isinstance(data, bytes):
            return data
        return exc.message or str(exc)
    text = str(exc.args[0]) if exc.args else str(exc)
    if type(exc).__name__ == "TransactionFailed" or "execution reverted" in text:
        # eth-tester: "execution reverted: b'\\x...'" (the repr of the revert bytes)
        reason = text.split("execution reverted:", 1)[-1].strip()
        if reason[:2] in ("b'", 'b"'):
            try:
                return ast.literal_eval(reason)
            except (ValueError, SyntaxError):
                pass
        return reason
    return None


def _error_name(reason: str | None) -> str | None:
    """``NotInCohort`` from ``NotInCohort(round=1, node=0x...)``."""
    match = re.match(r"([A-Za-z_]\w*)\(", reason or "")
    return match.group(1) if match else None


def derive_aggregator_key(operator_key: bytes | str) -> bytes:
    """The aggregator's key for an operator key: keccak256(tag || operator key), so that
    nobody without the operator key can act as aggregator, and the operator needs to keep
    one secret only."""
    key = bytes.fromhex(operator_key.removeprefix("0x")) if isinstance(operator_key, str) else bytes(operator_key)
    return keccak(b"bflsim/aggregator-key/v1" + key)


# How nodes say "the sender cannot pay" (matched on the lower-cased error text):
#   geth, erigon, reth, anvil:  "insufficient funds for gas * price + value", "insufficient funds
#                               for transfer", "insufficient balance for transfer"
#   nethermind:                 "InsufficientFunds, Account balance: ..., cumulative cost: ...",
#                               "insufficient sender balance", "insufficient MaxFeePerGas for sender balance"
#   besu:                       "Upfront cost exceeds account balance", "transaction up-front cost ...
#                               exceeds transaction sender account balance ..."
#   hardhat, ganache:           "sender doesn't have enough funds to send tx. The (max) upfront cost is ..."
#   openethereum:               "Insufficient funds. The account you tried to send ...",
#                               "Insufficient balance for transaction"
#   arbitrum:                   "not enough funds for gas"
#   py-evm (embedded):          "Sender does not have enough balance to cover transaction value and gas"
_INSUFFICIENT_FUNDS = re.compile(
    r"insufficient[ _]?funds|insufficient\b.*\bbalance|n(o|')t have enough (funds|balance)"
    r"|doesnt have enough funds|not enough funds|up-?front cost exceeds|exceeds (transaction sender )?account balance"
)


def _is_insufficient_funds(exc: BaseException | str) -> bool:
    """Whether a node's error says the sender cannot pay, in any common node's words."""
    return _INSUFFICIENT_FUNDS.search(str(exc).lower()) is not None


class Web3Ledger(Ledger):
    """The FederatedRegistry through a ``Web3`` object (shared by both web3 backends)."""

    def __init__(
        self,
        w3: Web3,
        *,
        endpoint: str,
        account: LocalAccount | None,
        sender: str,
        aggregator_account: LocalAccount | None = None,
        aggregator_sender: str | None = None,
        aggregator_fund_wei: int = 10**18,
        artifact: RegistryArtifact | None = None,
        priority_fee_wei: int = 10**9,
        receipt_timeout: float = 120.0,
    ) -> None:
        super().__init__()
        self.w3 = w3
        self._endpoint = endpoint
        self._sender = to_checksum_address(sender)
        if aggregator_account is not None:
            aggregator_sender = aggregator_account.address
        self._aggregator = to_checksum_address(aggregator_sender) if aggregator_sender else self._sender
        self._accounts = {self._sender: account, self._aggregator: aggregator_account if aggregator_sender else account}
        self.aggregator_fund_wei = aggregator_fund_wei
        self._run_digest = bytes(32)
        self.artifact = artifact or load_artifact()
        self.priority_fee_wei = priority_fee_wei
        self.receipt_timeout = receipt_timeout
        self._chain_id = int(w3.eth.chain_id)
        self._address: str | None = None
        self._contract: Any = None
        self._nonces: dict[str, int] = {}  # next nonce of each of the server's accounts
        self._cohorts: dict[int, list[int]] = {}  # round -> the cohort it was opened with (v3)
        self._max_index: int | None = None  # the highest registered node index (v3 active set)

    # -- chain ---------------------------------------------------------------------------
    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def address(self) -> str | None:
        return self._address

    @property
    def operator(self) -> str:
        return self._sender

    @property
    def aggregator(self) -> str:
        return self._aggregator

    @property
    def run_digest(self) -> bytes:
        return self._run_digest

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _require_contract(self) -> Any:
        if self._contract is None:
            raise LedgerError(f"no registry on {self._endpoint} yet: call deploy() or attach()")
        return self._contract

    def fees(self) -> dict[str, int]:
        """Fee fields for a transaction now: EIP-1559 (2 x base fee + tip) or legacy."""
        base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        return {
            "maxFeePerGas": 2 * int(base_fee) + self.priority_fee_wei,
            "maxPriorityFeePerGas": self.priority_fee_wei,
        }

    # -- sending -------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self._endpoint} (chain {self._chain_id})"

    def _transact(
        self, kind: str, data: bytes, *, to: str | None, value: int = 0, gas: int | None = None,
        sender: str | None = None,
    ) -> TxRecord:
        """Estimate, sign, send and wait for one of the server's own transactions (from the
        owner, or ``sender``: the aggregator)."""
        sender = sender or self._sender
        account = self._accounts[sender]
        tx: dict[str, Any] = {"from": sender, "value": value, "data": data}
        if to is not None:
            tx["to"] = to
        if gas is None:
            try:
                gas = int(self.w3.eth.estimate_gas(tx) * _GAS_MARGIN)
            except Exception as exc:  # noqa: BLE001 - classified below
                self._raise_send_failure(kind, None, exc, tx)
        tx.update(gas=gas, chainId=self._chain_id, **self.fees())
        if sender not in self._nonces:
            self._nonces[sender] = self.w3.eth.get_transaction_count(sender, "pending")
        tx["nonce"] = self._nonces[sender]
        started = time.perf_counter()
        raw = None
        try:
            if account is not None:
                raw = bytes(account.sign_transaction(tx).raw_transaction)
                tx_hash = self.w3.eth.send_raw_transaction(raw)
            else:
                tx_hash = self.w3.eth.send_transaction(tx)
        except Exception as exc:  # noqa: BLE001 - classified below
            self._nonces.pop(sender, None)  # resynchronise from the chain next time
            self._raise_send_failure(kind, None, exc, tx)
        self._nonces[sender] += 1
        record = self._wait(kind, bytes(tx_hash), started, raw)
        if record.status != 1:
            raise TransactionReverted(
                f"{kind} transaction 0x{bytes(tx_hash).hex()} from {sender} reverted on "
                f"{self._where()}: {record.error}",
                kind=kind, tx_hash=record.tx_hash, error=_error_name(record.error), args=(),
            )
        return record

    def _raise_send_failure(
        self, kind: str, tx_hash: str | None, exc: BaseException, tx: Mapping[str, Any]
    ) -> NoReturn:
        """Turn a failed estimate/send into a LedgerError that says what, where and why."""
        sender = tx.get("from", "?")
        what = f"{kind} transaction" + (f" {tx_hash}" if tx_hash else "") + f" from {sender}"
        payload = _revert_data(exc)
        if payload is not None:
            name, args, reason = self._decode(payload)
            raise TransactionReverted(
                f"{what} would revert on {self._where()}: {reason}",
                kind=kind, tx_hash=tx_hash, error=name, args=args,
            ) from exc
        if _is_insufficient_funds(exc):
            balance = self.w3.eth.get_balance(sender) if sender != "?" else None
            raise InsufficientFunds(
                f"{what}: account {sender} cannot pay for gas on {self._where()} "
                f"(balance {balance} wei): fund it first"
            ) from exc
        raise LedgerError(f"{what} was refused by {self._where()}: {exc}") from exc

    def _decode(self, payload: bytes | str) -> tuple[str | None, tuple, str]:
        if isinstance(payload, str):
            return None, (), payload
        return self.artifact.decode_revert(payload)

    def _wait(self, kind: str, tx_hash: bytes, started: float, raw: bytes | None = None) -> TxRecord:
        receipt = self._poll_receipt(tx_hash, started)
        return self._record(kind, receipt, time.perf_counter() - started, raw)

    def _poll_receipt(self, tx_hash: bytes, started: float) -> Any:
        delay = 0.0
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            if time.perf_counter() - started > self.receipt_timeout:
                raise LedgerError(
                    f"transaction 0x{tx_hash.hex()} not mined after {self.receipt_timeout:.0f} s "
                    f"on {self._where()}"
                )
            time.sleep(delay)
            delay = min(0.05, delay * 2 + 0.002)

    def _record(self, kind: str, receipt: Any, seconds: float, raw: bytes | None = None) -> TxRecord:
        status = int(receipt["status"])
        error = None if status == 1 else self._replay_revert(receipt)
        record = TxRecord(
            kind=kind,
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            gas_used=int(receipt["gasUsed"]),
            seconds=seconds,
            block=int(receipt["blockNumber"]),
            sender=to_checksum_address(receipt["from"]),
            status=status,
            error=error,
            raw=raw,
        )
        self.records.append(record)
        return record

    def _replay_revert(self, receipt: Any) -> str:
        """Why a mined transaction reverted: re-run it on the parent block's state (exact with
        one transaction per block, i.e. automine)."""
        tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"],
                "gas": tx["gas"]}
        try:
            self.w3.eth.call(call, block_identifier=int(receipt["blockNumber"]) - 1)
        except Exception as exc:  # noqa: BLE001 - the reason, whatever the class
            payload = _revert_data(exc)
            if payload is not None:
                return self._decode(payload)[2]
            return f"reverted ({exc})"
        if int(receipt["gasUsed"]) >= int(tx["gas"]):
            return f"out of gas (gas limit {tx['gas']})"
        return "reverted (the reason could not be reproduced on the parent block)"

    def send_raw(self, raw_tx: bytes, kind: str = "relay") -> TxRecord:
        record = self.send_raw_many([raw_tx], kind)[0]
        if record.status != 1:
            raise TransactionReverted(
                f"{kind} transaction {record.tx_hash} from {record.sender} "
                f"{'reverted' if record.block >= 0 else 'was refused'} on {self._where()}: "
                f"{record.error}",
                kind=kind, tx_hash=record.tx_hash, error=_error_name(record.error), args=(),
            )
        return record

    def send_raw_many(self, raw_txs: Sequence[bytes], kind: str = "relay") -> list[TxRecord]:
        self._require_contract()
        sent: list[tuple[int, bytes, float, bytes]] = []
        results: dict[int, TxRecord] = {}
        for position, raw in enumerate(raw_txs):
            raw = bytes(raw)
            started = time.perf_counter()
            try:
                tx_hash = bytes(self.w3.eth.send_raw_transaction(raw))
            except Exception as exc:  # noqa: BLE001 - becomes a record with the reason
                sender = Account.recover_transaction(raw)
                reason = ("insufficient funds for gas" if _is_insufficient_funds(exc)
                          else str(exc))
                results[position] = TxRecord(
                    kind=kind, tx_hash="0x" + keccak(raw).hex(), gas_used=0,
                    seconds=time.perf_counter() - started, block=-1, sender=sender,
                    status=0, error=f"refused by the node: {reason}", raw=raw,
                )
                continue
            try:  # automine (py-evm, anvil default): already mined, so the latency is exact
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                sent.append((position, tx_hash, started, raw))  # mined later: wait after sending all
            else:
                results[position] = self._record(kind, receipt, time.perf_counter() - started, raw)
        for position, tx_hash, started, raw in sent:
            results[position] = self._wait(kind, tx_hash, started, raw)
        return [results[i] for i in range(len(raw_txs))]

    # -- setup ---------------------------------------------------------------------------
    def deploy(self, max_rejections: int, run_digest: bytes = bytes(32)) -> str:
        if not 0 <= max_rejections < 2**32:
            raise ValueError(f"max_rejections must fit in uint32; got {max_rejections}")
        run_digest = bytes32(run_digest, "run_digest")
        data = self.artifact.bytecode + abi_encode(["uint32", "bytes32"], [max_rejections, run_digest])
        record = self._transact("deploy", data, to=None)
        receipt = self.w3.eth.get_transaction_receipt(record.tx_hash)
        self._bind(receipt["contractAddress"])
        self._run_digest = run_digest
        if self._aggregator != self._sender:
            self.fund([self._aggregator], self.aggregator_fund_wei)
            self.set_aggregator(self._aggregator)
        return self._address  # type: ignore[return-value]

    def attach(self, address: str) -> None:
        try:
            address = to_checksum_address(address)
        except ValueError as exc:
            raise ContractNotFound(f"{address!r} is not an address") from exc
        code = bytes(self.w3.eth.get_code(address))
        if not code:
            raise ContractNotFound(f"no contract code at {address} on {self._where()}")
        if keccak(code) != self.artifact.code_hash:
            raise ContractNotFound(
                f"the code at {address} on {self._where()} is not this FederatedRegistry "
                f"(code hash 0x{keccak(code).hex()}, expected 0x{self.artifact.code_hash.hex()} "
                f"from {self.artifact.path.name}, solc {self.artifact.compiler_version})"
            )
        self._bind(address)
        if any(item.get("name") == "runDigest" for item in self.artifact.abi):  # v1 has none
            self._run_digest = bytes(self._contract.functions.runDigest().call())

    def _bind(self, address: str) -> None:
        self._address = to_checksum_address(address)
        self._contract = self.w3.eth.contract(address=self._address, abi=self.artifact.abi)

    def _call_data(self, fn: str, *args: Any) -> bytes:
        contract = self._require_contract()
        return bytes.fromhex(contract.encode_abi(fn, args=list(args))[2:])

    def fund(self, addresses: Sequence[str], wei: int) -> list[TxRecord]:
        records = []
        for address in addresses:
            address = to_checksum_address(address)
            missing = wei - int(self.w3.eth.get_balance(address))
            if missing > 0:
                records.append(self._transact("fund", b"", to=address, value=missing, gas=21_000))
        return records

    def register_nodes(self, nodes: Mapping[int, str]) -> list[TxRecord]:
        if self.artifact.version < 3:
            indices = list(nodes)
            to_bitmap(indices)  # range check with a clear message
            addresses = [to_checksum_address(nodes[i]) for i in indices]
            return [self._transact("register_nodes", self._call_data("registerNodes", addresses, indices),
                                   to=self._address)]
        indices = sorted_indices(nodes, "register_nodes")
        if len(indices) != len(nodes):
            raise ValueError("register_nodes: the same index twice")
        batch = self.register_batch_size()
        records = []
        for start in range(0, len(indices), batch):
            part = indices[start:start + batch]
            data = self._call_data("registerNodes", [to_checksum_address(nodes[i]) for i in part], part)
            records.append(self._transact("register_nodes", data, to=self._address))
        if indices:
            self._max_index = max(indices[-1], self._max_index or 0)
        return records

    def block_gas_limit(self) -> int:
        """The latest block's gas limit: what one transaction can use at most."""
        return int(self.w3.eth.get_block("latest")["gasLimit"])

    def register_batch_size(self) -> int:
        """Nodes per ``registerNodes`` transaction: half a block's gas at
        :data:`REGISTER_GAS_PER_NODE` each."""
        return max(1, self.block_gas_limit() // 2 // REGISTER_GAS_PER_NODE)

    def set_aggregator(self, address: str) -> TxRecord:
        """Name ``address`` aggregator on chain; the rounds are then sent from it if it is
        one of this ledger's accounts (else from the owner, whose openRound would revert)."""
        address = to_checksum_address(address)
        data = self._call_data("setAggregator", address)
        record = self._transact("set_aggregator", data, to=self._address)
        if address in self._accounts:
            self._aggregator = address
        return record

    def transfer_ownership(self, new_owner: str) -> TxRecord:
        """Step one of the two-step ownership transfer (the new owner must call
        ``acceptOwnership``; :meth:`sign_call` signs it offline)."""
        data = self._call_data("transferOwnership", to_checksum_address(new_owner))
        return self._transact("transfer_ownership", data, to=self._address)

    def sign_call(self, identity: NodeIdentity, fn: str, *args: Any, gas: int = 300_000) -> bytes:
        """A registry call ``fn(*args)`` signed offline with ``identity``'s key, to relay with
        :meth:`send_raw` (the new owner's ``acceptOwnership``, or a call a test must make as
        someone else)."""
        ctx = self.tx_context(identity.address)
        return sign_tx(identity, ctx, self._call_data(fn, *args), gas)

    # -- the closed loop: devices, alerts, quarantine (registry v4) -----------------------
    def _require_loop(self, what: str) -> None:
        if self.artifact.version < 4:
            raise ValueError(f"{what}: registry v{self.artifact.version} has no devices; v4 or later has")

    def set_quarantine_rule(self, alerts_per_node: int, quorum: int = 1) -> TxRecord:
        """The owner's rule: a device is quarantined once ``quorum`` edge nodes have each sent
        ``alerts_per_node`` alerts about it."""
        self._require_loop("set_quarantine_rule")
        return self._transact("set_quarantine_rule", self._call_data("setQuarantineRule", alerts_per_node, quorum),
                              to=self._address)

    def register_devices(self, behind: Sequence[tuple[int, int]]) -> list[TxRecord]:
        """Register ``(device, edge node)`` pairs (the owner), as many per transaction as half
        a block holds."""
        self._require_loop("register_devices")
        batch = max(1, self.register_batch_size())
        records = []
        for start in range(0, len(behind), batch):
            part = behind[start:start + batch]
            data = self._call_data("registerDevices", [int(d) for d, _ in part], [int(e) for _, e in part])
            records.append(self._transact("register_devices", data, to=self._address))
        return records

    def dispute_alert(self, device: int, edge_node: int, window_digest: bytes) -> TxRecord:
        """The aggregator's word that an edge node's alert is false (not relayed): the edge
        node gets a rejection."""
        self._require_loop("dispute_alert")
        data = self._call_data("disputeAlert", device, edge_node, bytes32(window_digest, "window_digest"))
        return self._transact("dispute_alert", data, to=self._address, sender=self._aggregator)

    def device_info(self, device: int, edge_node: int) -> DeviceInfo:
        self._require_loop("device_info")
        registered, quarantined, alerters, behind, alerts = (
            self._require_contract().functions.deviceInfo(device, edge_node).call())
        return DeviceInfo(device, edge_node, registered, quarantined, int(alerters), behind, int(alerts))

    # -- rounds --------------------------------------------------------------------------
    def tx_context(self, node_address: str) -> TxContext:
        self._require_contract()
        fees = self.fees()
        nonce = self.w3.eth.get_transaction_count(to_checksum_address(node_address), "pending")
        return TxContext(
            chain_id=self._chain_id,
            contract_address=self._address,  # type: ignore[arg-type]
            nonce=int(nonce),
            max_fee_per_gas=fees.get("maxFeePerGas", 0),
            max_priority_fee_per_gas=fees.get("maxPriorityFeePerGas", 0),
            gas_price=fees.get("gasPrice"),
            run_digest=self._run_digest,
        )

    def tx_contexts(self, nodes: Mapping[int, str]) -> dict[int, TxContext]:
        self._require_contract()
        fees = self.fees()  # one block read for all nodes
        return {
            index: TxContext(
                chain_id=self._chain_id,
                contract_address=self._address,  # type: ignore[arg-type]
                nonce=int(self.w3.eth.get_transaction_count(
                    to_checksum_address(address), "pending")),
                max_fee_per_gas=fees.get("maxFeePerGas", 0),
                max_priority_fee_per_gas=fees.get("maxPriorityFeePerGas", 0),
                gas_price=fees.get("gasPrice"),
                run_digest=self._run_digest,
            )
            for index, address in nodes.items()
        }

    def open_round(
        self, server_round: int, global_digest: bytes, cohort: Iterable[int]
    ) -> TxRecord:
        if self.artifact.version < 3:
            data = self._call_data(
                "openRound", server_round, bytes32(global_digest, "global_digest"), to_bitmap(cohort)
            )
            return self._transact("open_round", data, to=self._address, sender=self._aggregator)
        members = sorted_indices(cohort, f"round {server_round}'s cohort")
        data = self._call_data("openRound", server_round, bytes32(global_digest, "global_digest"), members)
        record = self._transact("open_round", data, to=self._address, sender=self._aggregator)
        self._cohorts[server_round] = members
        return record

    def commit_round(
        self,
        server_round: int,
        new_global_digest: bytes,
        accepted: Iterable[int],
        scores_digest: bytes,
        evaluation_digest: bytes = bytes(32),
        *,
        cohort: Iterable[int] | None = None,
    ) -> TxRecord:
        new_global_digest = bytes32(new_global_digest, "new_global_digest")
        scores_digest = bytes32(scores_digest, "scores_digest")
        evaluation_digest = bytes32(evaluation_digest, "evaluation_digest")
        if self.artifact.version < 3:
            data = self._call_data("commitRound", server_round, new_global_digest, to_bitmap(accepted),
                                   scores_digest, evaluation_digest)
        else:
            members = (sorted_indices(cohort, f"round {server_round}'s cohort") if cohort is not None
                       else self._opened_cohort(server_round))
            data = self._call_data("commitRound", server_round, new_global_digest, members,
                                   sorted_indices(accepted, f"round {server_round}'s accepted nodes"),
                                   scores_digest, evaluation_digest)
        return self._transact("commit_round", data, to=self._address, sender=self._aggregator)

    # -- batched mode (registry v3) -------------------------------------------------------
    def register_node_root(self, root: bytes, count: int) -> TxRecord:
        """Batched mode: the federation as the Merkle root of its ``merkle.node_leaf`` leaves."""
        data = self._call_data("registerNodeRoot", bytes32(root, "nodes_root"), count)
        return self._transact("register_node_root", data, to=self._address)

    def register_data_root(self, root: bytes, count: int) -> TxRecord:
        """Batched mode: the root of the nodes' signed data registrations (``merkle.data_leaf``)."""
        data = self._call_data("registerDataRoot", bytes32(root, "data_root"), count)
        return self._transact("register_data_root", data, to=self._address)

    def open_batch(self, server_round: int, global_digest: bytes, cohort_root: bytes, cohort_size: int) -> TxRecord:
        """Batched mode: open a round with the Merkle root of its cohort (``merkle.cohort_leaf``)."""
        data = self._call_data("openBatch", server_round, bytes32(global_digest, "global_digest"),
                               bytes32(cohort_root, "cohort_root"), cohort_size)
        return self._transact("open_batch", data, to=self._address, sender=self._aggregator)

    def commit_batch(
        self, server_round: int, new_global_digest: bytes, updates_root: bytes, submitted: int, accepted: int,
        scores_digest: bytes, evaluation_digest: bytes = bytes(32),
    ) -> TxRecord:
        """Batched mode: commit a round with the root of its signed updates (``merkle.update_leaf``)."""
        data = self._call_data("commitBatch", server_round, bytes32(new_global_digest, "new_global_digest"),
                               bytes32(updates_root, "updates_root"), submitted, accepted,
                               bytes32(scores_digest, "scores_digest"), bytes32(evaluation_digest, "evaluation_digest"))
        return self._transact("commit_batch", data, to=self._address, sender=self._aggregator)

    def domain_separator(self) -> bytes:
        """The EIP-712 domain separator the registry computes (batched-mode signatures)."""
        return bytes(self._require_contract().functions.domainSeparator().call())

    def recover_update(self, server_round: int, node: int, update_digest: bytes, num_samples: int,
                       signature: bytes) -> str:
        """The signer of an ``Update`` as the registry recovers it (the zero address if invalid)."""
        return str(self._require_contract().functions.recoverUpdate(
            server_round, node, update_digest, num_samples, signature).call())

    def proves(self, root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """The registry's check of a Merkle inclusion proof."""
        return bool(self._require_contract().functions.proves(root, leaf, list(proof)).call())

    def mode(self) -> str:
        """"per-node", "batched", or "unset" before the federation is registered (v3)."""
        return {0: "unset", 1: "per-node", 2: "batched"}[int(self._require_contract().functions.mode().call())]

    def _opened_cohort(self, server_round: int) -> list[int]:
        """The cohort round ``server_round`` was opened with: remembered, else its RoundOpened
        event; empty for a round never opened (the registry then says why it refuses)."""
        if server_round not in self._cohorts:
            opened = self._round_events("RoundOpened", server_round)
            if not opened:
                return []
            self._cohorts[server_round] = [int(i) for i in opened[-1].args["cohort"]]
        return self._cohorts[server_round]

    def _round_events(self, name: str, server_round: int) -> list[ChainEvent]:
        """The registry's ``name`` events of one round (the round is their first indexed topic)."""
        item = next(i for i in self.artifact.abi if i.get("type") == "event" and i["name"] == name)
        topic0 = keccak(text=f"{name}({','.join(i['type'] for i in item['inputs'])})")
        return self._events(0, (topic0, abi_encode(["uint32"], [server_round])))

    # -- reads ---------------------------------------------------------------------------
    def node_info(self, address: str) -> NodeInfo:
        address = to_checksum_address(address)
        fields = self._require_contract().functions.nodeInfo(address).call()
        registered, active, index, rejections, data_digest, data_timestamp, *rest = fields
        return NodeInfo(address, registered, active, index, rejections, bytes(data_digest),
                        data_timestamp, *rest)  # registry v1: no sample count

    def active_nodes(self) -> tuple[int, ...]:
        contract = self._require_contract()
        if self.artifact.version < 3:
            return from_bitmap(contract.functions.activeNodes().call())
        if self._max_index is None:  # attached: the highest index any NodeRegistered named
            registered = [int(e.args["index"]) for e in self.events() if e.name == "NodeRegistered"]
            self._max_index = max(registered, default=-1)
        words = contract.functions.activeWords(0, self._max_index // 256 + 1).call() if self._max_index >= 0 else []
        return tuple(256 * w + i for w, word in enumerate(words) for i in range(word.bit_length()) if word >> i & 1)

    def max_rejections(self) -> int:
        return int(self._require_contract().functions.maxRejections().call())

    def round_info(self, server_round: int) -> RoundInfo:
        contract = self._require_contract()
        if self.artifact.version < 3:
            fields = contract.functions.roundInfo(server_round).call()
            status, cohort, submitted, accepted, global_digest, new_digest, scores = fields
            return RoundInfo(
                server_round=server_round,
                status=_ROUND_STATUS[status],  # type: ignore[arg-type]
                cohort=from_bitmap(cohort),
                submitted=from_bitmap(submitted),
                accepted=from_bitmap(accepted),
                global_digest=bytes(global_digest),
                new_global_digest=bytes(new_digest),
                scores_digest=bytes(scores),
            )
        (status, batched, cohort_size, num_submitted, num_accepted, cohort_digest, global_digest, new_digest,
         updates_root) = contract.functions.roundInfo(server_round).call()
        cohort: tuple[int, ...] = ()
        submitted: tuple[int, ...] = ()
        accepted: tuple[int, ...] = ()
        scores = bytes(32)
        if status and not batched:
            cohort = tuple(self._opened_cohort(server_round))
            submitted = tuple(i for i in cohort if contract.functions.cell(server_round, i).call()[1])
        if status == 2:
            name = "BatchCommitted" if batched else "RoundCommitted"
            [commit] = self._round_events(name, server_round)[-1:]
            scores = bytes(commit.args["scoresDigest"])
            accepted = () if batched else tuple(int(i) for i in commit.args["accepted"])
        return RoundInfo(
            server_round=server_round, status=_ROUND_STATUS[status],  # type: ignore[arg-type]
            cohort=cohort, submitted=submitted, accepted=accepted, global_digest=bytes(global_digest),
            new_global_digest=bytes(new_digest), scores_digest=scores, batched=bool(batched),
            cohort_size=int(cohort_size), num_submitted=int(num_submitted), num_accepted=int(num_accepted),
            cohort_digest=bytes(cohort_digest), updates_root=bytes(updates_root),
        )

    def events(self, from_block: int = 0) -> list[ChainEvent]:
        self._require_contract()
        return self._events(from_block)

    def _events(self, from_block: int, topics: Sequence[bytes] = ()) -> list[ChainEvent]:
        """The registry's events from ``from_block`` whose first topics are ``topics``."""
        query: dict[str, Any] = {"address": self._address, "fromBlock": from_block, "toBlock": "latest"}
        if topics:
            query["topics"] = ["0x" + topic.hex() for topic in topics]
        return [self._decode_log(log) for log in self.w3.eth.get_logs(query)]

    def _decode_log(self, log: Any) -> ChainEvent:
        topics = [bytes(t) for t in log["topics"]]
        item = self.artifact.events.get(topics[0]) if topics else None
        if item is None:
            return ChainEvent("Unknown", int(log["blockNumber"]),
                              "0x" + bytes(log["transactionHash"]).hex(), int(log["logIndex"]),
                              {"topics": topics, "data": bytes(log["data"])})
        indexed = [i for i in item["inputs"] if i["indexed"]]
        plain = [i for i in item["inputs"] if not i["indexed"]]
        values: dict[str, Any] = {}
        for inp, topic in zip(indexed, topics[1:]):
            values[inp["name"]] = abi_decode([inp["type"]], topic)[0]
        for inp, value in zip(plain, abi_decode([i["type"] for i in plain], bytes(log["data"]))):
            values[inp["name"]] = value
        args = {}
        for inp in item["inputs"]:  # ABI order, addresses checksummed
            value = values[inp["name"]]
            args[inp["name"]] = to_checksum_address(value) if inp["type"] == "address" else value
        return ChainEvent(item["name"], int(log["blockNumber"]),
                          "0x" + bytes(log["transactionHash"]).hex(), int(log["logIndex"]), args)


class EmbeddedLedger(Web3Ledger):
    """An in-process py-evm chain (web3's EthereumTesterProvider): the default, offline.

    The owner is the tester's first pre-funded account, the aggregator its second; node
    accounts are funded from the owner (:meth:`enroll`).
    """

    def __init__(
        self, *, artifact: RegistryArtifact | None = None, priority_fee_wei: int = 10**9
    ) -> None:
        from web3 import EthereumTesterProvider

        with warnings.catch_warnings():  # eth-tester sets warnings.simplefilter("default") for the process
            provider = EthereumTesterProvider()
        keys = provider.ethereum_tester.backend.account_keys
        account = Account.from_key(keys[0].to_bytes())
        super().__init__(
            Web3(provider),
            endpoint="embedded py-evm",
            account=account,
            sender=account.address,
            aggregator_account=Account.from_key(keys[1].to_bytes()),
            artifact=artifact,
            priority_fee_wei=priority_fee_wei,
            receipt_timeout=10.0,
        )
        self._chain = provider.ethereum_tester.backend.chain

    def _events(self, from_block: int, topics: Sequence[bytes] = ()) -> list[ChainEvent]:
        """The registry's events, read block by block from py-evm.

        eth-tester's ``get_logs`` finds each transaction's receipt by walking the chain back
        from its head, so reading a run's events costs blocks x transactions: 820 of the
        900 s an audit of a 1,000-node per-node run took. Here each block's receipts are read
        once. Same events, block numbers, transaction hashes and log indices (eth-tester
        numbers logs within their transaction) as ``get_logs``.
        """
        address = bytes.fromhex(self._address[2:])
        wanted = [int.from_bytes(topic, "big") for topic in topics]
        found = []
        for number in range(max(0, from_block), self.w3.eth.block_number + 1):
            block = self._chain.get_canonical_block_by_number(number)
            receipts = block.get_receipts(self._chain.chaindb)
            for transaction, receipt in zip(block.transactions, receipts, strict=True):
                for index, log in enumerate(receipt.logs):
                    if log.address == address and list(log.topics[:len(wanted)]) == wanted:
                        found.append(self._decode_log({
                            "topics": [topic.to_bytes(32, "big") for topic in log.topics], "data": log.data,
                            "blockNumber": number, "transactionHash": transaction.hash, "logIndex": index,
                        }))
        return found


class RpcLedger(Web3Ledger):
    """Any EVM JSON-RPC endpoint over HTTP (anvil, geth, a permissioned PoA network).

    Parameters
    ----------
    url : str
        ``http://host:port`` of the node.
    chain_id : int, optional
        Expected chain id; a different one is an error (guards against the wrong network).
    private_key : bytes or hex str, optional
        The operator's (owner's) key, used to sign locally. Without it the node's first
        unlocked account sends (anvil and geth --dev have some).
    aggregator_key : bytes or hex str, optional
        The aggregator's key. Default: :func:`derive_aggregator_key` of ``private_key``
        (funded by the owner at deploy), or without ``private_key`` the node's second
        unlocked account (the first if it has one only).
    """

    def __init__(
        self,
        url: str,
        chain_id: int | None = None,
        private_key: bytes | str | None = None,
        *,
        aggregator_key: bytes | str | None = None,
        timeout: float = 10.0,
        artifact: RegistryArtifact | None = None,
        priority_fee_wei: int = 10**9,
        receipt_timeout: float = 120.0,
    ) -> None:
        from web3 import HTTPProvider

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"RpcLedger needs an http(s):// URL; got {url!r}")
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout},
                               exception_retry_configuration=None))
        try:
            actual_chain_id = int(w3.eth.chain_id)
        except Exception as exc:  # any failure here means "cannot talk to it"
            raise EndpointUnreachable(
                f"cannot reach the JSON-RPC endpoint {url}: {type(exc).__name__}: {exc}"
            ) from exc
        if chain_id is not None and actual_chain_id != chain_id:
            raise ChainIdMismatch(
                f"{url} serves chain id {actual_chain_id}, not the expected {chain_id}"
            )
        aggregator: LocalAccount | None = None
        aggregator_sender = None
        if private_key is not None:
            account: LocalAccount | None = Account.from_key(private_key)
            sender = account.address
            aggregator = Account.from_key(aggregator_key or derive_aggregator_key(private_key))
        else:
            account = None
            accounts = w3.eth.accounts
            if not accounts:
                raise LedgerError(
                    f"{url} has no unlocked accounts: pass private_key= for the operator"
                )
            sender = accounts[0]
            if aggregator_key is not None:
                aggregator = Account.from_key(aggregator_key)
            else:
                aggregator_sender = accounts[1] if len(accounts) > 1 else accounts[0]
        super().__init__(
            w3,
            endpoint=url,
            account=account,
            sender=sender,
            aggregator_account=aggregator,
            aggregator_sender=aggregator_sender,
            artifact=artifact,
            priority_fee_wei=priority_fee_wei,
            receipt_timeout=receipt_timeout,
        )


# --- pre-flight of an RPC endpoint, before a run starts ------------------------------------

# Gas of the operator's own transactions, twice what contracts/README.md measured for registry
# v3 (deploy 2,589,527; registerNodes ~48,400-55,600 per node; openRound 120,879-138,635 and
# commitRound 83,300-100,920 for 10 nodes, ~2,000 and ~1,000 more per cohort member; openBatch +
# commitBatch under 180,000 a round at any size), so a grown contract or a busy node does not
# make the check pass a run that then fails.
_GAS_DEPLOY = 5_200_000
_GAS_REGISTER_BASE, _GAS_REGISTER_PER_NODE = 50_000, 110_000
_GAS_FUND = 21_000  # a plain transfer to each node account
_GAS_OPEN_ROUND, _GAS_COMMIT_ROUND, _GAS_COMMIT_PER_NODE = 300_000, 250_000, 30_000
_GAS_ROOTS, _GAS_BATCH_ROUND = 200_000, 400_000  # batched mode: two roots at set-up; a round


def operator_gas_need(num_nodes: int, rounds: int, mode: str = "per-node") -> int:
    """Gas the operator's own transactions of a run take at most (deploy, fund and register the
    nodes, open and commit every round), with a margin of two. In batched mode nodes are
    neither funded nor registered one by one, and a round costs the same at any size."""
    if mode == "batched":
        return int((_GAS_DEPLOY + _GAS_ROOTS + rounds * _GAS_BATCH_ROUND) * _GAS_MARGIN)
    setup = _GAS_DEPLOY + _GAS_REGISTER_BASE + num_nodes * (_GAS_REGISTER_PER_NODE + _GAS_FUND)
    per_round = _GAS_OPEN_ROUND + _GAS_COMMIT_ROUND + num_nodes * _GAS_COMMIT_PER_NODE
    return int((setup + rounds * per_round) * _GAS_MARGIN)


def check_rpc_endpoint(
    url: str,
    *,
    chain_id: int | None,
    private_key: bytes | str | None,
    node_addresses: Sequence[str],
    rounds: int,
    cohort_size: int = 0,
    mode: str = "per-node",
    fund_wei: int = 10**18,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Refuse an endpoint a run could not finish on, before anything starts.

    Raises :class:`EndpointUnreachable` (no answer), :class:`ChainIdMismatch` (another chain
    than ``chain_id``), :class:`LedgerError` (no operator account) or
    :class:`InsufficientFunds`: the operator's balance is below what the run needs, i.e.
    :func:`operator_gas_need` at today's fee per gas plus what funding the ``node_addresses``
    up to ``fund_wei`` each costs (:meth:`Ledger.enroll`; nodes pay their own transactions
    from it; none in ``mode = "batched"``, where nodes send nothing); or a per-node round of
    ``cohort_size`` nodes would not fit the endpoint's blocks
    (:func:`bflsim.config.per_node_round_gas`). Returns what it found, for messages and the
    manifest.
    """
    from bflsim.config import per_node_round_gas

    ledger = RpcLedger(url, chain_id=chain_id, private_key=private_key, timeout=timeout)
    w3 = ledger.w3
    try:
        fees = ledger.fees()
        price = int(fees.get("maxFeePerGas", fees.get("gasPrice", 0)))
        balance = int(w3.eth.get_balance(ledger.operator))
        funding = 0 if mode == "batched" else sum(
            max(0, fund_wei - int(w3.eth.get_balance(to_checksum_address(a)))) for a in node_addresses)
        block_gas = ledger.block_gas_limit()
    except LedgerError:
        raise
    except Exception as exc:  # any failure here means the node cannot serve the run
        raise EndpointUnreachable(
            f"{url} answered eth_chainId but not the balance and fee queries: {type(exc).__name__}: {exc}"
        ) from exc
    round_gas = per_node_round_gas(cohort_size)
    if mode == "per-node" and cohort_size and round_gas > block_gas:
        raise LedgerError(
            f"a round of {cohort_size} nodes needs up to {round_gas:,} gas in one commitRound, more than a block of "
            f"{url} holds ({block_gas:,}): use a smaller cohort (federation.fraction_train) or ledger.mode = "
            "'batched' (constant gas per round)"
        )
    gas = operator_gas_need(len(node_addresses), rounds, mode)
    need = gas * price + funding
    facts = {"endpoint": url, "chain_id": ledger.chain_id, "operator": ledger.operator,
             "balance_wei": balance, "need_wei": need, "gas": gas, "fee_per_gas_wei": price,
             "block_gas_limit": block_gas}
    if balance < need:
        raise InsufficientFunds(
            f"the operator account {ledger.operator} on {url} (chain {ledger.chain_id}) holds {balance} wei "
            f"({balance / 1e18:.6g} ETH) but this run needs about {need} wei ({need / 1e18:.6g} ETH): "
            f"{gas} gas for the operator's transactions (deploy, {len(node_addresses)} nodes, {rounds} rounds) "
            f"at {price} wei per gas, plus {funding} wei to fund the node accounts up to {fund_wei} wei each "
            f"(they pay their own transactions). Fund the operator account, or run fewer rounds or nodes"
        )
    return facts
