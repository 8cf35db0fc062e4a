"""CIC-IDS2017 flows, in the improved or the original CSV format, mapped to one schema.

I. Sharafaldin, A. H. Lashkari, A. A. Ghorbani, "Toward Generating a New Intrusion Detection
Dataset and Intrusion Traffic Characterization," ICISSP 2018.
Improved release: G. Engelen, V. Rimmer, W. Joosen, "Troubleshooting an Intrusion Detection
Dataset: the CICIDS2017 Case Study," IEEE SPW 2021; L. Liu et al., "Error Prevalence in NIDS
datasets," IEEE CNS 2022.

By default the registered per-class sample of the improved release is read
(``cic-ids2017/improved_rnd_5000/*.csv``: 43,419 flows, 16 labels, 91 columns). With
``data.path`` set, that file or every ``*.csv`` / ``*.csv.gz`` in that folder is read instead,
in either format:

- improved (DistriNet CNS2022): ``Label``, identifier columns, five extra features;
- original ``MachineLearningCVE`` / ``TrafficLabelling``: names with leading spaces,
  ``' Label'``, the duplicate ``Fwd Header Length.1``, ``Infinity`` values and labels such as
  ``Web Attack \ufffd Brute Force``, ``Bot``, ``PortScan``, ``DoS slowloris``.

Both are brought to one schema: names stripped, original names renamed to the improved ones
(the table in ``cic-ids2017/SOURCE.md``), identifiers dropped (id, Flow ID, Src IP, Src Port,
Dst IP, Timestamp, Attempted Category; ``Dst Port`` and ``Protocol`` stay as numeric features)
and labels normalised to the improved vocabulary :data:`LABELS`. The three Web Attack labels are
kept apart (the stratified split keeps every class with at least three rows in each split).
Infinite values are kept here; preprocessing turns them into NaN and fills them with the
training-split median.
Rows with every field empty, an artefact of some original day files, are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.data.errors import DataError
from bflsim.data.registry import DATASET_FILES, require_file
from bflsim.data.tabular import (
    LabelledTable,
    file_digest,
    require_numeric,
    resolve_user_path,
)

LABEL_COLUMN = "Label"
NORMAL = "BENIGN"
IDENTIFIER_COLUMNS = ("id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp",
                      "Attempted Category")
SAMPLE_FILES = tuple(
    relpath for relpath, spec in DATASET_FILES.items() if spec.dataset == "cic-ids2017"
)

# Original column name (stripped) -> improved name. Unlisted names are the same in both.
ORIGINAL_TO_IMPROVED = {
    "Destination Port": "Dst Port",
    "Total Fwd Packets": "Total Fwd Packet",
    "Total Backward Packets": "Total Bwd packets",
    "Total Length of Fwd Packets": "Total Length of Fwd Packet",
    "Total Length of Bwd Packets": "Total Length of Bwd Packet",
    "Min Packet Length": "Packet Length Min",
    "Max Packet Length": "Packet Length Max",
    "CWE Flag Count": "CWR Flag Count",
    "Avg Fwd Segment Size": "Fwd Segment Size Avg",
    "Avg Bwd Segment Size": "Bwd Segment Size Avg",
    "Fwd Avg Bytes/Bulk": "Fwd Bytes/Bulk Avg",
    "Fwd Avg Packets/Bulk": "Fwd Packet/Bulk Avg",
    "Fwd Avg Bulk Rate": "Fwd Bulk Rate Avg",
    "Bwd Avg Bytes/Bulk": "Bwd Bytes/Bulk Avg",
    "Bwd Avg Packets/Bulk": "Bwd Packet/Bulk Avg",
    "Bwd Avg Bulk Rate": "Bwd Bulk Rate Avg",
    "Init_Win_bytes_forward": "FWD Init Win Bytes",
    "Init_Win_bytes_backward": "Bwd Init Win Bytes",
    "act_data_pkt_fwd": "Fwd Act Data Pkts",
    "min_seg_size_forward": "Fwd Seg Size Min",
    # identifiers of the TrafficLabelling variant
    "Source IP": "Src IP",
    "Source Port": "Src Port",
    "Destination IP": "Dst IP",
}
DUPLICATE_COLUMNS = ("Fwd Header Length.1",)  # a copy of Fwd Header Length in the original

LABELS = (
    "BENIGN", "Botnet", "DDoS", "DoS GoldenEye", "DoS Hulk", "DoS Slowhttptest",
    "DoS Slowloris", "FTP-Patator", "Heartbleed", "Infiltration", "Infiltration - Portscan",
    "Portscan", "SSH-Patator", "Web Attack - Brute Force", "Web Attack - SQL Injection",
    "Web Attack - XSS",
)
"""The label vocabulary (that of the improved release)."""


def _label_key(label: str) -> str:
    # Case and punctuation differ between releases; U+FFFD, 0x96 and U+2013 all become a space.
    return re.sub(r"[^0-9a-z]+", " ", label.lower()).strip()


_LABEL_BY_KEY = {_label_key(label): label for label in LABELS} | {_label_key("Bot"): "Botnet"}


def normalise_label(label: str) -> str:
    """Map an original or improved CIC-IDS2017 label to :data:`LABELS`; unknown -> DataError."""
    canonical = _LABEL_BY_KEY.get(_label_key(label))
    if canonical is None:
        hint = (
            "; the improved release's '... - Attempted' flows are not supported, filter them out"
            if _label_key(label).endswith("attempted") else ""
        )
        raise DataError(
            f"unknown CIC-IDS2017 label {label!r}; expected one of {list(LABELS)}{hint}"
        )
    return canonical


def normalise_columns(columns: Sequence[str]) -> list[str]:
    """Column names in the improved schema: stripped and renamed."""
    stripped = [str(c).strip() for c in columns]
    return [ORIGINAL_TO_IMPROVED.get(c, c) for c in stripped]


def load_cicids2017(data_dir: Path, path: str | Path | None = None) -> LabelledTable:
    """Load the registered improved sample (verified), or the CSV files at ``path``."""
    if path is None:
        found = [require_file(relpath, data_dir) for relpath in SAMPLE_FILES]
        files = [p for p, _ in found]
        sources = tuple((str(p), digest) for p, digest in found)
    else:
        files = _csv_files(resolve_user_path(path, data_dir))
        sources = tuple((str(p), file_digest(p, data_dir)) for p in files)
    frame, labels = read_cicids2017(files)
    return LabelledTable(
        frame,
        labels,
        {},
        normal_label=NORMAL,
        sources=sources,
        name="CIC-IDS2017",
    )


def _csv_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise DataError(f"{path}: no *.csv or *.csv.gz files in this folder")
    return files


def read_cicids2017(files: Sequence[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read CIC-IDS2017 CSVs of one format into (features in the improved schema, labels)."""
    frames, labels = [], []
    for path in files:
        frame, file_labels = _read_one(path)
        if frames and list(frame.columns) != list(frames[0].columns):
            differ = sorted(set(frame.columns) ^ set(frames[0].columns))
            raise DataError(
                f"{path}: columns differ from {files[0]} after renaming to one schema "
                f"(e.g. {differ[:5]}); read files of one format at a time"
            )
        frames.append(frame)
        labels.append(file_labels)
    return pd.concat(frames, ignore_index=True), np.concatenate(labels)


