"""Bulyan: a hand-computed case, properties, refusals, the config, and agreement with Flower."""

import numpy as np
import pytest

from bflsim.aggregators import (
    AGGREGATORS,
    AggregatorError,
    Bulyan,
    NonFiniteUpdateError,
    bulyan,
    check_bulyan,
    decide_round,
    krum_scores,
    multikrum,
    pairwise_sq_distances,
)
from bflsim.aggregators.bulyan import iterated_krum
from bflsim.config import ConfigError, parse_experiment
from bflsim.vectors import flatten

# --- hand-computed -----------------------------------------------------------------------


def test_bulyan_by_hand():
    # n = 7, f = 1: theta = n - 2f = 5 rows picked by iterated Krum, beta = theta - 2f = 3
    # values kept per coordinate. Column 0 holds 0, 5, 6, 9, 10, 13, 60; column 1 is all zeros,
    # so distances are those of column 0. Neighbours k = max(1, n' - f - 2) among n' remaining.
    # Pick 1 (n' = 7, k = 4), sums of the 4 smallest squared distances:
    #   0: 25+36+81+100 = 242   5: 1+16+25+25 = 67   6: 1+9+16+36 = 62   9: 1+9+16+16 = 42
    #   10: 1+9+16+25 = 51      13: 9+16+49+64 = 138  60: 47²+50²+51²+54² = 10226  -> row 3 (9)
    # Pick 2 (n' = 6, k = 3): 0: 161  5: 51  6: 53  10: 9+16+25 = 50  13: 122  -> row 4 (10)
    # Pick 3 (n' = 5, k = 2): 0: 25+36 = 61  5: 1+25 = 26  6: 1+36 = 37  13: 113  -> row 1 (5)
    # Pick 4 (n' = 4, k = 1): 0: 36  6: 36  13: 49  60: 2209  -> tie 0 / 6, broken by the sum of
    #   squared distances to all remaining rows: 0: 36+169+3600 = 3805, 6: 36+49+2916 = 3001 -> row 2 (6)
    # Pick 5 (n' = 3, k = 1): 0: 169  13: 169  60: 2209  -> tie, sums 0: 3769, 13: 2378 -> row 5 (13)
    # Step 1 keeps rows {1, 2, 3, 4, 5}, here the same as one-shot Multi-Krum.
    # Column 0: median of {5, 6, 9, 10, 13} is 9; distances 4, 3, 0, 1, 4 keep 9, 10, 6 -> 25/3.
    # Column 1: all distances 0, the tie keeps the three lowest rows 1, 2, 3 -> 0.
    # Weights (kept values per row / (d * beta) = / 6): rows 1..5 count 1, 2, 2, 1, 0, so row 5,
    # picked in step 1, contributes nothing and is not "selected".
    updates = np.array([[0.0, 0], [5, 0], [6, 0], [9, 0], [10, 0], [13, 0], [60, 0]])

    selection = bulyan(updates, num_malicious=1)
    step_one, _ = iterated_krum(pairwise_sq_distances(updates), 1, 5)

    assert selection.scores.tolist() == [242, 67, 62, 42, 51, 138, 10226]
    assert step_one.tolist() == [1, 2, 3, 4, 5]
    assert multikrum(updates, num_malicious=1, num_selected=5).selected.tolist() == [1, 2, 3, 4, 5]
    assert selection.selected.tolist() == [1, 2, 3, 4]
    assert selection.aggregate.tolist() == pytest.approx([25 / 3, 0.0], abs=1e-15)
    assert selection.weights.tolist() == pytest.approx([0, 1 / 6, 1 / 3, 1 / 3, 1 / 6, 0, 0])


def test_the_record_is_the_function():
    updates = np.random.default_rng(0).normal(size=(11, 8))
    rule = AGGREGATORS["bulyan"](num_malicious=2)

    selection = rule(updates, np.ones(11))

    assert isinstance(rule, Bulyan) and (rule.name, rule.label) == ("bulyan", "Bulyan")
    assert np.array_equal(selection.aggregate, bulyan(updates, 2).aggregate)


# --- properties --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_no_malicious_bulyan_is_the_mean(dtype):
    updates = np.random.default_rng(1).normal(size=(5, 40)).astype(dtype)

    selection = bulyan(updates, num_malicious=0)

    assert selection.aggregate.dtype == dtype
    assert np.allclose(selection.aggregate, updates.mean(axis=0, dtype=np.float64).astype(dtype),
                       rtol=0, atol=10 * np.finfo(dtype).eps)
    assert selection.selected.tolist() == list(range(5))
    assert selection.weights.tolist() == pytest.approx([0.2] * 5)


