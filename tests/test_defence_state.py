"""What the server carries between rounds for rules that need it (bflsim.aggregators.carry),
and the server's root set carved out of the training split before partitioning."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from bflsim.aggregators import (
    AggregatorError,
    DefenceState,
    FedAvg,
    RoundContext,
    Rule,
    Selection,
    decide_round,
)
from bflsim.config import parse_experiment
from bflsim.data import partition
from bflsim.edge_node import load_data, node_partitions, root_rows, root_update


@dataclass(frozen=True)
class Recording(Rule):
    """FedAvg that keeps the context it was given (a rule needing everything)."""

    name: ClassVar[str] = "recording"
    label: ClassVar[str] = "recording"
    needs: ClassVar[frozenset[str]] = frozenset({"reference", "previous", "history"})

    def __call__(self, updates, num_samples=None, context=None):
        context = self.context_for(context, *np.shape(updates))
        SEEN.append(context)
        x = np.asarray(updates, dtype=np.float64)
        n = len(x)
        return Selection(x.mean(axis=0), np.arange(n), np.zeros(n), np.full(n, 1 / n))


SEEN: list[RoundContext] = []


def weights(*values):
    return [np.array(values, dtype=np.float32)]


def test_the_state_builds_previous_history_and_reference_from_what_was_decided():
    SEEN.clear()
    calls = []
    state = DefenceState(Recording(), seed=7, reference=lambda r, g: calls.append(r) or np.full(2, float(r)))
    global_weights = weights(0.0, 0.0)
    rounds = [([0, 1], [weights(1.0, 0.0), weights(3.0, 2.0)]), ([1, 2], [weights(2.0, 1.0), weights(2.0, 5.0)])]
    for server_round, (nodes, updates) in enumerate(rounds, start=1):
        context = state.context(server_round, nodes, updates, global_weights)
        decision = decide_round(Recording(), nodes, updates, global_weights, [1] * len(nodes), 3.0, context=context)
        state.advance(nodes, updates, global_weights)
        global_weights = decision.new_weights

    first, second = SEEN
    assert first.previous is None and (first.server_round, first.seed) == (1, 7)
    np.testing.assert_array_equal(first.history, [[1.0, 0.0], [3.0, 2.0]])
    # round 2 opened from G1 = mean = (2, 1): previous = G1 - G0; node 1's history adds its second update
    np.testing.assert_array_equal(second.previous, [2.0, 1.0])
    np.testing.assert_array_equal(second.history, [[3.0 + 0.0, 2.0 + 0.0], [0.0, 4.0]])
    assert calls == [1, 2] and second.reference.tolist() == [2.0, 2.0]
    assert first.rng().random() == RoundContext(1, 7).rng().random() != second.rng().random()

    restored = DefenceState(Recording(), seed=7)
    restored.restore(state.arrays())
    assert sorted(restored.history) == [0, 1, 2]
    np.testing.assert_array_equal(restored.before, state.before)
    np.testing.assert_array_equal(restored.history[1], state.history[1])


def test_rules_that_need_nothing_carry_nothing_and_a_missing_need_is_named():
    state = DefenceState(FedAvg())
    context = state.context(3, [0], [weights(1.0)], weights(0.0))
    state.advance([0], [weights(1.0)], weights(0.0))
    assert (context.reference, context.previous, context.history) == (None, None, None)
    assert state.history == {} and state.before is None
    with pytest.raises(AggregatorError, match=r"recording needs the round's history \(RoundContext.history\)"):
        Recording()(np.ones((2, 2)), None, RoundContext(1))
    with pytest.raises(AggregatorError, match=r"RoundContext.reference has shape \(3,\); expected \(2,\)"):
        Recording()(np.ones((2, 2)), None, RoundContext(1, reference=np.ones(3), history=np.ones((2, 2))))


def config(root_size):
    return parse_experiment({
        "experiment": {"name": "root", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 600}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8]}},
        "federation": {"num_nodes": 4, "rounds": 1, "root_size": root_size},
        "ledger": {"backend": "none"},
    })


def test_the_root_set_is_carved_out_before_partitioning_and_no_node_holds_it():
    plain, rooted = config(0), config(50)
    labels = load_data(plain.data).y_train
    expected = partition(labels, 4, "iid", seed=plain.federation.seed)
    assert all(np.array_equal(a, b) for a, b in zip(node_partitions(plain.data, plain.federation), expected, strict=True))
    assert root_rows(plain.data, plain.federation).size == 0  # no root set: the partition as it always was

    root = root_rows(rooted.data, rooted.federation)
    parts = node_partitions(rooted.data, rooted.federation)
    held = np.concatenate(parts)
    assert root.size == 50 and np.unique(root).size == 50
    assert np.intersect1d(root, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([root, held])), np.arange(len(labels)))  # every row once


def test_the_servers_reference_update_is_a_seeded_training_on_the_root_set():
    rooted = config(50)
    from bflsim.models import initial_weights

    data = load_data(rooted.data)
    start = initial_weights(rooted.models, rooted.train, data.num_features, data.num_classes)
    first, again, later = (root_update(rooted, r, start) for r in (1, 1, 2))
    assert first.dtype == np.float64 and first.ndim == 1 and np.abs(first).sum() > 0
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)  # the round seeds the batch order


def test_a_rule_needing_a_root_set_is_refused_without_one(monkeypatch):
    from bflsim.aggregators import AGGREGATORS
    from bflsim.config import ConfigError

    monkeypatch.setitem(AGGREGATORS, "recording", Recording)
    raw = {
        "experiment": {"name": "root", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 600}},
        "models": {"names": ["dnn"]},
        "federation": {"num_nodes": 4, "rounds": 1},
        "aggregator": {"name": "recording"},
        "ledger": {"backend": "none"},
    }
    with pytest.raises(ConfigError, match="needs the server's clean root set: set federation.root_size"):
        parse_experiment(raw)
    raw["federation"]["root_size"] = 40
    assert parse_experiment(raw).federation.root_size == 40
