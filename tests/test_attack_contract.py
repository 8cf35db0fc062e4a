"""The attack contract at the edge node: coalition and round knowledge, data poisoning, skipping training.

Test-only attack records are registered for the length of a test; the node code is the one a
ClientApp runs (:func:`bflsim.edge_node.train_locally`), without Flower.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from bflsim.attacks import ATTACKS, Attack, AttackInput
from bflsim.config import parse_experiment
from bflsim.edge_node import fit, load_data, node_partitions, train_locally
from bflsim.hashing import weights_digest
from bflsim.models import initial_weights
from bflsim.vectors import flatten

SEEN: list[AttackInput] = []


@dataclass(frozen=True)
class OppositeOfCoalition(Attack):
    """Sends minus the mean of the coalition's honest updates (an IPM-like toy)."""

    name: ClassVar[str] = "opposite_of_coalition"
    label: ClassVar[str] = "opposite of the coalition"
    threat_model: ClassVar[str] = "colluding"

    def poison_update(self, attack_input):
        SEEN.append(attack_input)
        return -attack_input.coalition.mean(axis=0)


@dataclass(frozen=True)
class Omniscient(OppositeOfCoalition):
    name: ClassVar[str] = "omniscient"
    threat_model: ClassVar[str] = "omniscient"


@dataclass(frozen=True)
class FlipLabels(Attack):
    """Trains on labels shifted by one class."""

    name: ClassVar[str] = "flip_labels"
    label: ClassVar[str] = "label flip"

    def poison_data(self, features, labels, classes, rng):
        SEEN.append(AttackInput(labels, rng))
        return features, (labels + 1) % len(classes.names)


def config_for(attack):
    return parse_experiment({
        "experiment": {"name": "contract", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 600}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "train": {"batch_size": 64, "learning_rate": 0.01},
        "federation": {"num_nodes": 6, "rounds": 1},
        "attack": {"name": attack, "num_malicious": 2, "seed": 3, "threat_model": "adaptive"},
    })


@pytest.fixture
def registered(monkeypatch):
    SEEN.clear()
    for record in (OppositeOfCoalition, Omniscient, FlipLabels):
        monkeypatch.setitem(ATTACKS, record.name, record)


def start(config):
    data = load_data(config.data)
    return data, initial_weights(config.models, config.train, data.num_features, data.num_classes)


def honest_delta(config, node, start_weights):
    return flatten(fit(config, node, 1, start_weights)[0])[0] - flatten(start_weights)[0]


@pytest.mark.parametrize("attack", ["opposite_of_coalition", "omniscient"])
def test_a_colluding_attack_gets_the_honest_updates_it_knows(registered, attack):
    config = config_for(attack)
    bad = [int(i) for i in config.malicious_nodes(1)]
    cohort = sorted({*bad, *[i for i in range(6) if i not in bad][:2]})
    _, weights = start(config)

    result = train_locally(config, bad[0], 1, weights, cohort=cohort)

    seen = SEEN[-1]
    expected_coalition = np.stack([honest_delta(config, node, weights) for node in bad])
    assert np.array_equal(seen.own_update, expected_coalition[0])  # training is deterministic from the seeds
    assert np.array_equal(seen.coalition, expected_coalition)
    if attack == "omniscient":
        assert seen.honest.shape == (len(cohort), seen.own_update.size)
        assert np.array_equal(seen.honest[cohort.index(bad[1])], expected_coalition[1])
        benign = [node for node in cohort if node not in bad]  # ascending, the attackers' rows left out
        assert np.array_equal(seen.benign, np.stack([honest_delta(config, node, weights) for node in benign]))
    else:
        assert seen.honest is None and seen.benign is None
    sent = flatten(result.weights)[0] - flatten(weights)[0]
    assert result.malicious and np.allclose(sent, -expected_coalition.mean(axis=0), atol=1e-6)


def test_a_data_attack_changes_what_the_node_trains_on(registered):
    config = config_for("flip_labels")
    data, weights = start(config)
    bad = int(config.malicious_nodes(1)[0])
    rows = node_partitions(config.data, config.federation)[bad]

    poisoned = train_locally(config, bad, 1, weights)
    honest = fit(config_for("none"), bad, 1, weights)[0]  # the same node, seeds and partition, no attack

    assert np.array_equal(SEEN[-1].own_update, data.y_train[rows])  # it saw the node's own labels
    assert poisoned.malicious and poisoned.train_loss is not None
    assert not all(np.array_equal(a, b) for a, b in zip(poisoned.weights, honest, strict=True))
    # the poisoned data is the node's data: fit trains on it, the same in every call
    assert all(np.array_equal(a, b) for a, b in zip(poisoned.weights, fit(config, bad, 1, weights)[0], strict=True))
    assert np.array_equal(data.y_train[rows], load_data(config.data).y_train[rows])  # the data itself is untouched


def test_a_process_trains_each_node_once_per_round_for_attackers_that_know_it(monkeypatch):
    """An omniscient attacker needs every cohort node's honest update: the process trains each
    node's round once and shares it (the attackers' results equal training each one afresh)."""
    import bflsim.edge_node as edge

    config = config_for("ipm")
    data = edge.load_data(config.data)
    start = initial_weights(config.models, config.train, data.num_features, data.num_classes)
    cohort = list(range(config.federation.num_nodes))
    calls = []
    real = edge.train_weights
    monkeypatch.setattr(edge, "train_weights", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    edge._FITS.clear()

    sent = {node: edge.train_locally(config, node, 1, start, cohort=cohort).weights for node in cohort}

    assert len(calls) == len(set(calls)) == len(cohort)  # 6 trainings, not 6 + 2 x 6
    edge._FITS.clear()
    again = {node: edge.train_locally(config, node, 1, start, cohort=cohort).weights for node in reversed(cohort)}
    assert all(weights_digest(sent[n]) == weights_digest(again[n]) for n in cohort)
