"""The data layer: verified dataset files, loaders, preprocessing, splits and partitions.

Entry points::

    check_data_config(config.data)     -> None, or DataError naming the key (reads nothing)
    prepare_data(config.data)          -> PreparedData (train / val / test, float32, read-only)
    partition(y_train, K, "dirichlet", alpha=0.5, seed=1) -> index arrays, one per edge node
    data_report(), download_dataset("nsl-kdd")             -> for the `bflsim data` command

``DATASETS`` maps each ``data.dataset`` name to its :class:`Dataset` record (label, loaders,
official test split, registered files, reference); ``FILE_SETS`` maps each name that
``bflsim data --download`` accepts to its registered files.

The data directory of a run is ``--data-dir`` if given, else the experiment's
``data.data_dir`` (a relative one read against the experiment file's folder), else
``$BFLSIM_DATA_DIR``, else ``./data`` (:func:`run_data_dir`); its layout mirrors
``shared/datasets`` (see :mod:`bflsim.data.registry`).
"""

from bflsim.data.base import Dataset
from bflsim.data.datasets import (
    DATASET_FILES,
    DATASETS,
    FILE_SETS,
    check_data_config,
    data_report,
)
from bflsim.data.download import download_dataset, fetch_file
from bflsim.data.errors import DataError
from bflsim.data.partition import check_enough_rows, check_node_rows, label_counts, partition
from bflsim.data.prepare import PreparedData, prepare_data, require_finite, run_data_dir
from bflsim.data.registry import (
    DATA_DIR_ENV,
    LOOKUP_ORDER,
    DataFile,
    DataReport,
    FileStatus,
    Mirror,
    resolve_data_dir,
    sha256_of,
    verify_file,
)
from bflsim.data.synthetic import generate_synthetic

__all__ = [
    "DATASETS",
    "DATASET_FILES",
    "DATA_DIR_ENV",
    "FILE_SETS",
    "LOOKUP_ORDER",
    "DataError",
    "DataFile",
    "DataReport",
    "Dataset",
    "FileStatus",
    "Mirror",
    "PreparedData",
    "check_data_config",
    "check_enough_rows",
    "check_node_rows",
    "data_report",
    "download_dataset",
    "fetch_file",
    "generate_synthetic",
    "label_counts",
    "partition",
    "prepare_data",
    "require_finite",
    "resolve_data_dir",
    "run_data_dir",
    "sha256_of",
    "verify_file",
]
