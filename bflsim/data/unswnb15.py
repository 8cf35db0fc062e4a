"""UNSW-NB15: its training-set file is registered (verified, downloadable); no loader yet.

N. Moustafa, J. Slay, "UNSW-NB15: a comprehensive data set for network intrusion detection
systems (UNSW-NB15 network data set)," MilCIS 2015.

Until it has a loader and a :class:`~bflsim.data.base.Dataset` record, read it as a generic
labelled CSV: ``dataset = "csv"``, ``path = "unsw-nb15/UNSW_NB15_training-set.csv.gz"``,
``label_column = "attack_cat"``, ``categorical_columns = ["proto", "service", "state"]``,
``drop_columns = ["id", "label"]``, ``normal_label = "Normal"``.
"""

from __future__ import annotations

from bflsim.data.registry import DataFile, Mirror

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