def test_scores_are_the_first_picks_krum_scores():
    updates = np.random.default_rng(2).normal(size=(12, 30))

    selection = bulyan(updates, num_malicious=2)

    assert np.array_equal(selection.scores, krum_scores(updates, 2))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("f", [0, 1, 2, 3, 4])
def test_bulyan_is_invariant_to_permuting_the_rows(seed, f):
    # f = 1, 2 included: their picks with k = 1 neighbour tie, and the tie is broken by the
    # rows' distances, not by their order (see the test below).
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(4 * f + 3 + int(rng.integers(0, 5)), 20))
    permutation = rng.permutation(len(updates))

    original = bulyan(updates, f)
    permuted = bulyan(updates[permutation], f)

    assert np.allclose(permuted.aggregate, original.aggregate, rtol=0, atol=1e-12)
    assert sorted(permutation[permuted.selected]) == original.selected.tolist()
    assert np.allclose(permuted.weights, original.weights[permutation], rtol=0, atol=1e-15)
    assert np.allclose(permuted.scores, original.scores[permutation], rtol=1e-12, atol=0)


def test_with_one_neighbour_the_mutually_nearest_rows_tie_and_their_distances_decide():
    # n = 7, f = 1: the 4th and 5th picks (n' = 4, 3) score each row by its nearest neighbour
    # alone (k = max(1, n' - f - 2) = 1), so the two mutually nearest rows always tie. Values
    # 1, 5, 6, 9, 14, 17, 20 (squared distances):
    #   pick 1 (k = 4): 274, 114, 99, 114, 134, 203, 362 -> 6
    #   pick 2 (k = 3): 1: 249  5: 113  9: 105  14: 70  17: 82  20: 166 -> 14
    #   pick 3 (k = 2): 1: 80  5: 32  9: 80  17: 73  20: 130 -> 5
    #   pick 4 (k = 1): 1: 64  9: 64  17: 9  20: 9 -> tie 17 / 20; sums to all remaining:
    #     17: 256+64+9 = 329, 20: 361+121+9 = 491 -> 17
    #   pick 5 (k = 1): 1: 64  9: 64  20: 121 -> tie 1 / 9; sums 1: 425, 9: 185 -> 9
    #   -> {5, 6, 9, 14, 17}, median 9, keeps 9, 6, 5 -> 20/3, in either row order. (By row
    #   index alone the tie would keep 1 or 20 depending on the order: 4 forwards, 17 backwards.)
    values = np.array([1.0, 5, 6, 9, 14, 17, 20])

    forward = bulyan(values[:, None], num_malicious=1)
    backward = bulyan(values[::-1, None], num_malicious=1)

    assert forward.scores.tolist() == [274, 114, 99, 114, 134, 203, 362]
    assert sorted(values[forward.selected]) == [5, 6, 9]  # the beta = 3 kept values
    assert forward.aggregate.tolist() == pytest.approx([20 / 3])
    assert backward.aggregate.tolist() == forward.aggregate.tolist()
    assert sorted(values[::-1][backward.selected]) == [5, 6, 9]


@pytest.mark.parametrize("seed", range(20))
def test_far_outliers_are_never_selected_nor_weighted(seed):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(1, 4))
    n = 4 * f + 3 + int(rng.integers(0, 6))
    updates = rng.normal(size=(n, 100))
    outliers = rng.choice(n, size=f, replace=False)
    updates[outliers] *= 1e3

    selection = bulyan(updates, f)

    assert not set(selection.selected.tolist()) & set(outliers.tolist())
    assert (selection.weights[outliers] == 0).all()
    assert Bulyan(num_malicious=f).rejected(selection, 3.0).tolist() == sorted(outliers.tolist())


@pytest.mark.parametrize("seed", range(10))
def test_weights_sum_to_one_and_vanish_outside_the_selection(seed):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(0, 4))
    n = 4 * f + 3 + int(rng.integers(0, 6))
    updates = rng.normal(size=(n, int(rng.integers(1, 50))))

    selection = bulyan(updates, f)
    step_one, _ = iterated_krum(pairwise_sq_distances(updates), f, n - 2 * f)

    assert selection.weights.sum() == pytest.approx(1.0)
    assert len(step_one) == n - 2 * f and set(selection.selected) <= set(step_one)
    assert selection.selected.tolist() == np.flatnonzero(selection.weights).tolist()
    assert (np.delete(selection.weights, step_one) == 0).all()


