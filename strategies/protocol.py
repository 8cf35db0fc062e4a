"""The messages between the strategy and the edge nodes' ClientApp, written once.

Server to node (every message's ``config`` ConfigRecord): the round, the experiment in its
wire form (:func:`bflsim.config.to_wire`), the data directory, the round's cohort, and with
a ledger the node's transaction context and registered data digest under ``chain.*``.

Node to server: ``metrics`` (the node's index, its sample count, its training loss, or that
its data failed VerifyIntegrity) and, with a ledger, a ``chain`` ConfigRecord (the signed
transaction, the digests it signs, or why the node refused). Training replies carry the
node's weights as ``arrays``.

Message types: ``query`` (who are you), ``query.register_data`` (sign your data digest),
``train``, and after training, with ``[loop]``, ``query.detect`` (score one slice of your
devices' traffic with this global model; sign an alert for each window that crosses the
threshold). The edge-node logic behind them is :mod:`bflsim.edge_node`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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


# --- the closed loop (issue 14): one slice of the devices' traffic -----------------------------

DETECT = f"{MessageType.QUERY}.detect"
# config keys of a detection request
SLICE_START, SLICE_END, QUARANTINED = "slice-start", "slice-end", "quarantined"
ALERTED_DEVICES, ALERTED_COUNTS = "alerted-devices", "alerted-counts"  # alerts the registry counted so far
WINDOW_DEVICES, WINDOW_LENGTHS, WINDOW_ROWS, WINDOW_VERDICTS = (
    "window-devices", "window-lengths", "window-rows", "window-verdicts")
WINDOW_KEYS = (WINDOW_DEVICES, WINDOW_LENGTHS, WINDOW_ROWS, WINDOW_VERDICTS)  # a node's windows, packed
# metrics keys of a detection reply
SCORED, DROPPED, FLAGGED, BATCHES = "scored", "dropped", "flagged", "batches"
# chain keys of a detection reply: the alerts, in the order the node signed them
ALERT_DEVICES, ALERT_TIMES, ALERT_LENGTHS, ALERT_ROWS, ALERT_VERDICTS, ALERT_TXS = (
    "alert-devices", "alert-times", "alert-lengths", "alert-rows", "alert-verdicts", "alert-txs")


def pack_windows(windows: Mapping[int, Any]) -> dict[str, list]:
    """Per-device windows (:class:`bflsim.traffic.Window`) as flat lists for a ConfigRecord."""
    devices = sorted(windows)
    return {
        WINDOW_DEVICES: devices,
        WINDOW_LENGTHS: [len(windows[d].rows) for d in devices],
        WINDOW_ROWS: [int(r) for d in devices for r in windows[d].rows],
        WINDOW_VERDICTS: [bool(v) for d in devices for v in windows[d].verdicts],
    }


def unpack_windows(record: Mapping[str, Any], size: int, threshold: int) -> dict[int, Any]:
    """The windows :func:`pack_windows` packed."""
    from collections import deque

    from bflsim.traffic import Window

    windows, at = {}, 0
    rows, verdicts = list(record.get(WINDOW_ROWS, [])), list(record.get(WINDOW_VERDICTS, []))
    for device, length in zip(record.get(WINDOW_DEVICES, []), record.get(WINDOW_LENGTHS, []), strict=True):
        windows[int(device)] = Window(size, threshold, deque(int(r) for r in rows[at:at + length]),
                                      deque(bool(v) for v in verdicts[at:at + length]))
        at += length
    return windows


def pack_alerts(alerts: Sequence[Any], signed: Sequence[bytes]) -> dict[str, list]:
    """A node's alerts (:class:`bflsim.traffic.Alert`) and their signed transactions."""
    return {
        ALERT_DEVICES: [int(a.device) for a in alerts],
        ALERT_TIMES: [float(a.time) for a in alerts],
        ALERT_LENGTHS: [len(a.rows) for a in alerts],
        ALERT_ROWS: [int(r) for a in alerts for r in a.rows],
        ALERT_VERDICTS: [bool(v) for a in alerts for v in a.verdicts],
        ALERT_TXS: [bytes(t) for t in signed],
    }


def read_alerts(node: int, chain: Mapping[str, Any]) -> list[Any]:
    """The alerts of a node's detection reply, as the server receives them."""
    from bflsim.ledger.loop import ReceivedAlert

    alerts, at = [], 0
    rows, verdicts = list(chain.get(ALERT_ROWS, [])), list(chain.get(ALERT_VERDICTS, []))
    for device, when, length, raw in zip(chain.get(ALERT_DEVICES, []), chain.get(ALERT_TIMES, []),
                                         chain.get(ALERT_LENGTHS, []), chain.get(ALERT_TXS, []), strict=True):
        window = tuple(bool(v) for v in verdicts[at:at + length])
        alerts.append(ReceivedAlert(node, int(device), float(when), tuple(int(r) for r in rows[at:at + length]),
                                    window, sum(window), bytes(raw)))
        at += length
    return alerts
