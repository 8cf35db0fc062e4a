"""prepare_data end to end on the synthetic default: contract of PreparedData."""

import numpy as np
import pytest

from bflsim.config import DataConfig
from bflsim.data import DATA_DIR_ENV, DataError, PreparedData, prepare_data


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare_data(DataConfig())


def test_shapes_types_and_class_order(data):
    splits = [(data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)]

    assert data.dataset == "synthetic" and data.sources == ()
    assert data.class_names == ("normal", "Botnet", "BruteForce", "DoS", "Probe")
    assert data.normal_class == 0 and data.num_classes == 5
    for x, y in splits:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), data.num_features) == (len(y), len(data.feature_names))
        assert set(np.unique(y)) == set(range(data.num_classes))
    assert [len(y) for _, y in splits] == [4200, 902, 898]


def test_arrays_are_read_only(data):
    with pytest.raises(ValueError, match="read-only"):
        data.y_train[0] = 1
    flipped = data.y_train.copy()
    flipped[0] = 1  # a copy is the attacker's to change


def test_same_config_gives_identical_arrays_and_seed_changes_the_split(data):
    again = prepare_data(DataConfig())
    reseeded = prepare_data(DataConfig(seed=43))

    assert np.array_equal(again.x_train, data.x_train) and np.array_equal(again.y_test, data.y_test)
    assert not np.array_equal(reseeded.y_train, data.y_train)


def test_standard_scaler_and_binary_mode():
    data = prepare_data(DataConfig(scaler="standard", label_mode="binary"))

    assert data.class_names == ("normal", "attack")
    assert np.bincount(data.y_train).tolist() == [2100, 2100]
    numeric = [i for i, name in enumerate(data.feature_names) if "=" not in name]
    np.testing.assert_allclose(data.x_train[:, numeric].mean(axis=0), 0.0, atol=1e-5)


def test_data_dir_argument_wins_over_config_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    config = DataConfig(dataset="nsl-kdd", data_dir=str(tmp_path / "config"))

    with pytest.raises(DataError, match=str(tmp_path / "argument")):
        prepare_data(config, data_dir=tmp_path / "argument")
    with pytest.raises(DataError, match=str(tmp_path / "config")):
        prepare_data(config)
