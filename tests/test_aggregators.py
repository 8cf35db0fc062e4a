"""Aggregation rules: hand-computed cases, properties, validation, and agreement with Flower."""

import numpy as np
import pytest

from bflsim.aggregators import (
    AGGREGATORS,
    AggregatorError,
    Krum,
    MultiKrum,
    NonFiniteUpdateError,
    RoundContext,
    fedavg,
    krum,
    krum_scores,
    median,
    multikrum,
    pairwise_sq_distances,
    trimmed_mean,
)

PARAMS = {"multikrum": {"num_selected": 2}, "trimmed_mean": {"trim_fraction": 0.2}}
NUM_CLIENTS = {"bulyan": 7}  # a rule's cohort for f = 1 where the tests' own is too small


def cohort(name, default):
    return max(default, NUM_CLIENTS.get(name, 0))


def rule(name, num_malicious=1, **params):
    return AGGREGATORS[name](num_malicious=num_malicious, **{**PARAMS.get(name, {}), **params})


def context(n, d):
    """A round context for the rules that need one (FLTrust's reference, FoolsGold's history)."""
    rng = np.random.default_rng(99)
    return RoundContext(server_round=1, seed=1, reference=rng.normal(size=d), history=rng.normal(size=(n, d)))


def run(name, updates, num_malicious=1, **params):
    return rule(name, num_malicious, **params)(updates, np.ones(len(updates)), context(*np.shape(updates)))


# --- hand-computed -----------------------------------------------------------------------


def test_pairwise_sq_distances_by_hand():
    updates = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])

    distances = pairwise_sq_distances(updates)

    assert distances.tolist() == [[0, 25, 100], [25, 0, 25], [100, 25, 0]]


def test_krum_scores_and_choice_by_hand():
    # n = 5, f = 1: each score sums the n - f - 2 = 2 smallest squared distances to others.
    # 0: {1, 4, 16, 400} -> 1 + 4 = 5      1: {1, 1, 9, 361} -> 2
    # 2: {4, 1, 4, 324} -> 5               4: {16, 9, 4, 256} -> 13
    # 20: {400, 361, 324, 256} -> 256 + 324 = 580
    updates = np.array([[0.0], [1.0], [2.0], [4.0], [20.0]])

    selection = krum(updates, num_malicious=1)

    assert selection.scores.tolist() == [5, 2, 5, 13, 580]
    assert selection.selected.tolist() == [1]
    assert selection.aggregate.tolist() == [1.0]
    assert selection.weights.tolist() == [0, 1, 0, 0, 0]


def test_multikrum_breaks_score_ties_by_lowest_index():
    # Same scores as above, [5, 2, 5, 13, 580]: the second pick is a tie between rows 0 and 2.
    updates = np.array([[0.0], [1.0], [2.0], [4.0], [20.0]])

    two = multikrum(updates, num_malicious=1, num_selected=2)
    three = multikrum(updates, num_malicious=1, num_selected=3)

    assert two.selected.tolist() == [0, 1]
    assert two.aggregate.tolist() == [0.5]
    assert three.selected.tolist() == [0, 1, 2]
    assert three.aggregate.tolist() == [1.0]


def test_krum_picks_lowest_index_when_all_honest_scores_tie():
    # Unit square plus an outlier, f = 1: every corner has two neighbours at distance 1,
    # so each corner scores 1 + 1 = 2; (5, 5) scores 32 + 41 = 73.
    updates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])

    selection = krum(updates, num_malicious=1)

    assert selection.scores.tolist() == [2, 2, 2, 2, 73]
    assert selection.selected.tolist() == [0]


def test_identical_updates_tie_and_go_to_the_lowest_indices():
    # 18 identical rows score exactly 0 each; two outliers lead. (n > 16 also exercises
    # numpy's unstable sort path, so this fails unless the tie-break is explicit.)
    updates = np.ones((20, 3))
    updates[:2] = [[50.0, 0, 0], [0, -50.0, 0]]

    one = krum(updates, num_malicious=2)
    five = multikrum(updates, num_malicious=2, num_selected=5)

    assert one.selected.tolist() == [2]
    assert five.selected.tolist() == [2, 3, 4, 5, 6]
    assert five.scores[2:].tolist() == [0.0] * 18


