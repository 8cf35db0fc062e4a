"""What every dataset module provides: a :class:`LabelledTable` loader and a :class:`Dataset` record.

A loader turns the ``[data]`` table of an experiment and the data directory into one table of
raw features and class names; preprocessing and splitting then work the same way for every
dataset. Each dataset module ends with its record (``NSL_KDD``, ``CIC_IDS2017``, ...), which
owns the dataset's name, label, loaders, registered files and reference; the records are
collected in :data:`bflsim.data.DATASETS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bflsim.config import DataConfig
from bflsim.data.registry import DataFile


@dataclass(frozen=True)
class LabelledTable:
    """Raw features and one class name per row, as loaded, before any split."""

    features: pd.DataFrame
    labels: NDArray[np.str_]
    # Categorical column -> its known vocabulary, or None to learn it from the training split.
    categorical: Mapping[str, tuple[str, ...] | None]
    normal_label: str | None
    sources: tuple[tuple[str, str], ...]  # (path, sha256) of every file read
    name: str = ""  # how messages refer to the table, e.g. "KDDTrain+"
    # The file line of the first row when the table is one file's rows in order (2 after a
    # header row, 1 without); None when rows do not map to lines (several files, rows dropped).
    first_line: int | None = None

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise ValueError("features and labels differ in length")


Loader = Callable[[DataConfig, Path], LabelledTable]
"""``load(config, data_dir) -> LabelledTable``; ``data_dir`` is already resolved."""


@dataclass(frozen=True)
class Dataset:
    """One loadable dataset: what experiment files call it and how it is read.

    Parameters
    ----------
    name
        The value of ``data.dataset``, e.g. ``"nsl-kdd"``.
    label
        How tables and legends show it, e.g. ``"NSL-KDD"``.
    load
        Reads the training pool; ``split = "stratified"`` splits train / val / test from it.
    load_official_test
        Reads the dataset's published test set; ``split = "official"`` trains (and validates)
        on the pool and tests on this. None when the dataset has no official test split.
    official_protocol
        The official split in words for reports, e.g. ``"KDDTrain+ / KDDTest+"``; set exactly
        when ``load_official_test`` is.
    files
        The registered files the loaders read (checksums, mirrors); empty for generated data
        and user files.
    check
        Raises :class:`~bflsim.data.DataError` for settings this dataset cannot use, without
        reading any data; None when it accepts every setting.
    reference
        The citation, one line.
    """

    name: str
    label: str
    load: Loader
    load_official_test: Loader | None = None
    official_protocol: str = ""
    files: tuple[DataFile, ...] = ()
    check: Callable[[DataConfig], None] | None = None
    reference: str = ""

    def __post_init__(self) -> None:
        if (self.load_official_test is None) != (self.official_protocol == ""):
            raise ValueError(
                f"dataset {self.name!r}: official_protocol must be set exactly when "
                f"load_official_test is"
            )
        strangers = [f.relpath for f in self.files if f.dataset != self.name]
        if strangers:
            raise ValueError(f"dataset {self.name!r}: files {strangers} belong to another dataset")

    @property
    def has_official_test(self) -> bool:
        """True when ``split = "official"`` is available."""
        return self.load_official_test is not None
