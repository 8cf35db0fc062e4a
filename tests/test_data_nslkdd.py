"""NSL-KDD on the real files: class counts, 122 features, splits, no scaler leakage.

Reads $BFLSIM_DATA_DIR (CI: ../shared/datasets); a missing file fails with the loader's
message naming the path, the variable and `bflsim data --download nsl-kdd`.
"""

import numpy as np
import pytest

from bflsim.config import DataConfig
from bflsim.data import DataError, prepare_data
from bflsim.data.nslkdd import ATTACK_CATEGORY, categorize, load_nslkdd, read_nslkdd
from bflsim.data.registry import resolve_data_dir

FIVE_CLASSES = ("Normal", "DoS", "Probe", "R2L", "U2R")
TEST_ONLY_ATTACKS = (
    "apache2", "mailbomb", "processtable", "udpstorm", "worm", "mscan", "saint", "httptunnel",
    "named", "sendmail", "snmpgetattack", "snmpguess", "xlock", "xsnoop", "ps", "sqlattack",
    "xterm",
)


@pytest.fixture(scope="module")
def stratified():
    return prepare_data(DataConfig(dataset="nsl-kdd"))


@pytest.fixture(scope="module")
def kdd_test():
    return prepare_data(DataConfig(dataset="nsl-kdd", split="kdd-test"))


def _counts(labels: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(labels, return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


def test_kddtrain_and_kddtest_have_the_published_class_counts():
    train = load_nslkdd(resolve_data_dir(), "train")
    test = load_nslkdd(resolve_data_dir(), "test")

    assert _counts(train.labels) == {"Normal": 67343, "DoS": 45927, "Probe": 11656, "R2L": 995,
                                     "U2R": 52}
    assert _counts(test.labels) == {"Normal": 9711, "DoS": 7460, "Probe": 2421, "R2L": 2885,
                                    "U2R": 67}
    assert train.features.shape == (125973, 41)
    assert "difficulty" not in train.features.columns


def test_every_attack_name_including_test_only_ones_has_a_class():
    assert set(TEST_ONLY_ATTACKS) <= set(ATTACK_CATEGORY)
    assert len(ATTACK_CATEGORY) == 40  # normal + 39 attack names
    assert set(ATTACK_CATEGORY.values()) == set(FIVE_CLASSES)
    assert categorize(np.array(["xterm", "normal", "snmpguess", "mscan", "worm"])).tolist() == [
        "U2R", "Normal", "R2L", "Probe", "DoS"]


def test_unknown_label_names_the_label_and_file(tmp_path):
    row = "0,tcp,http,SF,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,1,1,1,0,0,0,0,0,0,0"
    path = tmp_path / "KDDTrain+.txt"
    path.write_text(f"{row},normal,21\n{row},teleport,7\n")

    with pytest.raises(DataError) as caught:
        categorize(read_nslkdd(path)["label"].to_numpy(), source=str(path))

    assert "'teleport'" in str(caught.value) and str(path) in str(caught.value)


def test_short_rows_are_refused(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("0,tcp,http,SF,1,1\n")

    with pytest.raises(DataError, match="fewer than 43"):
        read_nslkdd(path)


def test_stratified_split_has_122_features_and_70_15_15_proportions(stratified):
    rows = np.array([len(stratified.y_train), len(stratified.y_val), len(stratified.y_test)])
    per_class = np.stack([np.bincount(y, minlength=5) for y in
                          (stratified.y_train, stratified.y_val, stratified.y_test)])

    assert stratified.num_features == 122
    assert stratified.feature_names[:4] == ("duration", "protocol_type=icmp", "protocol_type=tcp",
                                            "protocol_type=udp")
    assert stratified.class_names == FIVE_CLASSES and stratified.normal_class == 0
    assert rows.sum() == 125973
    np.testing.assert_allclose(rows / rows.sum(), [0.70, 0.15, 0.15], atol=1e-3)
    np.testing.assert_allclose(per_class / per_class.sum(axis=0),
                               np.tile([[0.70], [0.15], [0.15]], 5), atol=0.02)
    assert stratified.x_train.dtype == np.float32 and stratified.y_train.dtype == np.int64


def test_scaler_sees_the_training_split_only(kdd_test):
    numeric = [i for i, name in enumerate(kdd_test.feature_names) if "=" not in name]

    assert kdd_test.x_train.min() == 0.0 and kdd_test.x_train.max() == 1.0
    assert kdd_test.x_test[:, numeric].max() > 1.0  # KDDTest+ exceeds the training range
    assert np.isfinite(kdd_test.x_test).all()
    # num_outbound_cmds is constant zero: scaled to 0, not NaN
    constant = kdd_test.feature_names.index("num_outbound_cmds")
    assert not kdd_test.x_train[:, constant].any()


def test_kdd_test_protocol_tests_on_kddtest_plus(kdd_test):
    test_counts = np.bincount(kdd_test.y_test, minlength=5).tolist()
    train_rows = len(kdd_test.y_train) + len(kdd_test.y_val)

    assert test_counts == [9711, 7460, 2421, 2885, 67]
    assert train_rows == 125973
    assert len(kdd_test.y_val) == pytest.approx(0.15 * 125973, abs=3)
    assert [p.rsplit("/", 1)[-1] for p, _ in kdd_test.sources] == ["KDDTrain+.txt.gz",
                                                                  "KDDTest+.txt.gz"]
    assert kdd_test.num_features == 122


def test_binary_mode_is_normal_versus_attack():
    data = prepare_data(DataConfig(dataset="nsl-kdd", label_mode="binary", sample_fraction=0.2))
    all_labels = np.concatenate([data.y_train, data.y_val, data.y_test])

    assert data.class_names == ("normal", "attack") and data.normal_class == 0
    assert np.bincount(all_labels).tolist() == [13469, 11726]  # 20 % of 67,343 / 58,630


def test_subsample_keeps_every_class():
    data = prepare_data(DataConfig(dataset="nsl-kdd", sample_fraction=0.01, seed=3))

    for y in (data.y_train, data.y_val, data.y_test):
        assert set(np.unique(y)) == {0, 1, 2, 3, 4}
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == pytest.approx(1260, abs=5)
