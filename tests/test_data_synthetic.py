"""The synthetic IoT-traffic generator: fast, deterministic, learnable but not trivial."""

import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from bflsim.config import DataConfig, SyntheticConfig
from bflsim.data import DataError, generate_synthetic, prepare_data


def test_default_table_shape_classes_and_speed():
    start = time.perf_counter()
    table = generate_synthetic(SyntheticConfig())
    seconds = time.perf_counter() - start

    names, counts = np.unique(table.labels, return_counts=True)
    assert seconds < 0.5
    assert table.features.shape == (6000, 26)
    assert list(table.features.columns[:3]) == ["protocol", "service", "duration"]
    assert dict(zip(names, counts, strict=True)) == {
        "normal": 3000, "DoS": 750, "Probe": 750, "BruteForce": 750, "Botnet": 750}
    assert (table.features.select_dtypes("number") >= 0).all().all()


def test_same_seed_same_table_other_seed_other_table():
    first = generate_synthetic(SyntheticConfig(seed=11))
    again = generate_synthetic(SyntheticConfig(seed=11))
    other = generate_synthetic(SyntheticConfig(seed=12))

    assert first.features.equals(again.features) and np.array_equal(first.labels, again.labels)
    assert not first.features.equals(other.features)


def test_config_shapes_the_table():
    config = SyntheticConfig(num_samples=1000, num_numeric=30, attack_classes=("Mirai", "Scan"),
                             normal_fraction=0.6)

    table = generate_synthetic(config)

    assert table.features.shape == (1000, 32)
    assert "aux_0" in table.features.columns
    assert sorted(set(table.labels)) == ["Mirai", "Scan", "normal"]
    assert (table.labels == "normal").sum() == 600


def test_classes_are_learnable_but_not_trivially_separable():
    data = prepare_data(DataConfig())

    linear = LogisticRegression(max_iter=2000).fit(data.x_train, data.y_train)
    tree = DecisionTreeClassifier(random_state=0).fit(data.x_train, data.y_train)

    assert 0.85 < linear.score(data.x_test, data.y_test) < 0.99
    assert tree.score(data.x_test, data.y_test) < 0.95
    assert data.num_features == 24 + 3 + 12  # numeric + protocol + service one-hot


@pytest.mark.parametrize("overrides, key", [
    ({"attack_classes": ()}, "data.synthetic.attack_classes"),
    ({"attack_classes": ("DoS", "normal")}, "data.synthetic.attack_classes"),
    ({"num_numeric": 1}, "data.synthetic.num_numeric"),
    ({"normal_fraction": 1.0}, "data.synthetic.normal_fraction"),
    ({"num_samples": 30}, "data.synthetic.num_samples"),
])
def test_impossible_settings_name_the_key(overrides, key):
    with pytest.raises(DataError, match=key):
        generate_synthetic(SyntheticConfig(**overrides))
