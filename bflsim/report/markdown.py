"""One Markdown table writer for every report."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

NOT_AVAILABLE = "n/a"


def to_markdown(table: pd.DataFrame, formats: Mapping[str, str] | None = None, default: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table.

    ``formats`` maps columns to format strings; other floats use ``default``. Missing values
    print as ``n/a``; numeric columns are right-aligned.
    """
    formats = formats or {}
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---:" if is_numeric_column(table[c]) else "---" for c in table.columns) + "|"
    lines = [header, rule]
    for row in table.itertuples(index=False):
        cells = []
        for column, value in zip(table.columns, row, strict=True):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                cells.append(NOT_AVAILABLE)
            elif column in formats:
                cells.append(formats[column].format(value))
            elif isinstance(value, float | np.floating):
                cells.append(default.format(value))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_NUMBER_TEXT = re.compile(r"^[-+]?[\d.,]+%?( ± [\d.,]+%?)?$")


def is_numeric_column(column: pd.Series) -> bool:
    """Numbers, or text that prints numbers (``0.9887 ± 0.0012``, ``n/a`` aside): right-aligned."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    texts = [v for v in column if isinstance(v, str) and v != NOT_AVAILABLE]
    return bool(texts) and all(_NUMBER_TEXT.match(v) for v in texts)
