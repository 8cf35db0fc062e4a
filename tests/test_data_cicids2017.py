"""CIC-IDS2017: the improved sample (real files) and the original MachineLearningCVE format.

Reads $BFLSIM_DATA_DIR (CI: ../shared/datasets); a missing file fails with the loader's
message. The original format is exercised with a few hand-written rows in tmp_path.
"""

import numpy as np
import pytest

from bflsim.config import DataConfig
from bflsim.data import DataError, prepare_data
from bflsim.data.cicids2017 import LABELS, load_cicids2017, normalise_label, read_cicids2017
from bflsim.data.registry import resolve_data_dir

# The header of the original MachineLearningCVE day files, spaces included; the second
# " Fwd Header Length" is the duplicate pandas reads as " Fwd Header Length.1".
ORIGINAL_HEADER = [
    " Destination Port", " Flow Duration", " Total Fwd Packets", " Total Backward Packets",
    "Total Length of Fwd Packets", " Total Length of Bwd Packets", " Fwd Packet Length Max",
    " Fwd Packet Length Min", " Fwd Packet Length Mean", " Fwd Packet Length Std",
    "Bwd Packet Length Max", " Bwd Packet Length Min", " Bwd Packet Length Mean",
    " Bwd Packet Length Std", "Flow Bytes/s", " Flow Packets/s", " Flow IAT Mean",
    " Flow IAT Std", " Flow IAT Max", " Flow IAT Min", "Fwd IAT Total", " Fwd IAT Mean",
    " Fwd IAT Std", " Fwd IAT Max", " Fwd IAT Min", "Bwd IAT Total", " Bwd IAT Mean",
    " Bwd IAT Std", " Bwd IAT Max", " Bwd IAT Min", "Fwd PSH Flags", " Bwd PSH Flags",
    " Fwd URG Flags", " Bwd URG Flags", " Fwd Header Length", " Bwd Header Length",
    "Fwd Packets/s", " Bwd Packets/s", " Min Packet Length", " Max Packet Length",
    " Packet Length Mean", " Packet Length Std", " Packet Length Variance", "FIN Flag Count",
    " SYN Flag Count", " RST Flag Count", " PSH Flag Count", " ACK Flag Count",
    " URG Flag Count", " CWE Flag Count", " ECE Flag Count", " Down/Up Ratio",
    " Average Packet Size", " Avg Fwd Segment Size", " Avg Bwd Segment Size",
    " Fwd Header Length", "Fwd Avg Bytes/Bulk", " Fwd Avg Packets/Bulk", " Fwd Avg Bulk Rate",
    " Bwd Avg Bytes/Bulk", " Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate", "Subflow Fwd Packets",
    " Subflow Fwd Bytes", " Subflow Bwd Packets", " Subflow Bwd Bytes", "Init_Win_bytes_forward",
    " Init_Win_bytes_backward", " act_data_pkt_fwd", " min_seg_size_forward", "Active Mean",
    " Active Std", " Active Max", " Active Min", "Idle Mean", " Idle Std", " Idle Max",
    " Idle Min", " Label",
]
# Labels as the original files spell them; 0x96 is the cp1252 en dash of the raw files.
ORIGINAL_LABELS = [
    b"BENIGN", b"BENIGN", b"BENIGN", b"BENIGN", b"Bot", b"PortScan", b"DoS slowloris",
    b"Web Attack \x96 Brute Force", "Web Attack \ufffd XSS".encode(),
    "Web Attack \u2013 Sql Injection".encode(),
]
IMPROVED_ONLY = {"Protocol", "Fwd RST Flags", "Bwd RST Flags", "ICMP Code", "ICMP Type",
                 "Total TCP Flow Time"}


@pytest.fixture(scope="module")
def sample():
    return load_cicids2017(resolve_data_dir())


