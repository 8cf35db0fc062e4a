"""Turn raw feature tables into float32 matrices, with statistics from the training split only.

- Categorical columns are one-hot encoded in place (the block replaces the column, so the
  feature order follows the file). The vocabulary is the dataset's known one when it has one
  (NSL-KDD), else the values seen in the training split, sorted. A value outside the
  vocabulary (e.g. first seen in the test split) encodes as all zeros. A missing value is
  the category ``"<missing>"``.
- Numeric columns: +-inf becomes NaN; NaN is filled with the training-split median of the
  column (0 when the column has no finite value in training). ``prepare_data`` lets such
  values through only with ``data.impute = "median"`` (:func:`non_finite_counts` finds them).
- Scaling, numeric columns only (one-hot columns stay 0/1):
  ``minmax``: (x - min) / (max - min); ``standard``: (x - mean) / std. A column that is
  constant in training gets scale 1, so it maps to 0 there and never to NaN. Test rows may
  fall outside [0, 1] under ``minmax``: the scaler has not seen them, by design.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bflsim.data.errors import DataError

MISSING_CATEGORY = "<missing>"
ScalerName = Literal["minmax", "standard"]


@dataclass(frozen=True)
class Preprocessor:
    """A fitted preprocessing: apply it to any frame with the training columns."""

    columns: tuple[str, ...]  # the input columns, in order
    categories: Mapping[str, tuple[str, ...]]  # vocabulary of each categorical column
    numeric: tuple[str, ...]
    fill: NDArray[np.float64]  # per numeric column, for NaN and +-inf
    offset: NDArray[np.float64]
    scale: NDArray[np.float64]
    feature_names: tuple[str, ...]  # after one-hot: "column=value" for categorical blocks

    def transform(self, frame: pd.DataFrame) -> NDArray[np.float32]:
        """The float32 feature matrix of ``frame``; rows in order."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"columns {missing} are missing from the frame to transform")
        numeric = _numeric_matrix(frame, self.numeric)
        numeric = np.where(np.isnan(numeric), self.fill, numeric)
        numeric = (numeric - self.offset) / self.scale
        blocks = []
        position = 0
        for column in self.columns:
            if column in self.categories:
                blocks.append(_one_hot(frame[column], self.categories[column]))
            else:
                blocks.append(numeric[:, position : position + 1])
                position += 1
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)


def fit_preprocessor(
    train: pd.DataFrame,
    categorical: Mapping[str, tuple[str, ...] | None],
    scaler: ScalerName,
) -> Preprocessor:
    """Learn vocabularies, fill values and scaling from the training frame only."""
    if scaler not in ("minmax", "standard"):
        raise DataError(f"data.scaler = {scaler!r} is not one of ['minmax', 'standard']")
    columns = tuple(str(c) for c in train.columns)
    categories = {
        column: known if known is not None else _vocabulary(train[column])
        for column, known in categorical.items()
    }
    numeric = tuple(c for c in columns if c not in categories)
    values = _numeric_matrix(train, numeric)
    fill = _nan_statistic(np.nanmedian, values)
    values = np.where(np.isnan(values), fill, values)
    if len(values) == 0:
        raise DataError("cannot fit preprocessing on an empty training split")
    if scaler == "minmax":
        offset = values.min(axis=0)
        spread = values.max(axis=0) - offset
    else:
        offset = values.mean(axis=0)
        spread = values.std(axis=0)
    scale = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    names: list[str] = []
    for column in columns:
        if column in categories:
            names.extend(f"{column}={value}" for value in categories[column])
        else:
            names.append(column)
    return Preprocessor(columns, categories, numeric, fill, offset, scale, tuple(names))


def non_finite_counts(frame: pd.DataFrame, categorical: Collection[str]) -> dict[str, tuple[int, int]]:
    """Per numeric column (those not in ``categorical``) with missing, NaN or infinite values:
    ``(how many, position of the first row)``; columns without any are left out."""
    numeric = tuple(str(c) for c in frame.columns if c not in categorical)
    bad = ~np.isfinite(_numeric_matrix(frame, numeric))
    return {
        column: (int(bad[:, j].sum()), int(np.argmax(bad[:, j])))
        for j, column in enumerate(numeric)
        if bad[:, j].any()
    }


def _numeric_matrix(frame: pd.DataFrame, columns: tuple[str, ...]) -> NDArray[np.float64]:
    values = frame.loc[:, list(columns)].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def _nan_statistic(statistic, values: NDArray[np.float64]) -> NDArray[np.float64]:
    finite = ~np.isnan(values)
    result = np.zeros(values.shape[1])
    has_value = finite.any(axis=0)
    if has_value.any():
        result[has_value] = statistic(values[:, has_value], axis=0)
    return result


def _categories_of(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), MISSING_CATEGORY).astype(str)


def _vocabulary(values: pd.Series) -> tuple[str, ...]:
    return tuple(sorted(_categories_of(values).unique()))


def _one_hot(values: pd.Series, vocabulary: tuple[str, ...]) -> NDArray[np.float64]:
    codes = pd.Index(vocabulary).get_indexer(_categories_of(values))  # -1: not in vocabulary
    encoded = np.zeros((len(values), len(vocabulary)))
    seen = codes >= 0
    encoded[np.flatnonzero(seen), codes[seen]] = 1.0
    return encoded
