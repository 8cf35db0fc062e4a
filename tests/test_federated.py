"""Federated simulation: edge-node logic without Flower, then one real Flower + Ray run."""

import json

import numpy as np
import pandas as pd
import pytest

from bflsim.config import ConfigError, from_wire, parse_experiment, to_wire
from bflsim.edge_node import load_data, train_locally
from bflsim.models import cached_model, initial_weights

RUNTIME_BACKEND = {}  # the runs below share one warm Ray runtime (conftest.warm_runtime)

BASE = {
    "experiment": {"name": "fl_test", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 1500}},
    "models": {"names": ["cnn_lstm"], "cnn_lstm": {"conv_filters": 8, "lstm_units": 8}},
    "train": {"batch_size": 64, "learning_rate": 0.005},
    "federation": {"num_nodes": 5, "rounds": 2},
    "attack": {"name": "gaussian", "num_malicious": 1, "mode": "replace", "sigma": 5.0},
    "aggregator": {"name": "krum"},
}


def config_with(**sections):
    raw = json.loads(json.dumps(BASE))
    for section, values in sections.items():
        raw[section].update(values)
    return parse_experiment(raw)


def test_config_round_trips_through_the_wire_format():
    config = config_with()

    assert from_wire(to_wire(config)) == config


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"aggregator": {"assumed_malicious": 2}}, "Krum cannot tolerate f=2 malicious among n=5"),
        ({"attack": {"num_malicious": 6}}, "6 malicious nodes but federation.num_nodes = 5"),
        ({"attack": {"sigma": -1.0}}, "attack.params.sigma must be a finite number >= 0"),
        ({"federation": {"fraction_train": 0.6}, "aggregator": {"assumed_malicious": 1}}, "cohort of 3 nodes"),
        ({"attack": {"mode": "swap"}}, "attack.params.mode = 'swap' is not one of"),
    ],
)
def test_impossible_federated_settings_fail_before_the_run(sections, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_with(**sections)


def test_honest_node_trains_and_malicious_node_sends_noise():
    config = config_with()
    bad = int(config.malicious_nodes(1)[0])
    good = (bad + 1) % 5
    data = load_data(config.data)
    start = [w.copy() for w in cached_model(config.models, config.train, data.num_features,
                                            data.num_classes).get_weights()]

    honest = train_locally(config, good, 1, start)
    poisoned = train_locally(config, bad, 1, start)

    honest_delta = np.concatenate([(a - b).ravel() for a, b in zip(honest.weights, start)])
    noise = np.concatenate([(a - b).ravel() for a, b in zip(poisoned.weights, start)])
    assert not honest.malicious and poisoned.malicious
    assert honest.train_loss is not None and poisoned.train_loss is None  # replace mode skips training
    assert 0 < np.abs(honest_delta).mean() < 0.5
    assert noise.std() == pytest.approx(5.0, rel=0.05)


def test_a_nodes_training_does_not_depend_on_what_the_process_trained_before():
    # A DNN with dropout: the layers' random streams restart from (train.seed, round, node),
    # so which node a Ray actor ran before cannot change this node's update.
    config = config_with(models={"names": ["dnn"], "dnn": {"hidden_units": [16], "dropout": 0.3}})
    data = load_data(config.data)
    start = [w.copy() for w in cached_model(config.models, config.train, data.num_features,
                                            data.num_classes).get_weights()]

    first = train_locally(config, 2, 1, start).weights
    train_locally(config, 3, 1, start)
    train_locally(config, 4, 1, start)
    again = train_locally(config, 2, 1, start).weights

    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.fixture(scope="module")
def krum_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    out = tmp_path_factory.mktemp("runs")
    return run_federated(config_with(), out)


def test_flower_ray_run_writes_rows_every_round_and_krum_rejects_the_noise(krum_run):
    metrics = pd.read_csv(krum_run.metrics_path)
    manifest = json.loads((krum_run.path / "manifest.json").read_text())

    rounds = metrics[metrics["split"] == "round"]
    accepted = rounds[rounds["metric"] == "poisoned_accepted"]["value"].tolist()
    received = rounds[rounds["metric"] == "poisoned_received"]["value"].tolist()
    test_rounds = sorted(metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["round"])
    assert manifest["status"] == "complete"
    assert test_rounds == [0, 1, 2]
    assert received == [1.0, 1.0] and accepted == [0.0, 0.0]
    selected = metrics[(metrics["split"] == "node") & (metrics["metric"] == "selected")]
    assert selected.groupby("round")["value"].sum().tolist() == [1.0, 1.0]  # Krum keeps one update
    assert (krum_run.path / "final_model.npz").is_file()
    confusion = pd.read_csv(krum_run.confusion_path)
    assert sorted(confusion["round"].unique()) == [0, 1, 2]  # the evaluator logs each round's matrix
    assert confusion.groupby("round")["count"].sum().nunique() == 1  # every test row, every round


def test_initial_global_model_depends_on_the_seed_alone():
    config = config_with()
    other_seed = config_with(train={"seed": 7})
    first = initial_weights(config.models, config.train, 12, 3)
    cached_model(config.models, config.train, 12, 3).fit(  # disturb the global RNG state
        np.zeros((4, 12), np.float32), np.zeros(4), verbose=0)
    again = initial_weights(config.models, config.train, 12, 3)
    other = initial_weights(other_seed.models, other_seed.train, 12, 3)

    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
