"""Dataset records: the catalogue, check_data_config, and the "official" test split.

The NSL-KDD arrays are pinned to those of the code before the records existed; real files
come from $BFLSIM_DATA_DIR (CI: ../shared/datasets).
"""

import dataclasses
import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from bflsim.config import DataConfig, SyntheticConfig
from bflsim.data import (
    DATASET_FILES,
    DATASETS,
    FILE_SETS,
    DataError,
    Dataset,
    PreparedData,
    check_data_config,
    prepare_data,
    resolve_data_dir,
)
from bflsim.data.nslkdd import NSL_KDD, load_kdd_train

HEARTBLEED = "cic-ids2017/improved_rnd_5000/Heartbleed_11.csv"
UNKNOWN_DATASET = (
    "data.dataset = 'kdd99' is not one of ['synthetic', 'nsl-kdd', 'cic-ids2017', 'unsw-nb15', 'csv']"
)
CSV_SETTINGS = {"path": "flows.csv", "label_column": "label"}


def _official_message(dataset: str) -> str:
    return (
        f"data.split = 'official' needs a dataset with an official test split; "
        f"data.dataset = '{dataset}' has none (datasets with one: ['nsl-kdd']). "
        f"Use data.split = 'stratified'"
    )


def _fingerprint(data: PreparedData) -> str:
    """sha256 over name, dtype, shape and bytes of the six arrays, in split order."""
    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array = np.ascontiguousarray(getattr(data, name))
        digest.update(name.encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# Computed with the code before the dataset records (commit b011df2), split = "kdd-test".
KDD_TEST_FINGERPRINT = "5741dbfeef158b34cec04570e42eeb6f5e9a380510edc0c33d27aeb4bf67c8f8"


@pytest.fixture(scope="module")
def official() -> PreparedData:
    return prepare_data(DataConfig(dataset="nsl-kdd", split="official"))


# --- the catalogue ---------------------------------------------------------------------


def test_one_record_per_loadable_dataset_with_distinct_labels():
    records = list(DATASETS.values())

    assert list(DATASETS) == ["synthetic", "nsl-kdd", "cic-ids2017", "unsw-nb15", "csv"]
    assert [r.name for r in records] == list(DATASETS)
    assert all(isinstance(r, Dataset) for r in records)
    assert len({r.label for r in records}) == len(records)


def test_every_record_file_is_registered_and_file_sets_cover_the_registry():
    record_files = [f for r in DATASETS.values() for f in r.files]
    set_files = [f for files in FILE_SETS.values() for f in files]

    assert all(DATASET_FILES[f.relpath] is f for f in record_files)
    assert all(f.dataset == r.name for r in DATASETS.values() for f in r.files)
    assert list(FILE_SETS) == ["nsl-kdd", "cic-ids2017", "unsw-nb15"]
    assert FILE_SETS["nsl-kdd"] == NSL_KDD.files and len(NSL_KDD.files) == 4
    assert len(FILE_SETS["cic-ids2017"]) == 16 and len(FILE_SETS["unsw-nb15"]) == 1
    assert [f.relpath for f in set_files] == list(DATASET_FILES)  # each file in one set


def test_only_nsl_kdd_has_an_official_test_split():
    having = [r.name for r in DATASETS.values() if r.has_official_test]

    assert having == ["nsl-kdd"]
    assert NSL_KDD.official_protocol == "KDDTrain+ / KDDTest+"
    assert all(r.official_protocol == "" for r in DATASETS.values() if not r.has_official_test)


def test_a_record_with_a_protocol_but_no_test_loader_is_refused():
    with pytest.raises(ValueError, match="official_protocol must be set exactly when"):
        Dataset("toy", "Toy", load=load_kdd_train, official_protocol="train / test")


# --- check_data_config: names the key, reads nothing -------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        DataConfig(),
        DataConfig(dataset="nsl-kdd"),
        DataConfig(dataset="nsl-kdd", split="official"),
        DataConfig(dataset="nsl-kdd", split="kdd-test"),  # legacy name of "official"
        DataConfig(dataset="cic-ids2017"),
        DataConfig(dataset="csv", **CSV_SETTINGS),
    ],
    ids=["synthetic", "nsl-kdd", "nsl-kdd-official", "nsl-kdd-legacy", "cic-ids2017", "csv"],
)
def test_check_accepts_every_dataset_without_reading_files(config, tmp_path):
    no_data = dataclasses.replace(config, data_dir=str(tmp_path / "empty"))

    assert check_data_config(no_data) is None


