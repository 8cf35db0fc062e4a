"""The Flower ClientApp: one virtual edge node (Message API).

``query`` answers who the node is (its edge-node index and data size);
``query.detect`` scores one slice of the node's devices' traffic (the closed loop, ``[loop]``);
``query.register_data`` returns the digest of the node's data batch and the ``registerData``
transaction the node signed for it; ``train`` runs one round of
:func:`bflsim.edge_node.train_locally` and returns the new weights, with the ``submitUpdate``
transaction the node signed for their digest when the run has a ledger. Before training, such
a node checks its data against the digest registered on chain (VerifyIntegrity) and refuses
the round when they differ. The messages are :mod:`strategies.protocol`'s; the experiment and
the chain context travel in them, so the same app serves every experiment.

The node learns which edge node it is from its node config (Flower's simulation sets
``partition-id`` and ``num-partitions``; a SuperNode of the deployment engine is started with
``--node-config "partition-id=3 num-partitions=10"``), checked against the experiment by
:func:`bflsim.fl.deployment.node_settings`. A SuperNode may also name its own chain key
(``chain-key-file``: it then signs with that key instead of the experiment's
``ledger.key_source``) and its own data folder (``data-dir``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from bflsim.edge_node import (
    DataIntegrityError,
    detect,
    node_partitions,
    register_data,
    sign_update,
    train_locally,
    verify_integrity,
)
from bflsim.fl.deployment import NodeSettings, node_settings
from bflsim.ledger.identity import NodeIdentity
from strategies import protocol as p

app = ClientApp()


@dataclass(frozen=True)
class _Node:
    """This node as one message addresses it: the request, and who the node is for it."""

    request: p.Request
    settings: NodeSettings

    @property
    def index(self) -> int:
        return self.settings.node

    @property
    def data_dir(self) -> str | None:
        return self.settings.data_dir or self.request.data_dir

    @property
    def identity(self) -> NodeIdentity | None:
        key = self.settings.chain_key
        return NodeIdentity(self.index, key) if key is not None else None


def _read(msg: Message, context: Context) -> _Node:
    request = p.Request.read(msg)
    return _Node(request, node_settings(context.node_config, request.config))


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Who this node is and how many rows it holds; given a chain context (the ledger's batched
    mode), also its signed data registration, or why it could not make one."""
    node = _read(msg, context)
    config = node.request.config
    rows = node_partitions(config.data, config.federation, node.data_dir)[node.index]
    chain = None
    if node.request.tx_context is not None:
        try:
            chain = _registration(node)
        except Exception as err:  # noqa: BLE001 - the server leaves the node out, naming why
            chain = {p.REASON: f"{type(err).__name__}: {err}"}
    return p.reply(msg, {p.NODE: node.index, p.NUM_EXAMPLES: len(rows)}, chain=chain)


@app.query("register_data")
def register(msg: Message, context: Context) -> Message:
    node = _read(msg, context)
    return p.reply(msg, {p.NODE: node.index}, chain=_registration(node))


def _registration(node: _Node) -> dict[str, object]:
    """The node's data digest, the time it registers it at, and its signature of both."""
    timestamp = int(time.time())
    digest, signed = register_data(node.request.config, node.index, node.request.tx_context, timestamp,
                                   node.data_dir, identity=node.identity)
    return {p.DATA_DIGEST: digest, p.TIMESTAMP: timestamp, p.TX: signed}


@app.train()
def train(msg: Message, context: Context) -> Message:
    this = _read(msg, context)
    request, node, data_dir = this.request, this.index, this.data_dir
    config, server_round = request.config, request.server_round
    if request.tx_context is not None:
        try:
            verify_integrity(config, node, server_round, request.data_digest, request.data_timestamp, data_dir)
        except DataIntegrityError as err:
            return p.reply(msg, {p.NODE: node, p.INTEGRITY_FAILED: 1}, chain={p.REASON: str(err)})

    global_weights = msg.content[p.ARRAYS].to_numpy_ndarrays()
    result = train_locally(config, node, server_round, global_weights, data_dir, request.cohort)
    metrics = {p.NODE: result.node, p.NUM_EXAMPLES: result.num_examples}
    if result.train_loss is not None:
        metrics[p.TRAIN_LOSS] = result.train_loss
    chain = None
    if request.tx_context is not None:
        digest, raw_tx = sign_update(config, node, request.tx_context, server_round, result.weights,
                                     result.num_examples, identity=this.identity)
        chain = {p.UPDATE_DIGEST: digest, p.TX: raw_tx}
    return p.reply(msg, metrics, weights=result.weights, chain=chain)


@app.query("detect")
def detect_slice(msg: Message, context: Context) -> Message:
    """Score one slice of this node's devices' traffic with the global model sent (the closed
    loop, ``[loop]``); reply with the counts, the windows to carry on from, and each alert with
    the window it saw and the ``alert`` transaction the node signed for it."""
    this = _read(msg, context)
    config, record = this.request.config, msg.content[p.CONFIG]
    loop = config.loop
    assert loop is not None, "a detection request for an experiment without [loop]"
    windows = p.unpack_windows(record, loop.window, loop.threshold)
    found = detect(config, this.index, msg.content[p.ARRAYS].to_numpy_ndarrays(), float(record[p.SLICE_START]),
                   float(record[p.SLICE_END]), windows, [int(d) for d in record.get(p.QUARANTINED, [])],
                   this.request.tx_context, this.data_dir, identity=this.identity,
                   alerted=dict(zip(record.get(p.ALERTED_DEVICES, []), record.get(p.ALERTED_COUNTS, []), strict=True)))
    outcome = found.outcome
    metrics = {p.NODE: this.index, p.SCORED: outcome.scored, p.DROPPED: outcome.dropped,
               p.FLAGGED: int(outcome.verdicts.sum()), p.BATCHES: outcome.batches}
    chain = {**p.pack_alerts(outcome.alerts, found.signed), **p.pack_windows(outcome.windows)}
    return p.reply(msg, metrics, chain=chain)
