"""The Flower ClientApp: one virtual edge node (Message API).

``query`` answers who the node is (its edge-node index and data size);
``query.register_data`` returns the digest of the node's data batch and the ``registerData``
transaction the node signed for it; ``train`` runs one round of
:func:`bflsim.edge_node.train_locally` and returns the new weights, with the ``submitUpdate``
transaction the node signed for their digest when the run has a ledger. Before training, such
a node checks its data against the digest registered on chain (VerifyIntegrity) and refuses
the round when they differ. The messages are :mod:`strategies.protocol`'s; the experiment and
the chain context travel in them, so the same app serves every experiment.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from bflsim.edge_node import (
    DataIntegrityError,
    node_partitions,
    register_data,
    sign_update,
    train_locally,
    verify_integrity,
)
from strategies import protocol as p

app = ClientApp()


def _edge_index(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.query()
def identify(msg: Message, context: Context) -> Message:
    request, node = p.Request.read(msg), _edge_index(context)
    rows = node_partitions(request.config.data, request.config.federation, request.data_dir)[node]
    return p.reply(msg, {p.NODE: node, p.NUM_EXAMPLES: len(rows)})


@app.query("register_data")
def register(msg: Message, context: Context) -> Message:
    request, node = p.Request.read(msg), _edge_index(context)
    timestamp = int(time.time())
    digest, raw_tx = register_data(request.config, node, request.tx_context, timestamp, request.data_dir)
    return p.reply(msg, {p.NODE: node}, chain={p.DATA_DIGEST: digest, p.TIMESTAMP: timestamp, p.TX: raw_tx})


@app.train()
def train(msg: Message, context: Context) -> Message:
    request, node = p.Request.read(msg), _edge_index(context)
    config, server_round = request.config, request.server_round
    if request.tx_context is not None:
        try:
            verify_integrity(config, node, server_round, request.data_digest, request.data_timestamp, request.data_dir)
        except DataIntegrityError as err:
            return p.reply(msg, {p.NODE: node, p.INTEGRITY_FAILED: 1}, chain={p.REASON: str(err)})

    global_weights = msg.content[p.ARRAYS].to_numpy_ndarrays()
    result = train_locally(config, node, server_round, global_weights, request.data_dir, request.cohort)
    metrics = {p.NODE: result.node, p.NUM_EXAMPLES: result.num_examples}
    if result.train_loss is not None:
        metrics[p.TRAIN_LOSS] = result.train_loss
    chain = None
    if request.tx_context is not None:
        digest, raw_tx = sign_update(config, node, request.tx_context, server_round, result.weights,
                                     result.num_examples)
        chain = {p.UPDATE_DIGEST: digest, p.TX: raw_tx}
    return p.reply(msg, metrics, weights=result.weights, chain=chain)