def _read_one(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        # The original files carry a cp1252 en dash (0x96) in the Web Attack labels, which is
        # not UTF-8: decode it as U+FFFD and let normalise_label fold it.
        frame = pd.read_csv(path, encoding="utf-8", encoding_errors="replace", low_memory=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({err})") from err
    frame.columns = normalise_columns(frame.columns)
    if LABEL_COLUMN not in frame.columns:
        raise DataError(
            f"{path}: no label column {LABEL_COLUMN!r} (nor ' Label'); the columns are "
            f"{list(frame.columns)}"
        )
    frame = frame.dropna(how="all")
    raw_labels = frame.pop(LABEL_COLUMN)
    if raw_labels.isna().any():
        raise DataError(f"{path}: {int(raw_labels.isna().sum())} rows have no {LABEL_COLUMN!r}")
    unique = raw_labels.astype(str).unique()
    try:
        mapping = {raw: normalise_label(raw) for raw in unique}
    except DataError as err:
        raise DataError(f"{path}: {err}") from err
    dropped = [c for c in (*IDENTIFIER_COLUMNS, *DUPLICATE_COLUMNS) if c in frame.columns]
    frame = frame.drop(columns=dropped).reset_index(drop=True)
    require_numeric(frame, list(frame.columns), path)
    labels = raw_labels.astype(str).map(mapping).to_numpy(dtype=str)
    return frame, labels
