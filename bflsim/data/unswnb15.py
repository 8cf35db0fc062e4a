"""UNSW-NB15: the partition file distributed as ``UNSW_NB15_training-set.csv``.

N. Moustafa, J. Slay, "UNSW-NB15: a comprehensive data set for network intrusion detection
systems (UNSW-NB15 network data set)," MilCIS 2015.

``data.dataset = "unsw-nb15"`` reads its 82,332 flows (the file the UNSW papers call the
*testing* partition, distributed under the training name; the 175,341-flow partition is not
registered here, so the split is stratified from this file): 39 numeric features and the
categorical ``proto``, ``service`` and ``state`` (vocabularies learnt from the training
split), ``id`` and the 0/1 ``label`` dropped. Classes are ``attack_cat``: ``Normal`` and
nine attack categories (10 classes); ``data.label_mode = "binary"`` makes it normal against
attack, which is exactly the file's ``label`` column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bflsim.config import DataConfig
from bflsim.data.base import Dataset, LabelledTable
from bflsim.data.errors import DataError
from bflsim.data.registry import DataFile, Mirror, require_file
from bflsim.data.tabular import require_numeric

LABEL_COLUMN = "attack_cat"
NORMAL = "Normal"
CATEGORICAL = ("proto", "service", "state")
DROPPED = ("id", "label")
CLASSES = ("Normal", "Generic", "Exploits", "Fuzzers", "DoS", "Reconnaissance", "Analysis", "Backdoor",
           "Shellcode", "Worms")

_ZIP = (
    "https://raw.githubusercontent.com/akritiupadhyay-au/Cyber-Attack-Detection-with-Random-Forest/"
    "f666564e36db598d9e667bab58f97f955f095d99/UNSW_NB15_training-set.csv.zip"
)

FILES = (
    DataFile(
        "unsw-nb15", "unsw-nb15/UNSW_NB15_training-set.csv", size=15_380_800,
        sha256="734fe6642edf758f7c94d7d9149426b49d202fe8e7bf0bef47392489c3c0a559",
        mirrors=(Mirror(_ZIP, member="UNSW_NB15_training-set.csv"),),
    ),
)
"""The registered UNSW-NB15 files."""


def load_unswnb15(config: DataConfig, data_dir: Path) -> LabelledTable:
    """The registered UNSW-NB15 partition, verified: 42 features, ``attack_cat`` as the class.

    The file is read only once its SHA-256 matches, so its layout and labels are known (the
    tests check the class counts and that ``label`` is 1 exactly off ``Normal``).
    """
    path, digest = require_file(FILES[0], data_dir)
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype={c: str for c in (*CATEGORICAL, LABEL_COLUMN)})
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a UNSW-NB15 CSV ({err})") from err
    labels = frame.pop(LABEL_COLUMN).str.strip().to_numpy(dtype=str)
    frame = frame.drop(columns=list(DROPPED))
    require_numeric(frame, [c for c in frame.columns if c not in CATEGORICAL], path)
    return LabelledTable(frame, labels, dict.fromkeys(CATEGORICAL), normal_label=NORMAL,
                         sources=((str(path), digest),), name="UNSW-NB15", first_line=2)


UNSW_NB15 = Dataset(
    name="unsw-nb15",
    label="UNSW-NB15",
    load=load_unswnb15,
    files=FILES,
    reference="N. Moustafa, J. Slay, \"UNSW-NB15: a comprehensive data set for network intrusion "
              "detection systems (UNSW-NB15 network data set),\" MilCIS 2015",
)
"""``data.dataset = "unsw-nb15"``."""
