"""From a :class:`DataConfig` to train / validation / test matrices ready for a model.

Steps: check the config, load the dataset through its record in :data:`DATASETS` (every
registered file verified against the registry), group labels (``label_mode``), subsample
(``sample_fraction``, stratified), split, order the classes, fit the preprocessing on the
training split and apply it to all three.

Splits: ``"stratified"`` cuts train / val / test from the dataset's pool by ``fractions``.
``"official"`` (legacy name ``"kdd-test"``) keeps the dataset's published test set as the test
split and cuts train / val from the pool; only datasets whose record has
``load_official_test`` offer it. For NSL-KDD the pool is KDDTrain+ and the official test set
KDDTest+, with attacks unseen in training.

Missing, NaN and infinite values in numeric columns are refused, naming the file, column,
count and first row (:func:`require_finite`), unless ``data.impute = "median"``: then each
is filled with its column's training-split median and the counts per split and column are
recorded (:attr:`PreparedData.imputed`, the ``imputed`` entry of the manifest's data).

Class order: with ``label_mode = "binary"`` it is ``("normal", "attack")`` for every dataset.
Otherwise the normal class comes first when known (NSL-KDD ``Normal``, CIC-IDS2017 ``BENIGN``,
synthetic ``normal``, CSV ``data.normal_label``), then the other class names sorted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bflsim.config import DataConfig
from bflsim.data.base import LabelledTable
from bflsim.data.datasets import (
    DATASETS,
    check_data_config,
    uses_official_split,
    verify_sources,
)
from bflsim.data.errors import DataError
from bflsim.data.preprocess import fit_preprocessor, non_finite_counts
from bflsim.data.registry import resolve_data_dir
from bflsim.data.split import (
    SPLIT_NAMES,
    order_classes,
    require_classes_present,
    split_stratified,
    subsample_stratified,
)

BINARY_CLASSES = ("normal", "attack")


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Model-ready splits of one dataset. The arrays are read-only: copy before changing.

    ``y_*`` are indices into ``class_names``; ``normal_class`` is the index of the benign
    class (for false-positive rates) or None when unknown; ``sources`` lists the (path,
    sha256) of every file read, for the run manifest.
    """

    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_val: NDArray[np.float32]
    y_val: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    normal_class: int | None
    dataset: str
    sources: tuple[tuple[str, str], ...]
    impute: str = "none"  # data.impute
    # split -> column -> values filled (data.impute = "median"); empty when nothing was filled
    imputed: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or x.shape[1] != len(self.feature_names) or len(x) != len(y):
                raise ValueError(f"x_{split} {x.shape} / y_{split} {y.shape} do not match "
                                 f"{len(self.feature_names)} features")
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    @property
    def num_features(self) -> int:
        """Columns of every ``x_*`` matrix."""
        return len(self.feature_names)

    @property
    def num_classes(self) -> int:
        """Number of classes; ``y_*`` values lie in ``range(num_classes)``."""
        return len(self.class_names)

    def describe(self) -> dict:
        """What a run's manifest records about the data it used."""
        splits = (("train", self.y_train), ("val", self.y_val), ("test", self.y_test))
        return {
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "normal_class": self.normal_class,
            "num_features": self.num_features,
            "rows": {split: len(y) for split, y in splits},
            "class_counts": {split: np.bincount(y, minlength=self.num_classes).tolist() for split, y in splits},
            "sources": [{"path": p, "sha256": d} for p, d in self.sources],
        } | ({"imputed": self._imputed()} if self.impute != "none" else {})

    def _imputed(self) -> dict:
        counts = {split: dict(columns) for split, columns in self.imputed.items() if columns}
        return {
            "method": f"{self.impute} of the training split, per column",
            "values": sum(n for columns in counts.values() for n in columns.values()),
            "by_split": counts,
        }


def run_data_dir(config: DataConfig, override: str | Path | None = None) -> Path | None:
    """The data directory a run reads: ``override`` (``--data-dir``) if given, else
    ``data.data_dir``, else ``$BFLSIM_DATA_DIR``, else ``./data``; None for generated data."""
    if config.dataset == "synthetic":
        return None
    return resolve_data_dir(override if override is not None else config.data_dir)


