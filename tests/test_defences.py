"""The literature's defences (issue 11): norm bounding, centered clipping, FLTrust, FLAME, DnC,
FoolsGold. Hand-computed fixtures on tiny matrices, the property each paper states, a
cross-check with Flower's clipping, and refusals naming the parameter or the missing context."""

import math

import numpy as np
import pytest
from flwr.supercore.differential_privacy import compute_clip_model_update

from bflsim.aggregators import (
    AGGREGATORS,
    AggregatorError,
    CenteredClipping,
    DnC,
    Flame,
    FLTrust,
    FoolsGold,
    NormBounding,
    RoundContext,
    centered_clipping,
    decide_round,
    dnc,
    flame,
    fltrust,
    foolsgold,
    norm_bounding,
)
from bflsim.aggregators.dnc import top_projections
from bflsim.config import parse_experiment

# --- norm bounding ---------------------------------------------------------------------


def test_norm_bounding_by_hand():
    # norms 5, 1, 10; clipped to 2: [1.2, 1.6], [0, 1], [1.2, 1.6]; sample weights 1/4, 1/2, 1/4
    updates = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])

    selection = norm_bounding(updates, [1, 2, 1], max_norm=2.0)

    np.testing.assert_allclose(selection.aggregate, [0.6, 1.3], rtol=1e-12)
    assert selection.scores.tolist() == [5.0, 1.0, 10.0]
    assert selection.weights.tolist() == [0.25, 0.5, 0.25]
    # unset: the round's median norm (5), so [3, 4] passes and [6, 8] halves
    np.testing.assert_allclose(NormBounding()(updates).aggregate, [2.0, 3.0], rtol=1e-12)
    assert NormBounding().rejected(selection, 3.0).tolist() == []


def test_norm_bounding_equals_flowers_clipping_then_the_weighted_mean():
    rng = np.random.default_rng(4)
    global_weights = [rng.normal(size=(5, 4)), rng.normal(size=4)]
    deltas = rng.normal(size=(6, 24)) * rng.uniform(0.1, 3.0, size=(6, 1))
    counts = np.array([3, 1, 4, 1, 5, 9])
    bound = 1.5

    clipped = []
    for delta in deltas:
        local = [global_weights[0] + delta[:20].reshape(5, 4), global_weights[1] + delta[20:]]
        compute_clip_model_update(local, global_weights, bound)  # local = global + clip(local - global)
        clipped.append(np.concatenate([(local[0] - global_weights[0]).ravel(), local[1] - global_weights[1]]))
    flower = (counts / counts.sum()) @ np.array(clipped)

    np.testing.assert_allclose(norm_bounding(deltas, counts, max_norm=bound).aggregate, flower, rtol=1e-12, atol=1e-14)
    assert (np.linalg.norm(deltas, axis=1) > bound).sum() >= 3  # the bound bites


# --- centered clipping -------------------------------------------------------------------


def test_centered_clipping_by_hand():
    # from 0 with tau = 1: [3, 4] (norm 5) becomes [0.6, 0.8], [0, 0.5] stays; v = their mean
    updates = np.array([[3.0, 4.0], [0.0, 0.5]])

    selection = centered_clipping(updates, tau=1.0, iterations=1)

    np.testing.assert_allclose(selection.aggregate, [0.3, 0.65], rtol=1e-12)
    np.testing.assert_allclose(selection.weights, [1 / 6, 5 / 6], rtol=1e-12)  # coefficients 0.2 / 2 and 1 / 2
    # from the previous aggregate [1, 0]: differences [2, 4] and [-1, 0.5] clipped to norm 1
    rule = CenteredClipping(tau=1.0)
    moved = rule(updates, context=RoundContext(previous=np.array([1.0, 0.0]))).aggregate
    expected = np.array([1.0, 0.0]) + (np.array([2.0, 4.0]) / math.sqrt(20) + np.array([-1.0, 0.5]) / math.sqrt(1.25)) / 2
    np.testing.assert_allclose(moved, expected, rtol=1e-12)
    assert rule.rejected(selection, 3.0).tolist() == []