def test_check_rejects_an_unknown_dataset_naming_the_choices():
    with pytest.raises(DataError) as caught:
        check_data_config(DataConfig(dataset="kdd99"))

    assert str(caught.value) == UNKNOWN_DATASET


@pytest.mark.parametrize(
    "config",
    [
        DataConfig(dataset="cic-ids2017", split="official"),
        DataConfig(dataset="synthetic", split="official"),
        DataConfig(dataset="csv", split="official", **CSV_SETTINGS),
    ],
    ids=lambda config: config.dataset,
)
def test_check_rejects_official_split_without_an_official_test_set(config):
    with pytest.raises(DataError) as caught:
        check_data_config(config)

    assert str(caught.value) == _official_message(config.dataset)


def test_check_rejects_an_unknown_split():
    config = DataConfig(dataset="nsl-kdd")
    object.__setattr__(config, "split", "holdout")  # DataConfig does not check its Literal

    with pytest.raises(DataError) as caught:
        check_data_config(config)

    assert str(caught.value) == "data.split = 'holdout' is not one of ['stratified', 'official']"


def test_check_runs_each_dataset_own_settings_check():
    csv = DataConfig(dataset="csv", **CSV_SETTINGS)
    object.__setattr__(csv, "label_column", None)  # today DataConfig refuses this itself
    synthetic = DataConfig(synthetic=SyntheticConfig(num_numeric=1))

    with pytest.raises(DataError) as csv_error:
        check_data_config(csv)
    with pytest.raises(DataError) as synthetic_error:
        check_data_config(synthetic)

    assert str(csv_error.value) == "data.dataset = 'csv' needs data.path and data.label_column"
    assert str(synthetic_error.value) == "data.synthetic.num_numeric must be >= 2; got 1"


# --- prepare_data goes through the records -------------------------------------------------


def test_prepare_refuses_before_reading_anything(tmp_path):
    empty = tmp_path / "empty"  # a read would fail with "missing data file" instead

    with pytest.raises(DataError) as unknown:
        prepare_data(DataConfig(dataset="kdd99"), data_dir=empty)
    with pytest.raises(DataError) as unofficial:
        prepare_data(DataConfig(dataset="cic-ids2017", split="official"), data_dir=empty)

    assert str(unknown.value) == UNKNOWN_DATASET
    assert str(unofficial.value) == _official_message("cic-ids2017")


def test_official_split_on_nsl_kdd_is_kddtrain_then_kddtest_as_before(official):
    files = [Path(path).name for path, _ in official.sources]

    assert files[0].startswith("KDDTrain+.txt") and files[1].startswith("KDDTest+.txt")
    assert [len(official.y_train), len(official.y_val), len(official.y_test)] == [
        107078, 18895, 22544]  # 125973 KDDTrain+ rows = 85 % + 15 %; all of KDDTest+
    assert official.num_features == 122
    assert _fingerprint(official) == KDD_TEST_FINGERPRINT


def test_legacy_kdd_test_split_gives_the_same_arrays(official):
    legacy = prepare_data(DataConfig(dataset="nsl-kdd", split="kdd-test"))

    assert _fingerprint(legacy) == _fingerprint(official)
    assert legacy.sources == official.sources


# --- registered files reached through data.path are verified -------------------------------


def _tampered_copy(data_dir: Path, relpath: str, target_dir: Path) -> Path:
    target = target_dir / relpath
    target.parent.mkdir(parents=True)
    with gzip.open(data_dir / (relpath + ".gz"), "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    content = target.read_bytes()
    target.write_bytes(content.replace(b"119302728", b"119302729", 1))  # a flow duration
    return target


@pytest.mark.parametrize(
    "settings",
    [
        {"dataset": "cic-ids2017"},
        {"dataset": "csv", "label_column": "Label",
         "drop_columns": ("Flow ID", "Src IP", "Dst IP", "Timestamp")},
    ],
    ids=["cic-ids2017", "csv"],
)
def test_a_tampered_registered_file_named_by_path_is_a_checksum_mismatch(settings, tmp_path):
    copy = _tampered_copy(resolve_data_dir(), HEARTBLEED, tmp_path)
    config = DataConfig(path=HEARTBLEED, **settings)

    with pytest.raises(DataError) as caught:
        prepare_data(config, data_dir=tmp_path)

    message = str(caught.value)
    assert str(copy) in message and "checksum mismatch" in message
    assert DATASET_FILES[HEARTBLEED].sha256 in message
