"""The data layer: verified dataset files, loaders, preprocessing, splits and partitions.

Entry points::

    prepare_data(config.data)          -> PreparedData (train / val / test, float32, read-only)
    partition(y_train, K, "dirichlet", alpha=0.5, seed=1) -> index arrays, one per edge node
    data_report(), download_dataset("nsl-kdd")             -> for the `bflsim data` command

The data directory is ``data.data_dir`` if set, else ``$BFLSIM_DATA_DIR``, else ``./data``;
its layout mirrors ``shared/datasets`` (see :mod:`bflsim.data.registry`).
"""

from bflsim.data.download import download_dataset, fetch_file
from bflsim.data.errors import DataError
from bflsim.data.partition import label_counts, partition
from bflsim.data.prepare import PreparedData, prepare_data
from bflsim.data.registry import (
    DATA_DIR_ENV,
    DATASET_FILES,
    DATASETS,
    DataFile,
    DataReport,
    FileStatus,
    Mirror,
    data_report,
    resolve_data_dir,
    sha256_of,
    verify_file,
)
from bflsim.data.synthetic import generate_synthetic

__all__ = [
    "DATASETS",
    "DATASET_FILES",
    "DATA_DIR_ENV",
    "DataError",
    "DataFile",
    "DataReport",
    "FileStatus",
    "Mirror",
    "PreparedData",
    "data_report",
    "download_dataset",
    "fetch_file",
    "generate_synthetic",
    "label_counts",
    "partition",
    "prepare_data",
    "resolve_data_dir",
    "sha256_of",
    "verify_file",
]