def test_centered_clipping_reaches_its_fixed_point_and_is_the_mean_for_a_huge_tau():
    rng = np.random.default_rng(7)
    updates = np.vstack([rng.normal(size=(8, 5)), np.full((2, 5), 50.0)])
    tau = 1.0

    centre = centered_clipping(updates, tau=tau, iterations=2000).aggregate
    differences = updates - centre
    norms = np.linalg.norm(differences, axis=1, keepdims=True)
    residual = (differences * np.minimum(1.0, tau / norms)).sum(axis=0)

    assert np.linalg.norm(residual) < 1e-9
    assert np.linalg.norm(centre - updates[:8].mean(axis=0)) < np.linalg.norm(updates.mean(axis=0) - updates[:8].mean(axis=0)) / 5
    previous = rng.normal(size=5)
    mean = CenteredClipping(tau=1e9)(updates, context=RoundContext(previous=previous)).aggregate
    np.testing.assert_allclose(mean, updates.mean(axis=0), rtol=1e-12)


def test_clipping_rules_refuse_a_majority_of_attackers_where_it_would_steer_them():
    with pytest.raises(AggregatorError, match=r"Centered clipping cannot tolerate f=3 malicious among n=6 .*\(n >= 7\)"):
        CenteredClipping(num_malicious=3).check_cohort(6)
    with pytest.raises(AggregatorError, match=r"Norm bounding at the median norm cannot tolerate f=2 .* n=4.*set max_norm"):
        NormBounding(num_malicious=2).check(4)
    NormBounding(num_malicious=2, max_norm=1.0).check(4)  # a fixed bound holds whoever is the majority
    CenteredClipping(num_malicious=3).check(7)


def test_centered_clipping_runs_without_a_previous_aggregate():
    updates = np.array([[3.0, 4.0], [0.0, 0.5]])

    first_round = CenteredClipping(tau=1.0)(updates, context=RoundContext(server_round=1))

    np.testing.assert_allclose(first_round.aggregate, [0.3, 0.65], rtol=1e-12)
    with pytest.raises(AggregatorError, match=r"RoundContext.previous has shape \(3,\); expected \(2,\)"):
        CenteredClipping()(updates, context=RoundContext(previous=np.zeros(3)))


# --- FLTrust -----------------------------------------------------------------------------