@pytest.fixture
def original_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = [",".join(ORIGINAL_HEADER).encode()]
    flow_bytes = ORIGINAL_HEADER.index("Flow Bytes/s")
    for i, label in enumerate(ORIGINAL_LABELS):
        values = [str(v) for v in rng.integers(0, 1000, len(ORIGINAL_HEADER) - 1)]
        values[flow_bytes] = ("Infinity", "NaN", "12.5")[i % 3]
        lines.append(",".join(values).encode() + b"," + label)
    path = tmp_path / "Thursday-WorkingHours.pcap_ISCX.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_improved_sample_has_43419_rows_16_classes_and_83_features(sample):
    names, counts = np.unique(sample.labels, return_counts=True)

    assert len(sample.labels) == 43419
    assert tuple(names) == LABELS
    assert dict(zip(names, counts, strict=True))["Heartbleed"] == 11
    assert sample.features.shape[1] == 83
    assert {"Dst Port", "Protocol"} <= set(sample.features.columns)
    assert not {"id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp",
                "Attempted Category", "Label"} & set(sample.features.columns)
    assert len(sample.sources) == 16


def test_prepared_cic_is_finite_with_benign_first():
    data = prepare_data(DataConfig(dataset="cic-ids2017"))

    assert data.num_classes == 16 and data.class_names[0] == "BENIGN" and data.normal_class == 0
    assert data.class_names[1:] == tuple(sorted(LABELS[1:]))
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 43419
    splits = ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test))
    for x, y in splits:
        assert np.isfinite(x).all()
        assert set(np.unique(y)) == set(range(16))  # even Heartbleed (11 rows) is in every split


def test_original_format_maps_to_the_improved_schema(original_csv, sample):
    frame, labels = read_cicids2017([original_csv])
    improved = list(sample.features.columns)

    assert set(improved) - set(frame.columns) == IMPROVED_ONLY
    assert list(frame.columns) == [c for c in improved if c in set(frame.columns)]
    assert labels.tolist() == ["BENIGN"] * 4 + [
        "Botnet", "Portscan", "DoS Slowloris", "Web Attack - Brute Force", "Web Attack - XSS",
        "Web Attack - SQL Injection"]
    assert np.isinf(frame["Flow Bytes/s"]).sum() == 4 and frame["Flow Bytes/s"].isna().sum() == 3


def test_original_format_infinities_are_refused_unless_imputed(original_csv):
    config = DataConfig(dataset="cic-ids2017", path=str(original_csv), label_mode="binary",
                        fractions=(0.6, 0.2, 0.2))

    with pytest.raises(DataError, match=r"column 'Flow Bytes/s' holds 7 missing, NaN or infinite values"):
        prepare_data(config, data_dir=original_csv.parent)


def test_original_format_through_prepare_data_is_finite_with_impute(original_csv):
    config = DataConfig(dataset="cic-ids2017", path=str(original_csv), label_mode="binary",
                        fractions=(0.6, 0.2, 0.2), impute="median")

    data = prepare_data(config, data_dir=original_csv.parent)

    assert data.num_features == 77
    assert all(np.isfinite(x).all() for x in (data.x_train, data.x_val, data.x_test))
    assert data.sources[0][0] == str(original_csv)
    assert data.describe()["imputed"]["values"] >= 7  # Flow Bytes/s, and Flow Packets/s alike


@pytest.mark.parametrize("raw, expected", [
    ("Web Attack \ufffd Sql Injection", "Web Attack - SQL Injection"),
    ("DoS slowloris", "DoS Slowloris"),
    ("Infiltration - Portscan", "Infiltration - Portscan"),
    ("  BENIGN ", "BENIGN"),
    ("Bot", "Botnet"),
])
def test_labels_of_both_releases_normalise_to_one_vocabulary(raw, expected):
    assert normalise_label(raw) == expected


def test_unknown_cic_label_is_named(tmp_path):
    path = tmp_path / "flows.csv"
    path.write_text(" Destination Port, Label\n80,BENIGN\n443,DoS Hulk - Attempted\n")

    with pytest.raises(DataError) as caught:
        read_cicids2017([path])

    assert "'DoS Hulk - Attempted'" in str(caught.value) and str(path) in str(caught.value)
    assert "Attempted" in str(caught.value)


def test_file_without_label_column_lists_its_columns(tmp_path):
    path = tmp_path / "flows.csv"
    path.write_text("Dst Port,Flow Duration\n80,1\n")

    with pytest.raises(DataError, match=r"no label column 'Label'.*\['Dst Port', 'Flow Dur"):
        read_cicids2017([path])
