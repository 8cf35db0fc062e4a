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
Infinite and missing values are kept here; ``prepare_data`` refuses them unless
``data.impute = "median"`` (the original files hold ``Infinity`` in two rate columns), and
then preprocessing fills them with the training-split median.
Rows with every field empty, an artefact of some original day files, are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from bflsim.config import DataConfig
from bflsim.data.base import Dataset, LabelledTable
from bflsim.data.errors import DataError
from bflsim.data.registry import DataFile, Mirror, require_file, sha256_of
from bflsim.data.tabular import require_numeric, resolve_user_path

LABEL_COLUMN = "Label"
NORMAL = "BENIGN"
IDENTIFIER_COLUMNS = ("id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp",
                      "Attempted Category")
_RAW = (
    "https://raw.githubusercontent.com/ScubaInstructor/fuh/"
    "86d1bab5ca174da11e20bc54d9642ba6068f273a/nids-daten/sampled_CICIDS2017_improved_rnd_5000/"
)


def _file(name: str, size: int, sha256: str) -> DataFile:
    relpath = f"cic-ids2017/improved_rnd_5000/{name}"
    return DataFile("cic-ids2017", relpath, sha256, size, (Mirror(_RAW + quote(name)),))


FILES = (
    _file("BENIGN_5000.csv", 2_761_079,
          "4eb03c14763fe5ff4f58e713e39ad930cfdec264e8d5262b4acd6df3227298ae"),
    _file("Botnet_736.csv", 442_132,
          "55b49f70d1d7df13644a3d5f01abb742e35cda5d952ee43c737eaa38a1a6ea79"),
    _file("DDoS_5000.csv", 3_312_061,
          "36eb4d2851997237b4b13e9f4c8175563d5236c784dcf7247b7b46b08dc62815"),
    _file("DoS_GoldenEye_5000.csv", 3_573_908,
          "cb6f7b734168b643153cd45ce7f552e8b073b5b8a744c1a2a02763212d2cec6c"),
    _file("DoS_Hulk_5000.csv", 3_257_105,
          "64789076d2559ce1e4bead0fcbe2b806de2b3c5cd97771705295cafd3ed0cfb7"),
    _file("DoS_Slowhttptest_1740.csv", 1_171_369,
          "4159ba005254aa8b0a0c04b47844f2221369279eedf19308fa9875cc075f3534"),
    _file("DoS_Slowloris_3859.csv", 2_430_078,
          "8114bfec656df7e8c4b9d539640ad3b01ad50794a2faa9fb0ccf5884ca03f157"),
    _file("FTP-Patator_3972.csv", 2_720_284,
          "73355b1584316393ec7b367407db0e2914d18692eff3bd7b9cc91ed89daa8145"),
    _file("Heartbleed_11.csv", 9_625,
          "bf610cc626325778dda3e54b431cc60142f6b8bffedb1f9b8a7f9481a673ea55"),
    _file("Infiltration_-_Portscan_5000.csv", 2_052_366,
          "1a7a6a0906995f2eb6f2ea951b3d4ee024010e9e15783efb0a19c3c04876308d"),
    _file("Infiltration_36.csv", 27_709,
          "3cd57b9cd7a7a9f7fa98f2c4d2147febafe551cc9d9b86a949a6947cda576beb"),
    _file("Portscan_5000.csv", 1_946_889,
          "022a5885f6704f8c4ab0ef888b31e5ee1aef46b6c64fe6b3c039e51f93f31c96"),
    _file("SSH-Patator_2961.csv", 2_055_181,
          "07319168e4435ea24439f64ece1dcf64ad1c2c58cce9e062e9cba757aea94709"),
    _file("Web_Attack_-_Brute_Force_73.csv", 55_681,
          "d244df46f686a48ded36b0328ad14e80beee1c5560fede0e3f07cea02ee030d9"),
    _file("Web_Attack_-_SQL_Injection_13.csv", 10_030,
          "aca6ed973bf1ace011a44ddfc3914393895828666314a018e7581e27343be1e0"),
    _file("Web_Attack_-_XSS_18.csv", 14_577,
          "51ffc2d6d24497e11768b2b80beca3a15353d76c3e28f5c98affc24e8affb94e"),
)
"""The registered per-class sample of the improved release, one file per label."""

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
    """Load the registered improved sample (verified), or the CSV files at ``path``.

    Files at ``path`` are only hashed here; ``prepare_data`` checks any of them that is a
    registered file against its registered digest.
    """
    if path is None:
        found = [require_file(spec, data_dir) for spec in FILES]
        files = [p for p, _ in found]
        sources = tuple((str(p), digest) for p, digest in found)
    else:
        files = _csv_files(resolve_user_path(path, data_dir))
        sources = tuple((str(p), sha256_of(p)) for p in files)
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


def load_pool(config: DataConfig, data_dir: Path) -> LabelledTable:
    """The training pool: the registered sample, or the files at ``data.path``."""
    return load_cicids2017(data_dir, config.path)


CIC_IDS2017 = Dataset(
    name="cic-ids2017",
    label="CIC-IDS2017",
    load=load_pool,
    files=FILES,
    reference="I. Sharafaldin, A. H. Lashkari, A. A. Ghorbani, \"Toward Generating a New "
              "Intrusion Detection Dataset and Intrusion Traffic Characterization,\" ICISSP 2018",
)
