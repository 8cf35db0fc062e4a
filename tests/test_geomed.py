"""Geometric median (RFA): it minimises the weighted sum of distances, and it is robust."""

import numpy as np
import pytest

from bflsim.aggregators import AGGREGATORS, AggregatorError, decide_round, geometric_median
from bflsim.config import parse_experiment


def objective(x, weights, v):
    return float(weights @ np.linalg.norm(x - v, axis=1))


def test_it_minimises_the_weighted_sum_of_distances():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(9, 6)) * rng.uniform(0.5, 3.0, size=(9, 1))
    weights = rng.uniform(1, 5, size=9)

    v = geometric_median(x, weights).aggregate
    best = objective(x, weights, v)

    for step in (1e-2, 1e-3):
        for delta in rng.normal(size=(200, 6)):
            assert best <= objective(x, weights, v + step * delta / np.linalg.norm(delta)) + 1e-12
    assert best < objective(x, weights, weights @ x / weights.sum())  # better than the weighted mean
    assert best < objective(x, weights, np.median(x, axis=0))  # and the coordinate-wise median


def test_known_answers_square_centre_and_the_middle_of_a_line():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(geometric_median(square).aggregate, [0.5, 0.5], atol=1e-9)

    direction = np.array([1.0, -2.0, 0.5])
    line = np.outer([0.0, 1.0, 2.0, 3.0, 100.0], direction)  # odd count on a line: the middle point
    np.testing.assert_allclose(geometric_median(line).aggregate, 2.0 * direction, atol=1e-5)


def test_less_than_half_the_weight_cannot_drag_it_away_however_far():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=50)
    honest = centre + 0.1 * rng.normal(size=(7, 50))
    far = np.full((3, 50), 1e6)

    selection = geometric_median(np.vstack([honest, far]).astype(np.float32))

    assert np.linalg.norm(selection.aggregate - centre) < 1.0
    assert selection.weights[7:].sum() < 1e-5 and selection.weights.sum() == pytest.approx(1.0)
    assert selection.aggregate.dtype == np.float32 and selection.selected.tolist() == list(range(10))
    # more than half of the weight on one row: the median is that row
    np.testing.assert_allclose(geometric_median(np.vstack([honest[:1], far[:2]]), [10, 1, 1]).aggregate,
                               honest[0], atol=1e-4)


def test_parameters_and_sample_counts_are_checked_naming_the_key():
    with pytest.raises(AggregatorError, match="max_iter must be >= 1; got 0"):
        AGGREGATORS["geometric_median"](max_iter=0)
    with pytest.raises(AggregatorError, match=r"tolerance must be a number in \(0, 1\); got 2"):
        AGGREGATORS["geometric_median"](tolerance=2)
    with pytest.raises(AggregatorError, match="one positive sample count per update"):
        geometric_median(np.ones((3, 2)), [1, 0, 2])
    with pytest.raises(Exception, match="aggregator.params.max_iter"):
        parse_experiment({"experiment": {"name": "g", "kind": "federated"}, "data": {"dataset": "synthetic"},
                          "aggregator": {"name": "geometric_median", "params": {"max_iter": -3}}})


def test_a_round_decided_with_it_rejects_nobody_and_moves_little_under_outliers():
    rule = parse_experiment({"experiment": {"name": "g", "kind": "federated"}, "data": {"dataset": "synthetic"},
                             "aggregator": {"name": "geometric_median"}}).rule
    rng = np.random.default_rng(2)
    global_weights = [np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    updates = [[w + 0.01 * rng.normal(size=w.shape).astype(np.float32) for w in global_weights] for _ in range(5)]
    updates.append([w + 1000.0 for w in global_weights])

    decision = decide_round(rule, range(6), updates, global_weights, [10] * 6, 3.0)

    assert decision.rejected == () and decision.accepted == (0, 1, 2, 3, 4, 5)
    assert max(float(np.abs(w).max()) for w in decision.new_weights) < 0.05
