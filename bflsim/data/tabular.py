"""The generic labelled-CSV dataset, and the CSV helpers the other loaders share.

Every loader returns a :class:`~bflsim.data.base.LabelledTable`: raw features (one column per
input column, categorical columns as text) plus one class name per row.

Generic CSV (``data.dataset = "csv"``): one header row, or none with ``data.header = false``
and the column names in ``data.columns``; ``data.label_column`` holds the class;
``data.categorical_columns`` are one-hot encoded; ``data.drop_columns`` are ignored; every
other column must be numeric. ``data.normal_label`` names the benign class.
A relative ``data.path`` is looked up in the current directory, then in the data directory.
A UTF-8 byte-order mark is ignored. When ``data.path`` is a registered file (e.g. the
UNSW-NB15 training set), ``prepare_data`` checks it against its registered digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.config import DataConfig
from bflsim.data.base import Dataset, LabelledTable
from bflsim.data.errors import DataError
from bflsim.data.registry import sha256_of


def check_csv(config: DataConfig) -> None:
    """Raise :class:`DataError` unless ``config`` names the file and its label column."""
    if not config.path or not config.label_column:
        raise DataError("data.dataset = 'csv' needs data.path and data.label_column")


def load_csv(config: DataConfig, data_dir: Path) -> LabelledTable:
    """Load ``config.path`` as a generic labelled CSV."""
    check_csv(config)
    path = resolve_user_path(config.path, data_dir)
    table = read_labelled_csv(
        path,
        label_column=config.label_column,
        categorical_columns=config.categorical_columns,
        drop_columns=config.drop_columns,
        columns=None if config.header else config.columns,
    )
    return LabelledTable(
        table.features,
        table.labels,
        table.categorical,
        config.normal_label,
        ((str(path), sha256_of(path)),),
        name=path.name,
        first_line=table.first_line,
    )


def resolve_user_path(path: str | Path, data_dir: Path) -> Path:
    """An existing file or folder: absolute, or relative to the current directory or data_dir."""
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [given.absolute(), data_dir / given]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"data.path {str(path)!r} not found; looked for {tried}")


def read_labelled_csv(
    path: Path,
    *,
    label_column: str,
    categorical_columns: Sequence[str] = (),
    drop_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> LabelledTable:
    """Read a CSV into a :class:`LabelledTable` (no normal label, no sources).

    The file has one header row, or none when ``columns`` names its columns in order
    (``data.header = false``, ``data.columns``).
    """
    header = _read_header(path) if columns is None else _check_columns(path, list(columns))
    named = {"data.label_column": [label_column], "data.categorical_columns": categorical_columns,
             "data.drop_columns": drop_columns}
    header_key = "the header row" if columns is None else "data.columns"
    for key, names in named.items():
        for column in names:
            if column not in header:
                raise DataError(
                    f"{path}: no column {column!r} (from {key}); the columns are {header} "
                    f"(from {header_key})"
                )
    text_columns = {label_column, *categorical_columns}
    no_header = {} if columns is None else {"header": None, "names": list(columns)}
    try:
        frame = pd.read_csv(
            path,
            usecols=[c for c in header if c not in drop_columns],
            dtype={c: str for c in text_columns},
            encoding="utf-8-sig",
            **no_header,
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({err})") from err
    labels = frame.pop(label_column)
    missing = labels.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + (1 if columns is None else 0) + 1  # 1-based
        raise DataError(
            f"{path}: {int(missing.sum())} rows have no value in label column "
            f"{label_column!r} (first at line {row})"
        )
    if frame.shape[1] == 0:
        raise DataError(f"{path}: no feature columns left besides {label_column!r}")
    require_numeric(frame, [c for c in frame.columns if c not in text_columns], path)
    return LabelledTable(
        frame,
        labels.str.strip().to_numpy(dtype=str),
        {column: None for column in categorical_columns},
        normal_label=None,
        sources=(),
        name=path.name,
        first_line=1 if columns is not None else 2,
    )


def _check_columns(path: Path, columns: list[str]) -> list[str]:
    """``columns`` (``data.columns``), once the file's first row has as many fields and is not a header."""
    try:
        first = pd.read_csv(path, header=None, nrows=1, dtype=str, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: empty file; expected rows of {len(columns)} fields (data.columns)") from err
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({err})") from err
    fields = [str(v).strip() for v in first.iloc[0].tolist()]
    if len(fields) != len(columns):
        raise DataError(
            f"{path}: the first row has {len(fields)} fields but data.columns names {len(columns)} "
            f"columns {columns}; list one name per field, in order"
        )
    if fields == [c.strip() for c in columns]:
        raise DataError(
            f"{path}: the first row repeats data.columns, so the file has a header row; "
            f"remove data.header = false and data.columns"
        )
    return columns


def _read_header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: empty file; expected a CSV with a header row") from err
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({err})") from err


def require_numeric(frame: pd.DataFrame, columns: Sequence[str], source: Path | str) -> None:
    """Raise :class:`DataError` naming the first of ``columns`` that holds non-numeric text."""
    for column in columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype(np.float64)
            continue
        if pd.api.types.is_numeric_dtype(values):
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = converted.isna() & values.notna()
        if bad.any():
            example = values[bad].iloc[0]
            raise DataError(
                f"{source}: column {column!r} holds text such as {example!r} where a number is "
                f"expected; list it in data.categorical_columns or data.drop_columns"
            )
        frame[column] = converted


CSV = Dataset(
    name="csv",
    label="CSV",
    load=load_csv,
    check=check_csv,
)