def test_fltrust_by_hand():
    # g0 = [2, 0]: cosines 1/sqrt2, 0, -1, 1; rescaled to norm 2: [sqrt2, sqrt2] and [2, 0]
    updates = np.array([[1.0, 1.0], [0.0, 3.0], [-1.0, 0.0], [3.0, 0.0]])
    trust = np.array([1 / math.sqrt(2), 0.0, 0.0, 1.0])

    selection = fltrust(updates, np.array([2.0, 0.0]))

    np.testing.assert_allclose(selection.aggregate, np.array([3.0, 1.0]) / trust.sum(), rtol=1e-12)
    np.testing.assert_allclose(selection.scores, [1 / math.sqrt(2), 0.0, -1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(selection.weights, trust / trust.sum(), rtol=1e-12)
    assert FLTrust().rejected(selection, 3.0).tolist() == [1, 2]


def test_fltrust_ignores_rows_opposite_the_reference_and_gives_the_result_its_norm():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=30)
    direction = reference + rng.normal(scale=0.5, size=30)
    updates = np.vstack([np.outer([0.5, 2.0, 40.0], direction), np.outer([1.0, 1000.0], -reference)])
    rule = FLTrust()

    selection = rule(updates, context=RoundContext(reference=reference))

    assert selection.weights[3:].tolist() == [0.0, 0.0] and rule.rejected(selection, 3.0).tolist() == [3, 4]
    np.testing.assert_allclose(selection.weights[:3], [1 / 3] * 3, rtol=1e-12)  # one direction, one trust
    assert np.linalg.norm(selection.aggregate) == pytest.approx(np.linalg.norm(reference), rel=1e-12)
    mixed = rule(rng.normal(size=(6, 30)) + reference, context=RoundContext(reference=reference))
    assert np.linalg.norm(mixed.aggregate) <= np.linalg.norm(reference) * (1 + 1e-12)  # a mean of norm-||g0|| rows


def test_fltrust_trusting_nobody_keeps_the_global_model():
    reference = np.array([1.0, 0.0])

    selection = fltrust(np.array([[-1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), reference)

    assert selection.aggregate.tolist() == [0.0, 0.0] and selection.weights.tolist() == [0.0, 0.0, 0.0]
    assert selection.selected.tolist() == [] and FLTrust().rejected(selection, 3.0).tolist() == [0, 1, 2]


# --- FLAME -------------------------------------------------------------------------------


def test_flame_by_hand():
    # three rows point right, one left: the left one is noise; S = median norm of all four
    updates = np.array([[1.0, 0.0], [2.0, 0.1], [1.5, -0.1], [-5.0, 0.0]])
    norms = np.linalg.norm(updates, axis=1)
    bound = (norms[1] + norms[2]) / 2.0
    clipped = updates[:3] * np.minimum(1.0, bound / norms[:3])[:, None]

    selection = flame(updates, noise_lambda=0.0)

    assert selection.selected.tolist() == [0, 1, 2] and Flame().rejected(selection, 3.0).tolist() == [3]
    np.testing.assert_allclose(selection.aggregate, clipped.mean(axis=0), rtol=1e-12)
    assert selection.weights.tolist() == [1 / 3, 1 / 3, 1 / 3, 0.0]


def test_flame_rejects_a_far_group_of_less_than_half_and_adds_noise_of_the_stated_scale():
    rng = np.random.default_rng(3)
    d = 20000
    direction = rng.normal(size=d)
    honest = direction + 0.3 * rng.normal(size=(7, d))
    poisoned = -direction * 4 + 0.3 * rng.normal(size=(3, d))
    updates = np.vstack([honest, poisoned])
    rule = Flame(num_malicious=3, noise_lambda=0.01)
    context = RoundContext(server_round=4, seed=11)

    selection = rule(updates, context=context)
    noiseless = flame(updates, noise_lambda=0.0)

    kept = selection.selected.tolist()
    assert set(rule.rejected(selection, 3.0)) >= {7, 8, 9} and len(kept) >= 6 and max(kept) < 7
    noise = selection.aggregate - noiseless.aggregate
    bound = float(np.median(np.linalg.norm(updates, axis=1)))
    assert np.std(noise) == pytest.approx(0.01 * bound, rel=0.03)
    assert abs(np.mean(noise)) < 0.05 * 0.01 * bound
    assert np.array_equal(rule(updates, context=context).aggregate, selection.aggregate)  # same seed, same noise
    assert not np.array_equal(rule(updates, context=RoundContext(server_round=5, seed=11)).aggregate,
                              selection.aggregate)


def test_flame_refuses_a_majority_of_attackers():
    with pytest.raises(AggregatorError, match=r"FLAME cannot tolerate f=5 malicious among n=10 .* \(n >= 11\)"):
        Flame(num_malicious=5).check(10)
    Flame(num_malicious=4).check(9)


# --- DnC ---------------------------------------------------------------------------------


def test_dnc_by_hand():
    # d = 1: centred at 3.25, the squared projections are 10.5625, 5.0625, 1.5625, 45.5625
    updates = np.array([[0.0], [1.0], [2.0], [10.0]])

    selection = dnc(updates, num_malicious=1, iterations=1)

    assert selection.selected.tolist() == [0, 1, 2] and selection.aggregate.tolist() == [1.0]
    median = (5.0625 + 10.5625) / 2
    np.testing.assert_allclose(selection.scores, np.array([10.5625, 5.0625, 1.5625, 45.5625]) / median, rtol=1e-12)
    rule = DnC(num_malicious=1)
    assert rule.rejected(selection, 3.0).tolist() == [3]  # 5.83 x the median
    assert rule.rejected(selection, 6.0).tolist() == []  # left out, not accused


def test_dnc_scores_are_the_squared_projections_on_the_top_singular_vector():
    centred = np.random.default_rng(9).normal(size=(7, 300))
    centred -= centred.mean(axis=0)

    top = np.linalg.svd(centred, full_matrices=False)[2][0]

    np.testing.assert_allclose(top_projections(centred), (centred @ top) ** 2, rtol=1e-9)


def test_dnc_removes_rows_shifted_along_one_direction():
    rng = np.random.default_rng(5)
    n, d = 12, 400
    updates = rng.normal(size=(n, d))
    direction = rng.normal(size=d)
    updates[[2, 7, 9]] += 3.0 * math.sqrt(d) * direction / np.linalg.norm(direction)  # 3x the noise's norm
    rule = DnC(num_malicious=3, iterations=5, subsample=100)
    context = RoundContext(server_round=2, seed=3)

    selection = rule(updates, context=context)

    assert selection.selected.tolist() == [i for i in range(n) if i not in (2, 7, 9)]
    assert rule.rejected(selection, 3.0).tolist() == [2, 7, 9]
    np.testing.assert_allclose(selection.aggregate, np.delete(updates, [2, 7, 9], axis=0).mean(axis=0), rtol=1e-12)
    assert np.array_equal(rule(updates, context=context).scores, selection.scores)  # the seed fixes the draws


def test_dnc_refuses_removing_every_row_and_a_filter_that_removes_none():
    with pytest.raises(AggregatorError, match=r"int\(filter_fraction \* f\) = int\(3.0 \* 2\) = 6 of n=6"):
        DnC(num_malicious=2, filter_fraction=3.0).check(6)
    with pytest.raises(AggregatorError, match=r"DnC cannot tolerate f=3 malicious among n=6 .* \(n >= 7\)"):
        DnC(num_malicious=3).check(6)
    with pytest.raises(AggregatorError, match=r"filter_fraction = 0.4 removes .* = 0 rows .* filter_fraction >= 0.5"):
        DnC(num_malicious=2, filter_fraction=0.4).check_cohort(10)
    DnC(num_malicious=0).check_cohort(10)  # no attacker assumed: the mean, by the defender's choice


# --- FoolsGold ---------------------------------------------------------------------------


def test_foolsgold_by_hand():
    # histories: cos(h0, h1) = 0.5, h2 orthogonal to both; alphas 0.5, 0.5, 1 -> /1 -> 0.99 for h2;
    # logit: ln(1) + 0.5 = 0.5 and ln(99) + 0.5 > 1 -> 1
    history = np.array([[1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0], [0.0, 0.0, 1.0]])
    updates = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [2.0, 2.0, 0.0]])

    selection = foolsgold(updates, history)

    np.testing.assert_allclose(selection.weights, [0.25, 0.25, 0.5], rtol=1e-12)
    np.testing.assert_allclose(selection.aggregate, [2.0, 2.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(selection.scores, [0.5, 0.5, 0.0], atol=1e-15)
    # kappa = 2 doubles the logits: 1, 1, 1
    np.testing.assert_allclose(foolsgold(updates, history, kappa=2.0).weights, [1 / 3] * 3, rtol=1e-12)


def test_foolsgold_pardons_a_node_that_resembles_a_sybil_pair():
    # A and B nearly identical (cos c_ab); C resembles B less (c_bc < c_ab): its similarity is pardoned
    # to c_bc * c_bc / c_ab
    a, b, c = np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.1, 0.0]), np.array([0.6, 0.8, 0.0])
    c_ab = b[0] / np.linalg.norm(b)
    c_bc = (b @ c) / np.linalg.norm(b)

    selection = foolsgold(np.eye(3), np.array([a, b, c]))

    np.testing.assert_allclose(selection.scores, [c_ab, c_ab, c_bc * c_bc / c_ab], rtol=1e-12)
    assert selection.weights.tolist() == [0.0, 0.0, 1.0] and FoolsGold().rejected(selection, 3.0).tolist() == [0, 1]


def test_foolsgold_silences_identical_sybils_and_keeps_diverse_honest_nodes():
    rng = np.random.default_rng(6)
    d = 200
    goal = rng.normal(size=d)
    sybils = goal + 1e-3 * rng.normal(size=(4, d))
    honest = rng.normal(size=(6, d))
    history = np.vstack([honest, sybils])
    updates = history / 5.0
    rule = FoolsGold()

    selection = rule(updates, context=RoundContext(history=history))

    assert selection.weights[6:].sum() < 1e-9 and rule.rejected(selection, 3.0).tolist() == [6, 7, 8, 9]
    assert (selection.weights[:6] > 0.1).all()
    np.testing.assert_allclose(selection.weights.sum(), 1.0)


def test_foolsgold_giving_nobody_weight_keeps_the_global_model():
    history = np.ones((3, 4))  # every node the same: all sybils

    selection = foolsgold(np.eye(3, 4), history)

    assert selection.aggregate.tolist() == [0.0] * 4 and selection.weights.tolist() == [0.0] * 3


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("norm_bounding", {"max_norm": 0.0}, r"^max_norm must be a positive finite number .*; got 0.0"),
        ("norm_bounding", {"max_norm": "1"}, r"^max_norm must be"),
        ("centered_clipping", {"tau": -1.0}, r"^tau must be a positive finite number .*; got -1.0"),
        ("centered_clipping", {"tau": math.inf}, r"^tau must be"),
        ("centered_clipping", {"iterations": 0}, r"^iterations must be >= 1; got 0"),
        ("flame", {"noise_lambda": -0.1}, r"^noise_lambda must be a finite number >= 0; got -0.1"),
        ("dnc", {"iterations": 0}, r"^iterations must be >= 1"),
        ("dnc", {"subsample": 1.5}, r"^subsample must be an integer; got 1.5"),
        ("dnc", {"filter_fraction": 0}, r"^filter_fraction must be a positive finite number"),
        ("foolsgold", {"kappa": 0}, r"^kappa must be a positive finite number .*; got 0"),
    ],
)
def test_each_refuses_bad_parameters_naming_them(name, params, message):
    with pytest.raises(AggregatorError, match=message):
        AGGREGATORS[name](**params)


