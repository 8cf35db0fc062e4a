"""Partitioners over K edge nodes: properties for every scheme, skew, refusals."""

import numpy as np
import pytest

from bflsim.data import DataError, label_counts, partition

LABELS = np.repeat(np.arange(5), [400, 300, 150, 100, 50])
SCHEMES = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.1}),
    ("dirichlet", {"alpha": 100.0}),
    ("shards", {"shards_per_node": 2}),
]


@pytest.mark.parametrize("scheme, options", SCHEMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_are_disjoint_cover_all_rows_and_are_non_empty(scheme, options, seed):
    parts = partition(LABELS, 10, scheme, seed=seed, **options)

    joined = np.concatenate(parts)
    assert len(parts) == 10
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))
    assert all(len(part) > 0 for part in parts)
    assert all(part.dtype == np.int64 and np.all(np.diff(part) > 0) for part in parts)


@pytest.mark.parametrize("scheme, options", SCHEMES)
def test_same_seed_same_parts_other_seed_other_parts(scheme, options):
    first = partition(LABELS, 8, scheme, seed=3, **options)
    again = partition(LABELS, 8, scheme, seed=3, **options)
    other = partition(LABELS, 8, scheme, seed=4, **options)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_parts_are_near_equal():
    sizes = [len(part) for part in partition(LABELS, 7, "iid", seed=0)]

    assert max(sizes) - min(sizes) <= 1


def _label_skew(parts) -> float:
    """Mean total-variation distance between each node's label mix and the global one."""
    counts = label_counts(LABELS, parts, num_classes=5)
    node_mix = counts / counts.sum(axis=1, keepdims=True)
    global_mix = np.bincount(LABELS) / len(LABELS)
    return float(0.5 * np.abs(node_mix - global_mix).sum(axis=1).mean())


def test_small_alpha_is_more_skewed_than_large_alpha():
    skew = {
        alpha: np.mean([_label_skew(partition(LABELS, 10, "dirichlet", alpha=alpha, seed=s))
                        for s in range(5)])
        for alpha in (0.05, 0.5, 100.0)
    }
    iid = np.mean([_label_skew(partition(LABELS, 10, "iid", seed=s)) for s in range(5)])

    assert skew[0.05] > skew[0.5] > skew[100.0]
    assert skew[0.05] > 0.5 and skew[100.0] < 0.1 and iid < 0.1


def test_shards_give_each_node_few_classes():
    parts = partition(LABELS, 10, "shards", shards_per_node=2, seed=0)
    classes_per_node = (label_counts(LABELS, parts, num_classes=5) > 0).sum(axis=1)

    assert classes_per_node.max() <= 4  # two shards, each spanning at most two classes
    assert [len(p) for p in parts] == [100] * 10


def test_dirichlet_with_tiny_data_and_alpha_still_fills_every_node():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])

    parts = partition(labels, 8, "dirichlet", alpha=0.01, seed=0)

    assert sorted(len(p) for p in parts) == [1] * 8


def test_string_labels_work():
    labels = np.array(["dos", "normal", "probe"] * 20)

    parts = partition(labels, 4, "shards", seed=0)

    assert sum(len(p) for p in parts) == 60


@pytest.mark.parametrize("kwargs, message", [
    ({"num_nodes": 0, "scheme": "iid"}, "num_nodes must be a positive integer"),
    ({"num_nodes": 1001, "scheme": "iid"}, "1001 nodes at least one of 1000 samples"),
    ({"num_nodes": 4, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
    ({"num_nodes": 4, "scheme": "shards", "shards_per_node": 0}, "shards_per_node must be >= 1"),
    ({"num_nodes": 600, "scheme": "shards", "shards_per_node": 2}, "1200 shards"),
    ({"num_nodes": 4, "scheme": "pathological"}, "unknown partition scheme 'pathological'"),
])
def test_impossible_requests_are_refused_with_a_sentence(kwargs, message):
    with pytest.raises(DataError, match=message):
        partition(LABELS, seed=0, **kwargs)