@pytest.mark.parametrize("seed", range(6))
def test_bitwise_identical_updates_score_exactly_alike(seed):
    # Random rows where the matrix product rounds differently in different rows: before
    # duplicates were computed once, about half of such draws broke the exact tie.
    rng = np.random.default_rng(seed)
    updates = (rng.normal(size=(23, 1500)) * 1e3).astype(np.float32)
    updates[17] = updates[4]
    updates[21] = updates[4]

    distances = pairwise_sq_distances(updates)
    scores = krum_scores(updates, num_malicious=2)

    assert distances[4, 17] == distances[17, 21] == 0.0
    assert distances[4].tolist() == distances[17].tolist() == distances[21].tolist()
    assert scores[4] == scores[17] == scores[21]
    assert np.array_equal(distances, distances.T)


def test_median_by_hand_even_n():
    # Columns sorted: [1, 2, 3, 100] -> (2 + 3) / 2;  [-5, 10, 20, 30] -> 15;  [4, 5, 5, 6] -> 5.
    # Middle values come from rows {1, 2}, {0, 1}, {0, 3}: counts 2, 2, 1, 1 over d = 3.
    updates = np.array([[1.0, 10, 5], [2, 20, 4], [3, 30, 6], [100, -5, 5]])

    selection = median(updates)

    assert selection.aggregate.tolist() == [2.5, 15.0, 5.0]
    assert selection.scores == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert selection.weights == pytest.approx([1 / 3, 1 / 3, 1 / 6, 1 / 6])
    assert selection.selected.tolist() == [0, 1, 2, 3]


def test_median_by_hand_odd_n_leaves_out_the_row_never_in_the_middle():
    # Columns: [1, 2, 9] -> 2 (row 1);  [0, 7, 8] -> 7 (row 1);  [5, 3, 4] -> 4 (row 2).
    updates = np.array([[1.0, 0, 5], [2, 7, 3], [9, 8, 4]])

    selection = median(updates)

    assert selection.aggregate.tolist() == [2.0, 7.0, 4.0]
    assert selection.selected.tolist() == [1, 2]
    assert selection.scores == pytest.approx([0, 2 / 3, 1 / 3])


def test_trimmed_mean_by_hand():
    # n = 5, beta = 0.2: k = int(0.2 * 5) = 1 value dropped at each end of every column.
    # Column 0: [1, 2, 3, 4, 100] keeps rows 1, 2, 3 -> 3.
    # Column 1: [0, 1, 2, 3, -50] keeps rows 0, 1, 2 -> 1.
    updates = np.array([[1.0, 0], [2, 1], [3, 2], [4, 3], [100, -50]])

    selection = trimmed_mean(updates, trim_fraction=0.2)

    assert selection.aggregate.tolist() == [3.0, 1.0]
    assert selection.selected.tolist() == [0, 1, 2, 3]
    assert selection.scores.tolist() == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert selection.weights == pytest.approx([1 / 6, 1 / 3, 1 / 3, 1 / 6, 0])


def test_fedavg_by_hand():
    # Weights 1/4, 1/4, 1/2: (0 + 2/4 + 4/2, 0 + 4/4 + 8/2) = (2.5, 5).
    updates = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]], dtype=np.float32)

    selection = fedavg(updates, num_samples=[1, 1, 2])

    assert selection.aggregate.tolist() == [2.5, 5.0]
    assert selection.aggregate.dtype == np.float32
    assert selection.scores.tolist() == [0.25, 0.25, 0.5]
    assert selection.selected.tolist() == [0, 1, 2]


def test_fedavg_leaves_out_rows_with_no_samples():
    updates = np.array([[1.0], [100.0], [3.0]])

    selection = fedavg(updates, num_samples=[5, 0, 5])

    assert selection.selected.tolist() == [0, 2]
    assert selection.aggregate.tolist() == [2.0]