def test_a_clean_round_accuses_nobody():
    # Bulyan always leaves 2f rows out; rejecting them all would accuse honest nodes.
    updates = np.random.default_rng(3).normal(0.0, 0.01, size=(11, 40))
    rule = Bulyan(num_malicious=2)

    selection = rule(updates)

    assert len(selection.selected) == 7
    assert rule.rejected(selection, 3.0).tolist() == []


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("f", [0, 1, 2, 3])
def test_check_bulyan_accepts_4f_plus_3_and_refuses_one_fewer(f):
    n = 4 * f + 3
    message = (rf"Bulyan cannot tolerate f={f} malicious among n={n - 1} clients: "
               rf"it needs n >= 4f \+ 3 \(n >= {n}\)")

    check_bulyan(n, f)
    Bulyan(num_malicious=f).check(n)
    selection = bulyan(np.random.default_rng(f).normal(size=(n, 3)), f)

    assert selection.aggregate.shape == (3,)
    with pytest.raises(AggregatorError, match=message):
        check_bulyan(n - 1, f)
    with pytest.raises(AggregatorError, match=message):
        Bulyan(num_malicious=f).check(n - 1)
    with pytest.raises(AggregatorError, match=message):
        bulyan(np.zeros((n - 1, 3)), f)


@pytest.mark.parametrize(("f", "message"), [(-1, "num_malicious must be >= 0"),
                                            (1.5, "num_malicious must be an integer; got 1.5")])
def test_bad_num_malicious_is_refused_naming_it(f, message):
    with pytest.raises(AggregatorError, match=message):
        Bulyan(num_malicious=f)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_and_named(bad):
    updates = np.random.default_rng(4).normal(size=(7, 4))
    updates[[1, 5], [0, 2]] = bad

    with pytest.raises(NonFiniteUpdateError, match=r"rows \[1, 5\]"):
        bulyan(updates, num_malicious=1)


# --- the config picks it up from the registry --------------------------------------------


def experiment(num_nodes):
    return {"experiment": {"kind": "federated"}, "federation": {"num_nodes": num_nodes},
            "attack": {"name": "gaussian", "num_malicious": 2}, "aggregator": {"name": "bulyan", "assumed_malicious": 2}}


def test_an_experiment_names_bulyan_and_a_too_small_cohort_is_refused_at_parse_time():
    config = parse_experiment(experiment(11))

    assert config.aggregator.name == "bulyan"
    assert config.rule == Bulyan(num_malicious=2)
    refusal = r"aggregator.name = 'bulyan' with a cohort of 10 nodes .* n >= 4f \+ 3 \(n >= 11\)"
    with pytest.raises(ConfigError, match=refusal):
        parse_experiment(experiment(10))


def test_a_round_decided_with_bulyan_leaves_the_attacker_out():
    # 7 nodes, node 6 far away: deltas in, the same model as Bulyan on the weights themselves
    # (translation moves the median with the rows), to float32 round-off.
    rng = np.random.default_rng(5)
    global_weights = [rng.normal(size=shape).astype(np.float32) for shape in [(4, 3), (3,)]]
    updates = [[(w + rng.normal(scale=5.0 if node == 6 else 0.01, size=w.shape)).astype(np.float32)
                for w in global_weights] for node in range(7)]
    rule = Bulyan(num_malicious=1)

    decision = decide_round(rule, list(range(10, 17)), updates, global_weights, [1] * 7, 3.0)
    on_weights = rule(np.stack([flatten(u)[0] for u in updates]).astype(np.float64))

    assert 16 not in decision.selected and len(decision.selected) == 5
    assert decision.rejected == (16,)
    assert np.allclose(flatten(decision.new_weights)[0], on_weights.aggregate, rtol=0, atol=1e-6)


