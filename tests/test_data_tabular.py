"""Generic labelled CSV: columns named in the config, clear errors, binary mode."""

import numpy as np
import pytest

from bflsim.config import DataConfig
from bflsim.data import DataError, prepare_data


def _write(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def flows_csv(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        label = ("benign", "scan", "flood")[i % 3]
        proto = ("tcp", "udp")[i % 2]
        rows.append(f"{i},{proto},{rng.integers(0, 100)},{rng.random():.3f},host{i},{label}")
    return _write(tmp_path / "flows.csv", "\ufeffid,proto,bytes,rate,host,kind", rows)


def _config(path, **overrides):
    settings = {"dataset": "csv", "path": str(path), "label_column": "kind",
                "categorical_columns": ("proto",), "drop_columns": ("id", "host"),
                "normal_label": "benign"}
    return DataConfig(**(settings | overrides))


def test_csv_with_categorical_and_dropped_columns(flows_csv):
    data = prepare_data(_config(flows_csv))

    assert data.feature_names == ("proto=tcp", "proto=udp", "bytes", "rate")
    assert data.class_names == ("benign", "flood", "scan") and data.normal_class == 0
    assert data.dataset == "csv" and data.sources[0][0] == str(flows_csv)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 60


def test_relative_path_is_found_in_the_data_dir(flows_csv):
    data = prepare_data(_config("flows.csv"), data_dir=flows_csv.parent)

    assert data.num_features == 4


def test_missing_label_column_names_file_column_and_columns_present(flows_csv):
    with pytest.raises(DataError) as caught:
        prepare_data(_config(flows_csv, label_column="attack_cat"))

    message = str(caught.value)
    assert str(flows_csv) in message and "'attack_cat'" in message
    assert "['id', 'proto', 'bytes', 'rate', 'host', 'kind']" in message


def test_text_in_a_numeric_column_is_named(flows_csv):
    with pytest.raises(DataError, match=r"column 'host' holds text such as 'host0'"):
        prepare_data(_config(flows_csv, drop_columns=("id",)))


def test_class_too_small_to_stratify_is_named_with_its_count(tmp_path):
    rows = [f"{i},{('a', 'b')[i % 2]}" for i in range(20)] + ["1,rare", "2,rare"]
    path = _write(tmp_path / "tiny.csv", "x,label", rows)
    config = DataConfig(dataset="csv", path=str(path), label_column="label")

    with pytest.raises(DataError) as caught:
        prepare_data(config)

    message = str(caught.value)
    assert "class 'rare' has 2 rows" in message and "needs at least 3" in message
    assert "label_mode = 'binary'" in message


def test_binary_mode_needs_a_normal_label_that_occurs(flows_csv):
    with pytest.raises(DataError, match=r"set data\.normal_label"):
        prepare_data(_config(flows_csv, normal_label=None, label_mode="binary"))
    with pytest.raises(DataError, match=r"normal label 'normal' does not occur.*'benign'"):
        prepare_data(_config(flows_csv, normal_label="normal"))

    data = prepare_data(_config(flows_csv, label_mode="binary"))

    assert data.class_names == ("normal", "attack")
    assert np.bincount(np.concatenate([data.y_train, data.y_val, data.y_test])).tolist() == [20, 40]


def test_missing_csv_file_names_both_places_looked(tmp_path):
    with pytest.raises(DataError, match=r"data.path 'nope.csv' not found.*nope.csv"):
        prepare_data(_config("nope.csv"), data_dir=tmp_path)


def test_unsw_nb15_loads_as_a_generic_csv():
    config = DataConfig(
        dataset="csv", path="unsw-nb15/UNSW_NB15_training-set.csv.gz", label_column="attack_cat",
        categorical_columns=("proto", "service", "state"), drop_columns=("id", "label"),
        normal_label="Normal", sample_fraction=0.2,
    )

    data = prepare_data(config)  # relative to $BFLSIM_DATA_DIR, verified against the registry

    assert data.num_classes == 10 and data.class_names[0] == "Normal"
    assert data.sources[0][1] == "734fe6642edf758f7c94d7d9149426b49d202fe8e7bf0bef47392489c3c0a559"


# --- missing, NaN and infinite values: refused unless data.impute = "median" -------------


@pytest.fixture
def holes_csv(tmp_path):
    rows = [f"{i},{'nan' if i == 4 else ('inf' if i == 9 else '' if i == 20 else i * 0.5)},"
            f"{('benign', 'scan', 'flood')[i % 3]}" for i in range(60)]
    return _write(tmp_path / "holes.csv", "count,rate,kind", rows)


def test_nan_inf_and_empty_values_are_refused_naming_file_column_count_and_first_line(holes_csv):
    with pytest.raises(DataError) as caught:
        prepare_data(DataConfig(dataset="csv", path=str(holes_csv), label_column="kind"))

    message = str(caught.value)
    assert str(holes_csv) in message and "column 'rate'" in message
    assert "holds 3 missing, NaN or infinite values (first at line 6)" in message  # row 4, after the header
    assert "data.impute = 'median'" in message and "data.drop_columns" in message


def test_impute_median_fills_them_and_records_the_counts(holes_csv):
    data = prepare_data(DataConfig(dataset="csv", path=str(holes_csv), label_column="kind", impute="median"))

    described = data.describe()["imputed"]
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()
    assert described["values"] == 3
    assert sum(columns.get("rate", 0) for columns in described["by_split"].values()) == 3
    assert all(set(columns) == {"rate"} for columns in described["by_split"].values())


def test_clean_data_records_no_imputation_unless_asked(flows_csv):
    assert "imputed" not in prepare_data(_config(flows_csv)).describe()
    assert prepare_data(_config(flows_csv, impute="median")).describe()["imputed"]["values"] == 0


# --- CSV without a header row ---------------------------------------------------------------


def _headerless(flows_csv, tmp_path):
    lines = flows_csv.read_text(encoding="utf-8-sig").splitlines()[1:]
    return _write(tmp_path / "flows_noheader.csv", lines[0], lines[1:])


COLUMNS = ("id", "proto", "bytes", "rate", "host", "kind")


def test_a_csv_without_header_is_read_with_named_columns(flows_csv, tmp_path):
    path = _headerless(flows_csv, tmp_path)

    data = prepare_data(_config(path, header=False, columns=COLUMNS))

    with_header = prepare_data(_config(flows_csv))
    assert data.feature_names == with_header.feature_names
    assert np.array_equal(data.x_train, with_header.x_train) and np.array_equal(data.y_test, with_header.y_test)


@pytest.mark.parametrize(
    ("columns", "message"),
    [(COLUMNS[:5], r"the first row has 6 fields but data.columns names 5 columns"),
     (("id", "proto", "bytes", "rate", "host", "label"), r"no column 'kind' \(from data.label_column\).*data.columns")],
)
def test_named_columns_that_do_not_fit_the_file_are_refused(flows_csv, tmp_path, columns, message):
    with pytest.raises(DataError, match=message):
        prepare_data(_config(_headerless(flows_csv, tmp_path), header=False, columns=columns))


def test_header_false_on_a_file_with_a_header_is_named(flows_csv, tmp_path):
    path = _write(tmp_path / "plain.csv", ",".join(COLUMNS), flows_csv.read_text().splitlines()[1:])

    with pytest.raises(DataError, match="the first row repeats data.columns, so the file has a header row"):
        prepare_data(_config(path, header=False, columns=COLUMNS))
