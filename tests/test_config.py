"""The experiment config: parsing, validation and error messages that name the key."""

import pytest

from bflsim.config import ConfigError, load_experiment, parse_experiment, with_overrides
from bflsim.sweep import load_plan


def test_parse_fills_defaults_and_converts_lists_to_tuples():
    config = parse_experiment({
        "experiment": {"name": "t3"},
        "data": {"dataset": "nsl-kdd", "fractions": [0.7, 0.15, 0.15]},
        "models": {"names": ["dnn", "cnn_lstm"], "dnn": {"hidden_units": [32, 16]}},
    })

    assert config.name == "t3"
    assert config.data.fractions == (0.7, 0.15, 0.15)
    assert config.models.names == ("dnn", "cnn_lstm")
    assert config.models.dnn.hidden_units == (32, 16)
    assert config.train.epochs == 10


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"data": {"datset": "nsl-kdd"}}, "unknown key 'data.datset'"),
        ({"experiment": {"nmae": "x"}}, "unknown key 'nmae'"),
        ({"data": {"dataset": "kdd"}}, "data.dataset = 'kdd' is not one of"),
        ({"models": {"names": ["svm"]}}, "unknown model 'svm'"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"data": {"fractions": [0.7, 0.2, 0.2]}}, "must sum to 1"),
        ({"data": {"dataset": "synthetic", "split": "kdd-test"}}, "NSL-KDD protocol"),
        ({"data": {"dataset": "csv"}}, "needs data.path and data.label_column"),
        ({"models": {"cnn_lstm": {"lstm_units": 1.5}}}, "models.cnn_lstm.lstm_units must be an integer"),
    ],
)
def test_bad_settings_fail_with_a_sentence_naming_the_key(raw, fragment):
    with pytest.raises(ConfigError) as info:
        parse_experiment(raw)

    assert fragment in str(info.value)


def test_overrides_are_validated_again():
    config = parse_experiment({})

    changed = with_overrides(config, {"train.epochs": 2, "data.dataset": "nsl-kdd"})

    assert (changed.train.epochs, changed.data.dataset) == (2, "nsl-kdd")
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        with_overrides(config, {"train.epoch": 2})
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        with_overrides(config, {"train.batch_size": 0})


def test_load_experiment_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\ndataset = 'nsl-kdd'\nunknown = 1\n")

    with pytest.raises(ConfigError) as info:
        load_experiment(path)

    assert str(path) in str(info.value) and "data.unknown" in str(info.value)
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "missing.toml")


def test_every_experiment_file_in_the_repository_parses(experiments_dir):
    files = sorted(experiments_dir.glob("*.toml"))

    assert files, "experiments/ holds no experiment file"
    for path in files:
        plan = load_plan(path)
        assert plan.points and all(config.name for _, config in plan.points)