# --- agreement with Flower 1.41 ----------------------------------------------------------
# Flower's Bulyan.aggregate_train selects theta = n - 2f rows with select_multikrum(contents,
# f, theta) and aggregates them with aggregate_n_closest_weights(median, selected, beta).
# Differences from ours:
# - Selection: Flower's default is one-shot Multi-Krum (the theta lowest scores of one scoring);
#   the paper, and we, iterate Krum, re-scoring the remaining rows after each pick. On these
#   random cases the theta-sets agree in 17 of 50: all 13 cases with f = 0 (both take every
#   row) and 4 of the 37 with f >= 1. Where they differ, both sets drop every far outlier and
#   differ only in which honest rows they leave out. Iterating Flower's own select_multikrum with
#   m = 1 (Flower's Bulyan accepts such a selection_rule) reproduces our selection in 36 of 50;
#   the 14 others all have f = 1 or 2, where a pick with k = 1 neighbour ties the two mutually
#   nearest rows and Flower's argsort breaks the tie by position, we by distance.
# - Ties: a tied pick goes to the row with the smaller sum of squared distances to all
#   remaining rows (then the lowest index), so the order of the node ids does not matter;
#   per coordinate, to the lowest row index. Flower's argsort (Krum) and argpartition
#   (closest values) promise no order among ties.
# - dtype: Flower computes in the input dtype and its distances without centring; we compute
#   in float64 and cast the aggregate back. The cases here are float64.
# - Neither weights rows by num-examples. Flower returns None below 4f + 3; we raise.


@pytest.fixture(scope="module")
def flower():
    multikrum_module = pytest.importorskip("flwr.serverapp.strategy.multikrum")
    bulyan_module = pytest.importorskip("flwr.serverapp.strategy.bulyan")
    from flwr.app import ArrayRecord, RecordDict

    def rows_of(contents, picked):
        return [next(i for i, c in enumerate(contents) if c is p) for p in picked]

    def select(updates, f, m):
        contents = [RecordDict({"arrays": ArrayRecord([row.copy()])}) for row in updates]
        return sorted(rows_of(contents, multikrum_module.select_multikrum(contents, f, m)))

    def select_iterated(updates, f, m):
        contents = [RecordDict({"arrays": ArrayRecord([row.copy()])}) for row in updates]
        remaining, picked = list(contents), []
        for _ in range(m):
            (pick,) = multikrum_module.select_multikrum(remaining, f, 1)
            picked.append(pick)
            remaining = [c for c in remaining if c is not pick]
        return sorted(rows_of(contents, picked))

    def aggregate(updates, selected, beta):
        median = np.median(updates[selected], axis=0)
        rows = [[updates[i]] for i in selected]
        (layer,) = bulyan_module.aggregate_n_closest_weights([median], rows, beta)
        return layer

    return select, select_iterated, aggregate


def random_case(seed):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(0, 4))
    n = int(rng.integers(4 * f + 3, 4 * f + 13))
    d = int(rng.integers(1, 201))
    updates = rng.normal(loc=rng.normal(), scale=rng.uniform(0.01, 2), size=(n, d))
    outliers = rng.choice(n, size=f, replace=False) if seed % 3 == 0 else np.array([], int)
    updates[outliers] *= 1e3  # some cases with f far outliers
    return updates, f, set(outliers.tolist())


def close(theirs, ours):
    """Equal to float64 round-off (the largest difference seen here is 8.9e-16)."""
    return np.allclose(theirs, ours, rtol=1e-15, atol=1e-15)


def test_bulyan_agrees_with_flowers_where_their_selections_agree(flower):
    select, select_iterated, aggregate = flower
    same_as_multikrum, same_as_iterated = 0, 0

    for seed in range(50):
        updates, f, outliers = random_case(seed)
        n = len(updates)
        theta, beta = n - 2 * f, n - 4 * f
        ours = bulyan(updates, f)
        selected = iterated_krum(pairwise_sq_distances(updates), f, theta)[0].tolist()
        theirs = select(updates, f, theta)
        iterated = select_iterated(updates, f, theta)

        # Flower's coordinate-wise step on our selection: the same aggregate.
        assert close(aggregate(updates, selected, beta), ours.aggregate), seed
        if theirs == selected:
            same_as_multikrum += 1
            assert close(aggregate(updates, theirs, beta), ours.aggregate), seed
        else:
            assert not outliers & set(theirs) and not outliers & set(selected), seed
        if iterated == selected:
            same_as_iterated += 1
        else:  # one tie with k = 1, broken our way (by the distances) and Flower's (by argsort)
            assert len(set(iterated) ^ set(selected)) == 2 and f in (1, 2), seed

    assert same_as_multikrum == 17
    assert same_as_iterated == 36
