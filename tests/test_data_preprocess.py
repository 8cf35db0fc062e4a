"""Stratified splits and the train-only preprocessing, on small hand-made tables."""

import numpy as np
import pandas as pd
import pytest

from bflsim.data import DataError
from bflsim.data.preprocess import fit_preprocessor
from bflsim.data.split import (
    allocate,
    order_classes,
    require_classes_present,
    split_stratified,
    subsample_stratified,
)

# --- splits ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_rows", [3, 4, 7, 11, 13, 100, 1001])
def test_allocation_sums_to_the_class_and_gives_every_split_a_row(num_rows):
    counts = allocate(num_rows, (0.70, 0.15, 0.15))

    assert counts.sum() == num_rows
    assert (counts >= 1).all()
    if num_rows >= 4:  # 0.15 * 4 rounds to 1 anyway: plain largest-remainder rounding
        assert np.abs(counts - np.array([0.70, 0.15, 0.15]) * num_rows).max() < 1


def test_allocation_of_eleven_rows_by_hand():
    # 7.7 / 1.65 / 1.65 -> floors 7 / 1 / 1, two leftovers to the largest remainders
    assert allocate(11, (0.70, 0.15, 0.15)).tolist() == [8, 2, 1]


def test_stratified_split_is_disjoint_covering_and_reproducible():
    labels = np.repeat(np.array(["a", "b", "c"]), [500, 80, 11])

    first = split_stratified(labels, (0.7, 0.15, 0.15), seed=5)
    again = split_stratified(labels, (0.7, 0.15, 0.15), seed=5)
    other = split_stratified(labels, (0.7, 0.15, 0.15), seed=6)

    joined = np.concatenate(first)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert [int((labels[part] == "c").sum()) for part in first] == [8, 2, 1]


def test_too_few_rows_of_a_class_names_class_and_count():
    labels = np.array(["a"] * 10 + ["spy"] * 2)

    with pytest.raises(DataError, match=r"class 'spy' has 2 rows in KDDTrain\+.*at least 3"):
        split_stratified(labels, (0.7, 0.15, 0.15), seed=0, source="KDDTrain+")


def test_a_split_without_a_class_is_named_with_the_split():
    splits = {"train": np.array([0, 1, 2]), "val": np.array([0, 1, 2]), "test": np.array([0, 1])}

    with pytest.raises(DataError) as caught:
        require_classes_present(("normal", "dos", "u2r"), splits)

    message = str(caught.value)
    assert "class 'u2r' has no rows in the test split" in message
    assert "train 1, val 1, test 0" in message and "label_mode = 'binary'" in message


def test_empty_validation_split_is_allowed():
    labels = np.repeat(np.array([0, 1]), [10, 2])
    train, val, test = split_stratified(labels, (0.8, 0.0, 0.2), seed=0)

    require_classes_present(("a", "b"), {"train": labels[train], "val": labels[val],
                                         "test": labels[test]})
    assert len(val) == 0 and len(train) + len(test) == 12


def test_subsample_is_stratified_and_keeps_small_classes():
    labels = np.repeat(np.array(["big", "small"]), [1000, 4])

    keep = subsample_stratified(labels, 0.1, seed=0, min_per_class=3)

    assert (labels[keep] == "big").sum() == 100 and (labels[keep] == "small").sum() == 3
    assert np.array_equal(keep, np.sort(keep))


def test_class_order_is_normal_first_then_sorted():
    labels = np.array(["Probe", "DoS", "Normal", "U2R", "R2L"])

    assert order_classes(labels, "Normal") == ("Normal", "DoS", "Probe", "R2L", "U2R")
    assert order_classes(labels, None) == ("DoS", "Normal", "Probe", "R2L", "U2R")


# --- preprocessing --------------------------------------------------------------------------


@pytest.fixture
def frames():
    train = pd.DataFrame({
        "size": [0.0, 5.0, 10.0, np.inf],
        "proto": ["tcp", "udp", "tcp", None],
        "constant": [3.0, 3.0, 3.0, 3.0],
        "rate": [1.0, np.nan, 3.0, 5.0],
    })
    test = pd.DataFrame({
        "size": [20.0, -np.inf],
        "proto": ["icmp", "udp"],
        "constant": [4.0, 3.0],
        "rate": [np.nan, 7.0],
    })
    return train, test


def test_minmax_is_fitted_on_train_and_unseen_category_is_all_zeros(frames):
    train, test = frames

    prep = fit_preprocessor(train, {"proto": None}, "minmax")
    x_train, x_test = prep.transform(train), prep.transform(test)

    assert prep.feature_names == ("size", "proto=<missing>", "proto=tcp", "proto=udp",
                                  "constant", "rate")
    # size: inf -> NaN -> train median of (0, 5, 10) = 5; range 0..10
    np.testing.assert_allclose(x_train[:, 0], [0.0, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(x_test[:, 0], [2.0, 0.5])  # outside [0, 1]: not refitted
    np.testing.assert_array_equal(x_test[0, 1:4], [0, 0, 0])  # icmp never seen in training
    np.testing.assert_array_equal(x_train[:, 4], 0.0)  # constant column: no NaN
    np.testing.assert_allclose(x_test[:, 4], [1.0, 0.0])
    np.testing.assert_allclose(x_train[:, 5], [0.0, 0.5, 0.5, 1.0])  # NaN -> median 3
    assert x_train.dtype == np.float32 and np.isfinite(x_test).all()


def test_standard_scaler_centres_train_columns(frames):
    train, _ = frames

    x_train = fit_preprocessor(train, {"proto": None}, "standard").transform(train)

    np.testing.assert_allclose(x_train[:, [0, 5]].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x_train[:, [0, 5]].std(axis=0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(x_train[:, 4], 0.0)


def test_known_vocabulary_fixes_the_one_hot_width(frames):
    train, test = frames

    prep = fit_preprocessor(train, {"proto": ("icmp", "tcp", "udp")}, "minmax")

    assert prep.feature_names[1:4] == ("proto=icmp", "proto=tcp", "proto=udp")
    np.testing.assert_array_equal(prep.transform(test)[:, 1:4], [[1, 0, 0], [0, 0, 1]])