# --- properties --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_krum_returns_exactly_one_of_its_input_rows(seed, dtype):
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(9, 50)).astype(dtype)

    selection = krum(updates, num_malicious=2)

    (index,) = selection.selected
    assert selection.aggregate.dtype == dtype
    assert np.array_equal(selection.aggregate, updates[index])
    assert selection.scores[index] == selection.scores.min()


def test_multikrum_with_no_malicious_and_all_selected_is_the_mean():
    updates = np.random.default_rng(1).normal(size=(6, 40))

    selection = multikrum(updates, num_malicious=0, num_selected=6)

    assert np.allclose(selection.aggregate, updates.mean(axis=0), rtol=0, atol=1e-12)
    assert selection.selected.tolist() == list(range(6))


def test_multikrum_defaults_to_n_minus_f():
    updates = np.random.default_rng(2).normal(size=(7, 10))

    selection = MultiKrum(num_malicious=2)(updates)

    assert len(selection.selected) == 5


@pytest.mark.parametrize("seed", range(20))
def test_krum_never_selects_a_far_outlier(seed):
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(10, 200))
    outliers = rng.choice(10, size=2, replace=False)
    updates[outliers] = 1e3 * rng.normal(size=(2, 200))

    chosen = krum(updates, num_malicious=2).selected
    kept = multikrum(updates, num_malicious=2).selected

    assert not set(chosen) & set(outliers)
    assert not set(kept) & set(outliers)


def test_median_is_permutation_invariant():
    rng = np.random.default_rng(3)
    updates = rng.normal(size=(7, 30))
    permutation = rng.permutation(7)

    original = median(updates)
    permuted = median(updates[permutation])

    assert np.array_equal(original.aggregate, permuted.aggregate)
    assert np.array_equal(original.scores[permutation], permuted.scores)


@pytest.mark.parametrize("n", [4, 5])
def test_median_agrees_with_numpy(n):
    updates = np.random.default_rng(n).normal(size=(n, 100)).astype(np.float32)

    selection = median(updates)

    assert np.array_equal(selection.aggregate, np.median(updates, axis=0))


def test_trimmed_mean_with_zero_trim_is_the_mean():
    updates = np.random.default_rng(4).normal(size=(5, 30))

    selection = trimmed_mean(updates, trim_fraction=0.0)

    assert np.allclose(selection.aggregate, updates.mean(axis=0), rtol=0, atol=1e-12)
    assert selection.scores.tolist() == [1.0] * 5


def test_fedavg_with_equal_counts_is_the_mean():
    updates = np.random.default_rng(5).normal(size=(4, 30))

    selection = fedavg(updates, num_samples=[7, 7, 7, 7])

    assert np.allclose(selection.aggregate, updates.mean(axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_weights_sum_to_one_and_mark_the_selected_rows(name):
    n = cohort(name, 6)
    updates = np.random.default_rng(6).normal(size=(n, 25))

    selection = run(name, updates)

    assert selection.weights.sum() == pytest.approx(1.0)
    assert selection.selected.tolist() == np.flatnonzero(selection.weights).tolist()
    assert selection.selected.dtype == np.int64
    assert selection.scores.shape == (n,)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_selection_is_read_only(name):
    selection = run(name, np.random.default_rng(7).normal(size=(cohort(name, 5), 3)))

    with pytest.raises(ValueError, match="read-only"):
        selection.aggregate[0] = 1.0


def test_integer_updates_aggregate_as_float64():
    selection = krum(np.array([[0, 0], [1, 0], [0, 1], [1, 1], [9, 9]]), num_malicious=1)

    assert selection.aggregate.dtype == np.float64


def test_distances_stay_accurate_with_a_large_common_offset():
    # Full weights share a large common part; the plain Gram trick loses ~1e-4 here.
    rng = np.random.default_rng(8)
    updates = 1e3 + rng.normal(scale=1e-3, size=(6, 1000))
    exact = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=-1)

    distances = pairwise_sq_distances(updates)

    assert np.allclose(distances, exact, rtol=1e-9, atol=0)


def test_distances_of_honest_rows_ignore_a_huge_outlier():
    rng = np.random.default_rng(9)
    updates = rng.normal(scale=1e-2, size=(7, 500))
    updates[3] *= 1e9
    exact = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=-1)

    distances = pairwise_sq_distances(updates)

    assert np.allclose(distances, exact, rtol=1e-9, atol=0)
    assert (distances >= 0).all() and np.array_equal(distances, distances.T)


