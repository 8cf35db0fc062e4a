"""The messages between the strategy and the edge nodes' ClientApp, written once.

Server to node (every message's ``config`` ConfigRecord): the round, the experiment in its
wire form (:func:`bflsim.config.to_wire`), the data directory, the round's cohort, and with
a ledger the node's transaction context and registered data digest under ``chain.*``.

Node to server: ``metrics`` (the node's index, its sample count, its training loss, or that
its data failed VerifyIntegrity) and, with a ledger, a ``chain`` ConfigRecord (the signed
transaction, the digests it signs, or why the node refused). Training replies carry the
node's weights as ``arrays``.

Message types: ``query`` (who are you), ``query.register_data`` (sign your data digest),
``train``. The edge-node logic behind them is :mod:`bflsim.edge_node`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from bflsim.config import ExperimentConfig, from_wire
from bflsim.ledger.identity import TxContext
from bflsim.ledger.session import DATA_DIGEST_KEY, DATA_TIMESTAMP_KEY, ReceivedUpdate
from bflsim.vectors import Weights

# Record names inside a message's RecordDict.
ARRAYS, CONFIG, METRICS, CHAIN = "arrays", "config", "metrics", "chain"
# config keys
SERVER_ROUND, EXPERIMENT, DATA_DIR, COHORT = "server-round", "experiment", "data-dir", "cohort"
CHAIN_PREFIX = "chain."
# metrics keys
NODE, NUM_EXAMPLES, TRAIN_LOSS, INTEGRITY_FAILED = "node", "num-examples", "train-loss", "integrity-failed"
# chain keys of a reply
TX, UPDATE_DIGEST, DATA_DIGEST, TIMESTAMP, REASON = "tx", "update-digest", "data-digest", "timestamp", "reason"

QUERY = MessageType.QUERY
REGISTER_DATA = f"{MessageType.QUERY}.register_data"
TRAIN = MessageType.TRAIN

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def config_record(
    server_round: int, experiment: str, data_dir: str | None, *, cohort: Iterable[int] = (),
    chain: Mapping[str, Any] | None = None,
) -> ConfigRecord:
    """What every message to a node carries; ``chain`` entries are prefixed ``chain.``."""
    return ConfigRecord({
        SERVER_ROUND: server_round, EXPERIMENT: experiment, DATA_DIR: data_dir or "", COHORT: list(cohort),
        **{CHAIN_PREFIX + key: value for key, value in (chain or {}).items()},
    })


@dataclass(frozen=True)
class Request:
    """A message to a node, as the node reads it."""

    server_round: int
    config: ExperimentConfig
    data_dir: str | None
    cohort: tuple[int, ...]
    tx_context: TxContext | None  # None: the run has no ledger
    data_digest: bytes = b""
    data_timestamp: int = 0

    @classmethod
    def read(cls, msg: Message) -> Request:
        record = msg.content[CONFIG]
        on_chain = f"{CHAIN_PREFIX}chain_id" in record
        return cls(
            server_round=int(record[SERVER_ROUND]),
            config=from_wire(str(record[EXPERIMENT])),
            data_dir=str(record[DATA_DIR]) or None,
            cohort=tuple(int(i) for i in record.get(COHORT, [])),
            tx_context=TxContext.from_config(record, prefix=CHAIN_PREFIX) if on_chain else None,
            data_digest=bytes(record.get(CHAIN_PREFIX + DATA_DIGEST_KEY, b"")),
            data_timestamp=int(record.get(CHAIN_PREFIX + DATA_TIMESTAMP_KEY, 0)),
        )


def reply(msg: Message, metrics: Mapping[str, Any], *, weights: Weights | None = None,
          chain: Mapping[str, Any] | None = None) -> Message:
    """A node's answer to ``msg``."""
    content = RecordDict({METRICS: MetricRecord(dict(metrics))})
    if weights is not None:
        content[ARRAYS] = ArrayRecord(weights)
    if chain is not None:
        content[CHAIN] = ConfigRecord(dict(chain))
    return Message(content, reply_to=msg)


def last_line(reason: str) -> str:
    """The last line of an error reply's reason (Flower sends the node's traceback), uncoloured."""
    lines = [line.strip() for line in _ANSI_CODES.sub("", reason).splitlines() if line.strip()]
    return lines[-1].removesuffix("'>") if lines else reason


@dataclass(frozen=True)
class TrainReplies:
    """A round's training replies, sorted out: updates, refusals, errors (by edge node)."""

    updates: list[ReceivedUpdate]  # ascending node
    integrity_failed: dict[int, str]  # node -> why its data failed VerifyIntegrity
    errors: dict[int, str]  # node -> the last line of its error


def read_train_replies(replies: Iterable[Message], edge_index: Mapping[int, int]) -> TrainReplies:
    """Each reply once: its weights as numpy arrays, its signed transaction, or why it failed."""
    updates, integrity_failed, errors = [], {}, {}
    for msg in replies:
        node = edge_index.get(msg.metadata.src_node_id)
        if node is None:
            continue
        if msg.has_error():
            errors[node] = last_line(msg.error.reason)
            continue
        metrics = msg.content[METRICS]
        chain = msg.content.get(CHAIN, {})
        if INTEGRITY_FAILED in metrics:
            integrity_failed[node] = str(chain.get(REASON, "data integrity check failed"))
        elif ARRAYS in msg.content:
            updates.append(ReceivedUpdate(
                node=node, weights=msg.content[ARRAYS].to_numpy_ndarrays(),
                num_samples=int(metrics[NUM_EXAMPLES]), raw_tx=bytes(chain.get(TX, b"")),
                train_loss=float(metrics[TRAIN_LOSS]) if TRAIN_LOSS in metrics else None,
            ))
    return TrainReplies(sorted(updates, key=lambda u: u.node), integrity_failed, errors)
