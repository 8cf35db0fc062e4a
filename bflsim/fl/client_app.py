"""The Flower ClientApp: one virtual edge node (Message API).

``query`` answers who the node is (its edge-node index and data size);
``query.register_data`` returns the digest of the node's data batch and the ``registerData``
transaction the node signed for it; ``train`` runs one round of
:func:`bflsim.fl.node.train_locally` and returns the new weights, with the ``submitUpdate``
transaction the node signed for their digest when the run has a ledger. Before training, such
a node checks its data against the digest registered on chain (VerifyIntegrity) and refuses
the round when they differ. The experiment config and the chain context (chain id, contract,
nonce, fees) travel in the message's ConfigRecord, so the same app serves every experiment.
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bflsim.fl.node import (
    DataIntegrityError,
    experiment_from_json,
    node_partitions,
    register_data,
    sign_update,
    train_locally,
    verify_integrity,
)
from bflsim.ledger.identity import TxContext

app = ClientApp()


def _edge_index(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _setup(msg: Message):
    config_record = msg.content["config"]
    config = experiment_from_json(str(config_record["experiment"]))
    return config_record, config, str(config_record["data-dir"]) or None


@app.query()
def identify(msg: Message, context: Context) -> Message:
    _, config, data_dir = _setup(msg)
    node = _edge_index(context)
    rows = node_partitions(config.data, config.federation, data_dir)[node]
    metrics = MetricRecord({"node": node, "num-examples": len(rows)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.query("register_data")
def register(msg: Message, context: Context) -> Message:
    config_record, config, data_dir = _setup(msg)
    node = _edge_index(context)
    timestamp = int(time.time())
    digest, raw_tx = register_data(config, node, TxContext.from_config(config_record), timestamp, data_dir)
    chain = ConfigRecord({"data-digest": digest, "timestamp": timestamp, "tx": raw_tx})
    return Message(RecordDict({"metrics": MetricRecord({"node": node}), "chain": chain}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config_record, config, data_dir = _setup(msg)
    server_round = int(config_record["server-round"])
    node = _edge_index(context)
    on_chain = "chain.chain_id" in config_record

    if on_chain:
        try:
            verify_integrity(
                config, node, server_round, bytes(config_record["chain.data-digest"]),
                int(config_record["chain.data-timestamp"]), data_dir,
            )
        except DataIntegrityError as err:
            metrics = MetricRecord({"node": node, "integrity-failed": 1})
            return Message(RecordDict({"metrics": metrics, "chain": ConfigRecord({"reason": str(err)})}), reply_to=msg)

    global_weights = msg.content["arrays"].to_numpy_ndarrays()
    result = train_locally(config, node, server_round, global_weights, data_dir)

    metrics = {"node": result.node, "num-examples": result.num_examples}
    if result.train_loss is not None:
        metrics["train-loss"] = result.train_loss
    content = RecordDict({"arrays": ArrayRecord(result.weights), "metrics": MetricRecord(metrics)})
    if on_chain:
        digest, raw_tx = sign_update(
            config, node, TxContext.from_config(config_record), server_round, result.weights, result.num_examples
        )
        content["chain"] = ConfigRecord({"update-digest": digest, "tx": raw_tx})
    return Message(content, reply_to=msg)