def test_a_bad_parameter_in_an_experiment_file_names_its_key():
    with pytest.raises(Exception, match=r"aggregator.params.tau must be a positive finite number"):
        parse_experiment({"experiment": {"name": "c", "kind": "federated"}, "data": {"dataset": "synthetic"},
                          "aggregator": {"name": "centered_clipping", "params": {"tau": -2}}})


@pytest.mark.parametrize(("rule", "field"), [(FLTrust(), "reference"), (FoolsGold(), "history")])
def test_a_missing_or_misshapen_context_is_refused_naming_the_field(rule, field):
    updates = np.ones((3, 2))

    with pytest.raises(AggregatorError, match=rf"{rule.label} needs the round's {field} \(RoundContext.{field}\)"):
        rule(updates)
    with pytest.raises(AggregatorError, match=rf"RoundContext.{field} has shape \(4,\)"):
        rule(updates, context=RoundContext(**{field: np.zeros(4)}))
    bad = np.full((3, 2) if field == "history" else 2, np.nan)
    with pytest.raises(AggregatorError, match=rf"RoundContext.{field} holds NaN or inf"):
        rule(updates, context=RoundContext(**{field: bad}))


def test_each_decides_a_round_with_its_context():
    # seven honest nodes: a common direction plus their own (cosine ~0.5 between them);
    # two sybils far away, opposite the common direction, with identical histories
    rng = np.random.default_rng(8)
    global_weights = [np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    common = 0.01 * rng.normal(size=8)
    deltas = np.vstack([common + 0.01 * rng.normal(size=(7, 8)), np.tile(-1000.0 * common, (2, 1))])
    updates = [[d[:6].reshape(3, 2).astype(np.float32), d[6:].astype(np.float32)] for d in deltas]
    context = RoundContext(server_round=3, seed=2, reference=common, previous=common, history=3 * deltas)

    for name in ("norm_bounding", "centered_clipping", "fltrust", "flame", "dnc", "foolsgold"):
        rule = AGGREGATORS[name](num_malicious=2, **({"tau": 0.05} if name == "centered_clipping" else {}))
        decision = decide_round(rule, range(9), updates, global_weights, [10] * 9, 3.0, context=context)

        moved = max(float(np.abs(w).max()) for w in decision.new_weights)
        assert moved < 0.1, name  # the sybils at 1000x cannot drag the model
        clipping = name in ("norm_bounding", "centered_clipping")
        assert decision.rejected == () if clipping else {7, 8} <= set(decision.rejected), name
