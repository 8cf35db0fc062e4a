"""The catalogue: every loadable dataset by name, and every registered file by file set.

:data:`DATASETS` holds one :class:`~bflsim.data.base.Dataset` record per value of
``data.dataset``. :data:`FILE_SETS` groups the registered files the way ``bflsim data`` and
``--download`` name them: the files of each dataset record.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bflsim.config import DataConfig
from bflsim.data.base import Dataset
from bflsim.data.cicids2017 import CIC_IDS2017
from bflsim.data.errors import DataError
from bflsim.data.nslkdd import NSL_KDD
from bflsim.data.registry import DataFile, DataReport, report_files, verify_file
from bflsim.data.synthetic import SYNTHETIC
from bflsim.data.tabular import CSV
from bflsim.data.unswnb15 import UNSW_NB15

DATASETS: dict[str, Dataset] = {d.name: d for d in (SYNTHETIC, NSL_KDD, CIC_IDS2017, UNSW_NB15, CSV)}
"""Every loadable dataset, keyed by the name experiment files give in ``data.dataset``."""

FILE_SETS: dict[str, tuple[DataFile, ...]] = {d.name: d.files for d in DATASETS.values() if d.files}
"""Registered files by the name ``bflsim data --download NAME`` accepts."""

DATASET_FILES: dict[str, DataFile] = {f.relpath: f for files in FILE_SETS.values() for f in files}
"""Every registered file, keyed by its path under the data directory (uncompressed name)."""

SPLITS = ("stratified", "official")
LEGACY_SPLITS = {"kdd-test": "official"}  # older experiment files; the config loader upgrades them


def check_data_config(config: DataConfig) -> None:
    """Raise :class:`DataError` for a ``[data]`` table that cannot be loaded; reads nothing.

    Checks that ``data.dataset`` is in :data:`DATASETS`, that ``data.split`` is known and
    that ``"official"`` is asked only of a dataset with an official test split, then the
    dataset's own settings (``Dataset.check``).
    """
    dataset = find_dataset(config.dataset)
    split = LEGACY_SPLITS.get(config.split, config.split)
    if split not in SPLITS:
        raise DataError(f"data.split = {config.split!r} is not one of {list(SPLITS)}")
    if split == "official" and not dataset.has_official_test:
        having = [d.name for d in DATASETS.values() if d.has_official_test]
        raise DataError(
            f"data.split = {config.split!r} needs a dataset with an official test split; "
            f"data.dataset = {dataset.name!r} has none (datasets with one: {having}). "
            f"Use data.split = 'stratified'"
        )
    if (config.columns or not config.header) and dataset.name != "csv":
        raise DataError(
            f"data.header and data.columns apply to data.dataset = 'csv'; data.dataset = {dataset.name!r} "
            f"reads its own layout. Remove them"
        )
    if dataset.check is not None:
        dataset.check(config)


def find_dataset(name: str) -> Dataset:
    """The record of ``data.dataset = name``; :class:`DataError` when there is none."""
    if name not in DATASETS:
        raise DataError(f"data.dataset = {name!r} is not one of {list(DATASETS)}")
    return DATASETS[name]


def uses_official_split(config: DataConfig) -> bool:
    """True when ``config`` trains on the pool and tests on the dataset's official test set."""
    return LEGACY_SPLITS.get(config.split, config.split) == "official"


def dataset_files(name: str) -> tuple[DataFile, ...]:
    """The registered files of one file set, e.g. ``"nsl-kdd"``."""
    if name not in FILE_SETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {list(FILE_SETS)}")
    return FILE_SETS[name]


def data_report(
    data_dir: str | Path | None = None, *, datasets: Iterable[str] | None = None
) -> DataReport:
    """Check every registered file (or those of the file sets ``datasets``) under the data directory.

    Missing files and digest mismatches are reported, not raised.
    """
    names = FILE_SETS if datasets is None else datasets
    return report_files([spec for name in names for spec in dataset_files(name)], data_dir)


def verify_sources(sources: Iterable[tuple[str, str]], data_dir: Path) -> None:
    """Check each source that is a registered file under ``data_dir`` against its digest.

    Loaders verify the registered files they look up; this catches a registered file reached
    through ``data.path`` (a generic CSV, a CIC-IDS2017 folder).
    """
    for path, _ in sources:
        try:
            relpath = Path(path).absolute().relative_to(data_dir.absolute()).as_posix()
        except ValueError:
            continue
        spec = DATASET_FILES.get(relpath.removesuffix(".gz"))
        if spec is not None:
            verify_file(path, spec)
