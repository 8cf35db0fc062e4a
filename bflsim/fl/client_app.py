"""The Flower ClientApp: one virtual edge node (Message API).

``query`` answers who the node is (its edge-node index and data size); ``train`` runs one
round of :func:`bflsim.fl.node.train_locally` and returns the new weights. The experiment
config travels in the message's ConfigRecord, so the same app serves every experiment.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bflsim.fl.node import experiment_from_json, node_partitions, train_locally

app = ClientApp()


def _edge_index(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.query()
def identify(msg: Message, context: Context) -> Message:
    config_record = msg.content["config"]
    config = experiment_from_json(str(config_record["experiment"]))
    data_dir = str(config_record["data-dir"]) or None
    node = _edge_index(context)
    rows = node_partitions(config.data, config.federation, data_dir)[node]
    metrics = MetricRecord({"node": node, "num-examples": len(rows)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config_record = msg.content["config"]
    config = experiment_from_json(str(config_record["experiment"]))
    data_dir = str(config_record["data-dir"]) or None
    server_round = int(config_record["server-round"])
    global_weights = msg.content["arrays"].to_numpy_ndarrays()

    result = train_locally(config, _edge_index(context), server_round, global_weights, data_dir)

    metrics = {"node": result.node, "num-examples": result.num_examples}
    if result.train_loss is not None:
        metrics["train-loss"] = result.train_loss
    content = RecordDict({"arrays": ArrayRecord(result.weights), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)