def prepare_data(config: DataConfig, data_dir: str | Path | None = None) -> PreparedData:
    """Load, split and preprocess the dataset that ``config`` describes.

    Parameters
    ----------
    config
        The ``[data]`` table of an experiment.
    data_dir
        Overrides ``config.data_dir``; without either, ``$BFLSIM_DATA_DIR``, then ``./data``.

    Raises
    ------
    DataError
        The dataset or split is unknown or unavailable (see :func:`check_data_config`), a
        file is missing or fails its checksum, a column or label is unknown, or a class is
        too small to appear in every split. The message says what to change.
    """
    check_data_config(config)
    root = resolve_data_dir(data_dir if data_dir is not None else config.data_dir)
    dataset = DATASETS[config.dataset]
    pool = dataset.load(config, root)
    verify_sources(pool.sources, root)
    require_finite(pool, config)
    held_out = None
    if uses_official_split(config):
        held_out = dataset.load_official_test(config, root)
        verify_sources(held_out.sources, root)
        require_finite(held_out, config)
    normal = _normal_label(pool, config)
    splits = _split(config, pool, held_out, normal)

    if config.label_mode == "binary":
        class_names, normal = BINARY_CLASSES, BINARY_CLASSES[0]
    else:
        class_names = order_classes(np.concatenate([s.labels for s in splits]), normal)
    encoded = [
        pd.Categorical(s.labels, categories=list(class_names)).codes.astype(np.int64)
        for s in splits
    ]
    require_classes_present(class_names, dict(zip(SPLIT_NAMES, encoded, strict=True)))
    preprocessor = fit_preprocessor(splits[0].features, pool.categorical, config.scaler)
    x_train, x_val, x_test = (preprocessor.transform(s.features) for s in splits)
    return PreparedData(
        x_train=x_train,
        y_train=encoded[0],
        x_val=x_val,
        y_val=encoded[1],
        x_test=x_test,
        y_test=encoded[2],
        class_names=tuple(class_names),
        feature_names=preprocessor.feature_names,
        normal_class=class_names.index(normal) if normal is not None else None,
        dataset=config.dataset,
        sources=pool.sources + (held_out.sources if held_out is not None else ()),
        impute=config.impute,
        imputed={
            name: {c: n for c, (n, _) in non_finite_counts(split.features, pool.categorical).items()}
            for name, split in zip(SPLIT_NAMES, splits, strict=True)
        },
    )


def require_finite(table: LabelledTable, config: DataConfig) -> None:
    """Raise :class:`DataError` naming the first numeric column of ``table`` with missing, NaN
    or infinite values (file, column, count, first row), unless ``data.impute`` fills them."""
    if config.impute != "none":
        return
    bad = non_finite_counts(table.features, table.categorical)
    if not bad:
        return
    column, (count, first) = next(iter(bad.items()))
    where = table.sources[0][0] if len(table.sources) == 1 else table.name
    row = (f"line {first + table.first_line}" if table.first_line is not None
           else f"data row {first + 1} of {table.name}")
    others = f"; {len(bad) - 1} more columns hold some too" if len(bad) > 1 else ""
    raise DataError(
        f"{where}: column {column!r} holds {count} missing, NaN or infinite values (first at {row}){others}. "
        f"Fix the file{', list the column in data.drop_columns,' if config.dataset == 'csv' else ''} "
        f"or set data.impute = 'median' to fill "
        f"each with its column's training-split median (the counts are recorded in the run manifest)"
    )


class _Split(NamedTuple):
    features: pd.DataFrame
    labels: NDArray[np.str_]  # class names after label_mode grouping


def _split(
    config: DataConfig, pool: LabelledTable, held_out: LabelledTable | None, normal: str | None
) -> tuple[_Split, _Split, _Split]:
    """(train, val, test) stratified from ``pool``; or train, val from it and test = held_out."""
    labels = _group_labels(pool, config, normal)
    fractions = config.fractions if held_out is None else (1.0 - config.fractions[1],
                                                             config.fractions[1])
    needed = sum(1 for f in fractions if f > 0)
    keep = subsample_stratified(labels, config.sample_fraction, config.seed, min_per_class=needed)
    parts = split_stratified(labels[keep], fractions, config.seed, source=pool.name)
    rows = [keep[part] for part in parts]
    splits = [_Split(pool.features.iloc[r], labels[r]) for r in rows]
    if held_out is not None:
        test_labels = _group_labels(held_out, config, normal)
        test_rows = subsample_stratified(test_labels, config.sample_fraction, config.seed)
        splits.append(_Split(held_out.features.iloc[test_rows], test_labels[test_rows]))
    return tuple(splits)


def _normal_label(table: LabelledTable, config: DataConfig) -> str | None:
    normal = table.normal_label
    if normal is None:
        if config.label_mode == "binary":
            raise DataError(
                f"label_mode = 'binary' needs to know the normal class of {table.name}; "
                f"set data.normal_label"
            )
        return None
    if normal not in set(table.labels.tolist()):
        present = sorted(set(table.labels.tolist()))
        raise DataError(
            f"normal label {normal!r} does not occur in {table.name}; the labels are "
            f"{present[:20]}{' ...' if len(present) > 20 else ''}"
        )
    return normal


def _group_labels(table: LabelledTable, config: DataConfig, normal: str | None) -> NDArray[np.str_]:
    if config.label_mode == "multiclass":
        return table.labels
    return np.where(table.labels == normal, BINARY_CLASSES[0], BINARY_CLASSES[1])