def direct_sq_distances(updates):
    """||x_i - x_j||^2 summed pairwise in float64, no Gram trick: the reference."""
    x = np.asarray(updates, dtype=np.float64)
    return np.array([[np.sum((a - b) ** 2) for b in x] for a in x])


@pytest.mark.parametrize("seed", range(12))
def test_distances_match_the_direct_pairwise_sums(seed):
    # A shared component (small or 1e3 times the spread), float32 or float64, and up to
    # (n - 1) // 2 outliers: sign-flipped copies (same norms as the honest rows) or 1e6 times
    # larger. Honest pairs must be as accurate as float64 allows; pairs with an outlier have
    # rounding of order eps times their distance to the bulk.
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 16)), int(rng.integers(1, 5000))
    shared = rng.normal(size=d) * (1e3 if seed % 2 else 1.0)
    updates = shared + rng.normal(scale=rng.uniform(1e-3, 1), size=(n, d))
    num_outliers = int(rng.integers(0, (n - 1) // 2 + 1))
    updates[:num_outliers] *= -1.0 if seed % 3 == 0 else 1e6
    updates = updates.astype(np.float32 if seed % 4 < 2 else np.float64)
    exact = direct_sq_distances(updates)

    distances = pairwise_sq_distances(updates)

    honest = slice(num_outliers, n)
    assert np.allclose(distances[honest, honest], exact[honest, honest], rtol=1e-10, atol=0)
    assert np.allclose(distances, exact, rtol=1e-9, atol=1e-10 * exact.max())
    assert np.array_equal(distances, distances.T) and (np.diag(distances) == 0).all()


def test_a_row_central_on_a_column_sample_but_far_off_does_not_spoil_the_distances():
    # The centre is first chosen on a sample of evenly spaced columns (every third one at
    # d = 6144). Row 0 sits at the honest mean on those and 1e4 away on all the others; taken
    # as the centre, it would leave honest distances ~10% off (eps * 1e4^2 * d against
    # honest distances of ~1e-2), so the full distances must show it is far and recentre.
    rng = np.random.default_rng(11)
    updates = 1e3 + rng.normal(scale=1e-3, size=(9, 6144))
    updates[0] = updates[1:].mean(axis=0)
    hidden = np.ones(6144, dtype=bool)
    hidden[::3] = False
    updates[0, hidden] += 1e4
    exact = direct_sq_distances(updates)

    distances = pairwise_sq_distances(updates)

    assert np.allclose(distances, exact, rtol=1e-9, atol=0)


def stack_with_copies(seed, copies, far):
    """n = 45..60 random rows (BLAS's tiles then end at different places, and rows in the
    last tile round differently) where ``copies`` rows, one of them in the last eight, repeat
    one update; ``far``: that update lies 1e3 times the spread away from the others."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(45, 61)), int(rng.integers(1000, 5000))
    updates = rng.normal(loc=rng.normal(size=d), size=(n, d)) * (1e3 if seed % 2 else 1.0)
    rows = np.sort(np.append(rng.choice(n - 8, size=copies - 1, replace=False), n - 1 - seed % 8))
    updates[rows] = updates[rows[0]] + (1e3 * rng.normal(size=d) if far else 0.0)
    return updates.astype(np.float32 if seed % 4 < 2 else np.float64), rows


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize(("copies", "far"), [(2, False), (2, True), (3, False)])
def test_equal_rows_tie_exactly(seed, copies, far):
    # One update sent by two or three clients (colluding attackers far from the others, or
    # honest clients with the same data): exactly 0 apart and exactly the same distances to
    # every other row, so exactly the same Krum scores. Without tying them, 22 of these 48
    # draws leave equal rows a few ulps apart here (OpenBLAS 0.3.31, AVX-512).
    updates, rows = stack_with_copies(seed, copies, far)
    n = len(updates)

    distances = pairwise_sq_distances(updates)
    scores = krum_scores(updates, num_malicious=(n - 3) // 2)

    assert (distances[np.ix_(rows, rows)] == 0.0).all()
    for row in rows[1:]:
        assert distances[row].tolist() == distances[rows[0]].tolist()
        assert distances[:, row].tolist() == distances[:, rows[0]].tolist()
        assert scores[row] == scores[rows[0]]
    others = np.setdiff1d(np.arange(n), rows)
    assert (distances[np.ix_(rows, others)] > 0).all()  # nothing else collapsed


def test_three_equal_rows_central_go_to_the_first():
    # Rows 2, 26 and 49 are one update, the mean of the others, sent three times: each has
    # two neighbours at distance 0 and the others nearer than they are to each other, so the
    # three score lowest, exactly alike, and the tie-break by lowest index picks row 2.
    rng = np.random.default_rng(13)
    updates = (5.0 + rng.normal(size=(52, 2500))).astype(np.float32)
    updates[2] = updates.mean(axis=0)
    updates[[26, 49]] = updates[2]

    selection = krum(updates, num_malicious=2)

    assert selection.scores[2] == selection.scores[26] == selection.scores[49]
    assert selection.selected.tolist() == [2]


def test_rows_differing_only_in_the_sign_of_zeros_are_equal():
    updates = np.array([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [1.0, -0.0, 2.0], [0.0, 4.0, 4.0]])

    distances = pairwise_sq_distances(updates)

    assert distances[0, 2] == 0.0
    assert distances[0].tolist() == distances[2].tolist()


def test_finite_rows_whose_sum_overflows_are_accepted():
    # float32 rows near its largest value: their sums overflow, their entries are finite.
    updates = np.array([[3e38, 3e38], [3e38, 2e38], [2e38, 3e38], [-3e38, -3e38], [3e38, 1e38]])
    updates = updates.astype(np.float32)

    selection = krum(updates, num_malicious=1)

    assert selection.selected.tolist() == [1]
    assert np.array_equal(median(updates).aggregate, np.median(updates, axis=0))


def test_distances_that_overflow_float64_are_refused():
    updates = np.array([[1e200, 0.0], [-1e200, 0.0], [0.0, 1e200]])
    with pytest.raises(AggregatorError, match="overflow float64"):
        pairwise_sq_distances(updates)


def test_pairwise_sq_distances_names_the_non_finite_rows():
    updates = np.random.default_rng(14).normal(size=(6, 5000))
    updates[2, 4001] = np.nan  # off the column sample the centre is chosen on
    updates[5, 17] = -np.inf
    with pytest.raises(NonFiniteUpdateError) as refused:
        pairwise_sq_distances(updates)
    assert refused.value.rows == (2, 5)
    with pytest.raises(NonFiniteUpdateError):
        pairwise_sq_distances([[np.inf, 1.0]])


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_and_named(name, bad):
    updates = np.random.default_rng(10).normal(size=(cohort(name, 6), 4))
    updates[2, 1] = bad
    updates[4, 3] = bad

    with pytest.raises(NonFiniteUpdateError, match=r"rows \[2, 4\]") as caught:
        run(name, updates)
    assert caught.value.rows == (2, 4)


KRUM_7_3 = r"Krum cannot tolerate f=3 malicious among n=7 clients: it needs n > 2f \+ 2 \(n >= 9\)"


@pytest.mark.parametrize(
    ("name", "n", "f", "params", "message"),
    [
        ("krum", 7, 3, {}, KRUM_7_3),
        ("multikrum", 8, 3, {}, r"Multi-Krum cannot tolerate f=3 .* n=8 .*\(n >= 9\)"),
        ("multikrum", 10, 3, {"num_selected": 8}, r"select m=8 of n=10 .* \(m <= 7\)"),
        ("fedavg", 0, 0, {}, r"FedAvg needs at least one client; got n=0"),
        ("median", 3, 4, {}, r"between 0 and num_clients=3; got num_malicious=4"),
    ],
)
def test_check_names_the_impossible_cohort(name, n, f, params, message):
    with pytest.raises(AggregatorError, match=message):
        AGGREGATORS[name](num_malicious=f, **params).check(n)


@pytest.mark.parametrize(
    ("name", "f", "params", "message"),
    [
        ("multikrum", 3, {"num_selected": 0}, r"num_selected must be >= 1"),
        ("trimmed_mean", 0, {"trim_fraction": 0.5}, r"trim_fraction \(beta\) must be in \[0, 0.5\)"),
        ("trimmed_mean", 0, {"trim_fraction": None}, r"got trim_fraction=None"),
        ("trimmed_mean", 0, {"trim_fraction": -0.1}, r"got trim_fraction=-0.1"),
        ("krum", -1, {}, r"num_malicious must be >= 0"),
        ("krum", 1.5, {}, r"num_malicious must be an integer; got 1.5"),
    ],
)
def test_a_rule_refuses_bad_parameters_naming_them(name, f, params, message):
    with pytest.raises(AggregatorError, match=message):
        AGGREGATORS[name](num_malicious=f, **params)


def test_krum_takes_no_num_selected():
    with pytest.raises(TypeError):
        Krum(num_malicious=1, num_selected=3)


@pytest.mark.parametrize(
    ("name", "n", "f", "params"),
    [("krum", 9, 3, {}), ("multikrum", 9, 3, {"num_selected": 6}), ("median", 2, 1, {}),
     ("trimmed_mean", 3, 1, {"trim_fraction": 0.49}), ("fedavg", 1, 0, {})],
)
def test_check_accepts_the_boundary_settings(name, n, f, params):
    AGGREGATORS[name](num_malicious=f, **params).check(n)

    selection = run(name, np.random.default_rng(11).normal(size=(n, 3)), num_malicious=f, **params)
    assert selection.aggregate.shape == (3,)


def test_every_rule_has_its_own_name_label_and_reference():
    assert all(AGGREGATORS[name].name == name for name in AGGREGATORS)
    assert len({r.label for r in AGGREGATORS.values()}) == len(AGGREGATORS)
    assert all(r.reference for r in AGGREGATORS.values())


def test_krum_refuses_too_few_clients_at_aggregation_time_too():
    updates = np.zeros((7, 3))

    with pytest.raises(AggregatorError, match=r"needs n > 2f \+ 2 \(n >= 9\)"):
        krum(updates, num_malicious=3)


@pytest.mark.parametrize(
    ("num_samples", "message"),
    [([1, 2], "3 finite counts >= 0"), ([1, -1, 2], "finite counts"),
     ([1, np.nan, 2], "finite counts"), ([0, 0, 0], "positive total")],
)
def test_fedavg_refuses_bad_sample_counts(num_samples, message):
    with pytest.raises(AggregatorError, match=message):
        fedavg(np.zeros((3, 2)), num_samples)


@pytest.mark.parametrize("shape", [(5,), (0, 3), (3, 0), (2, 2, 2)])
def test_updates_must_be_a_non_empty_matrix(shape):
    with pytest.raises(AggregatorError, match=r"\(n, d\) matrix"):
        median(np.zeros(shape))


# --- agreement with Flower 1.41 ----------------------------------------------------------
# Flower's select_multikrum scores each row by the sum of squared distances to its
# max(1, n - f - 2) nearest others, the same definition as ours where ours is defined
# (n > 2f + 2; Flower does not check). Differences left aside here: Flower averages the
# selected rows weighted by num-examples (ours: plain mean, as Blanchard et al.); Flower
# computes distances in the input dtype without centring; its argsort is not stable, so it
# does not promise lowest-index tie-breaking. Random data has no ties, so picks must agree.


@pytest.fixture(scope="module")
def flower():
    multikrum_module = pytest.importorskip("flwr.serverapp.strategy.multikrum")
    trimmed_module = pytest.importorskip("flwr.serverapp.strategy.fedtrimmedavg")
    from flwr.app import ArrayRecord, RecordDict

    def select(updates, f, m):
        contents = [RecordDict({"arrays": ArrayRecord([row.copy()])}) for row in updates]
        picked = multikrum_module.select_multikrum(contents, f, m)
        return sorted(next(i for i, c in enumerate(contents) if c is p) for p in picked)

    def distances(updates):
        return multikrum_module.compute_distances([ArrayRecord([row.copy()]) for row in updates])

    return select, distances, trimmed_module.trim_mean


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 21))
    f = int(rng.integers(0, (n - 3) // 2 + 1))
    d = int(rng.integers(1, 300))
    updates = rng.normal(loc=rng.normal(), scale=rng.uniform(0.01, 2), size=(n, d))
    if seed % 3 == 0 and f > 0:  # some cases with f far outliers
        updates[rng.choice(n, size=f, replace=False)] *= 1e3
    return rng, updates, f


@pytest.mark.parametrize("seed", range(50))
def test_krum_and_multikrum_pick_what_flower_picks(flower, seed):
    select, distances, _ = flower
    rng, updates, f = random_case(seed)
    n = len(updates)
    m = int(rng.integers(1, n - f + 1))

    assert krum(updates, f).selected.tolist() == select(updates, f, 1)
    assert multikrum(updates, f, m).selected.tolist() == select(updates, f, m)
    # Flower's uncentred Gram trick leaves rounding of order eps * max ||x||^2 (its diagonal
    # is not exactly 0), hence the absolute tolerance scaled by the largest distance.
    theirs = distances(updates)
    assert np.allclose(pairwise_sq_distances(updates), theirs, rtol=1e-9, atol=1e-9 * theirs.max())


@pytest.mark.parametrize("seed", range(10))
def test_trimmed_mean_and_median_agree_with_flower(flower, seed):
    _, _, flower_trim_mean = flower
    rng, updates, _ = random_case(seed)
    beta = float(rng.uniform(0, 0.5))

    assert np.allclose(trimmed_mean(updates, beta).aggregate, flower_trim_mean(updates, beta))
    assert np.array_equal(median(updates).aggregate, np.median(updates, axis=0))


def test_rejected_accuses_only_outliers_among_krums_top_f():
    rng = np.random.default_rng(3)
    honest = rng.normal(0.0, 0.01, size=(8, 40))
    with_attackers = np.vstack([honest, rng.normal(0.0, 1.0, size=(2, 40))])
    krum_rule, multikrum_rule = Krum(num_malicious=2), MultiKrum(num_malicious=2)

    attacked = krum_rule(with_attackers)
    clean = krum_rule(honest)

    assert krum_rule.rejected(attacked, 3.0).tolist() == [8, 9]
    assert multikrum_rule.rejected(multikrum_rule(with_attackers), 3.0).tolist() == [8, 9]
    assert krum_rule.rejected(clean, 3.0).tolist() == []  # no attacker: nobody accused
    assert krum_rule.rejected(clean, 1.0).size == 2  # the plain top-f rule accuses two honest rows
    fedavg_rule = AGGREGATORS["fedavg"]()
    weighted = fedavg_rule(honest, np.array([1, 1, 1, 1, 1, 1, 1, 0]))
    assert fedavg_rule.rejected(weighted, 3.0).tolist() == [7]


def test_v1_distances_are_kept_for_old_runs_and_agree_with_v2():
    from bflsim.aggregators.base import distances_version, sq_distances

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(9, 500)) + 40.0).astype(np.float32)
    x[4] = x[1]  # equal rows tie exactly in both versions
    now = sq_distances(x)
    with distances_version("v1"):
        then = sq_distances(x)
    assert sq_distances(x) is not then and np.array_equal(sq_distances(x), now)  # the block restores v2
    np.testing.assert_allclose(then, now, rtol=1e-9, atol=1e-9)
    assert then[1, 4] == 0.0 and np.array_equal(then[1], then[4])
    with pytest.raises(ValueError, match=r"distances version must be one of \['v1', 'v2'\]; got 'v3'"), \
            distances_version("v3"):
        pass
