"""UNSW-NB15 as a dataset of its own: the registered partition (real file, $BFLSIM_DATA_DIR)."""

import numpy as np
import pytest

from bflsim.config import DataConfig
from bflsim.data import prepare_data
from bflsim.data.registry import resolve_data_dir
from bflsim.data.unswnb15 import CATEGORICAL, load_unswnb15

# SOURCE.md's verified distribution of the 82,332 flows
COUNTS = {"Normal": 37_000, "Generic": 18_871, "Exploits": 11_132, "Fuzzers": 6_062, "DoS": 4_089,
          "Reconnaissance": 3_496, "Analysis": 677, "Backdoor": 583, "Shellcode": 378, "Worms": 44}


@pytest.fixture(scope="module")
def table():
    return load_unswnb15(DataConfig(dataset="unsw-nb15"), resolve_data_dir())


def test_the_partition_has_its_ten_classes_and_42_features(table):
    names, counts = np.unique(table.labels, return_counts=True)

    assert dict(zip(names, counts.tolist(), strict=True)) == COUNTS
    assert table.features.shape == (82_332, 42)
    assert "id" not in table.features and "label" not in table.features and "attack_cat" not in table.features
    assert set(CATEGORICAL) <= set(table.features.columns) and table.normal_label == "Normal"
    assert table.sources[0][1] == "734fe6642edf758f7c94d7d9149426b49d202fe8e7bf0bef47392489c3c0a559"


def test_binary_mode_is_the_files_own_normal_against_attack_label():
    multi = prepare_data(DataConfig(dataset="unsw-nb15", sample_fraction=0.1))
    binary = prepare_data(DataConfig(dataset="unsw-nb15", label_mode="binary", sample_fraction=0.1))

    assert multi.num_classes == 10 and binary.num_classes == 2
    assert binary.class_names == ("normal", "attack") and binary.normal_class == 0
    rows = sum(len(y) for y in (binary.y_train, binary.y_val, binary.y_test))
    attacks = sum(int((y == 1).sum()) for y in (binary.y_train, binary.y_val, binary.y_test))
    assert attacks / rows == pytest.approx(45_332 / 82_332, abs=0.002)  # stratified 10% keeps the share
    assert min(multi.x_train.shape[1], binary.x_train.shape[1]) > 42  # proto, service, state one-hot (vocabularies from each sample)
