"""Tables over seeds: mean and 95% confidence interval, written as CSV, Markdown and LaTeX.

:func:`over_runs` turns one row per run into one row per setting with, for each value, its
mean, the half-width of its 95% confidence interval (Student's t, n - 1 degrees of freedom:
:func:`bflsim.report.style.mean_ci95`) and the number of runs. :func:`write_table` writes a
shown table three ways: ``.csv`` (the numbers), ``.md`` and ``.tex`` (``booktabs`` rules,
pandas' own LaTeX writer), with cells such as ``0.9887 ± 0.0012``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.report.markdown import NOT_AVAILABLE, is_numeric_column, to_markdown
from bflsim.report.style import mean_ci95


def over_runs(rows: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys``: ``n_runs``, and ``<value>`` (mean) and ``<value>_ci95`` for each value."""
    out = []
    for key, group in rows.groupby(list(keys), sort=False, observed=True, dropna=False):
        record = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        record["n_runs"] = len(group)
        for value in values:
            mean, half, _ = mean_ci95(group[value].astype(float))
            record[value], record[f"{value}_ci95"] = mean, half
        out.append(record)
    return pd.DataFrame(out, columns=[*keys, "n_runs", *(c for v in values for c in (v, f"{v}_ci95"))])


def mean_ci_text(mean: float, half: float, fmt: str = "{:.4f}") -> str:
    """``0.9887 ± 0.0012``; the mean alone when there is no interval (one run); ``n/a`` for none."""
    if mean is None or pd.isna(mean):
        return NOT_AVAILABLE
    text = fmt.format(mean)
    return text if half is None or pd.isna(half) else f"{text} ± {fmt.format(half)}"


def shown_with_ci(table: pd.DataFrame, columns: Mapping[str, str], fmt: str = "{:.4f}") -> pd.DataFrame:
    """``table`` with each ``column`` (and its ``_ci95``) as one text column named ``columns[column]``."""
    shown = table.copy()
    for column, header in columns.items():
        half = shown[f"{column}_ci95"] if f"{column}_ci95" in shown else pd.Series(np.nan, index=shown.index)
        shown[header] = [mean_ci_text(m, h, fmt) for m, h in zip(shown[column], half, strict=True)]
    return shown


def to_latex(table: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A ``booktabs`` tabular (``\\toprule``, ``\\midrule``, ``\\bottomrule``); numbers right-aligned."""
    formats = formats or {}
    cells = table.copy()
    for column in cells.columns:
        fmt = formats.get(column)
        cells[column] = [NOT_AVAILABLE if not isinstance(v, str) and pd.isna(v)
                         else fmt.format(v) if fmt and not isinstance(v, str) else str(v) for v in table[column]]
    align = "".join("r" if is_numeric_column(table[c]) else "l" for c in table.columns)
    latex = cells.to_latex(index=False, escape=True, column_format=align)
    return latex.replace("±", r"$\pm$")


def write_table(table: pd.DataFrame, shown: pd.DataFrame, stem: str | Path,
                formats: Mapping[str, str] | None = None) -> list[Path]:
    """``stem.csv`` (``table``, the numbers), ``stem.md`` and ``stem.tex`` (``shown``); the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(shown, formats))
    paths[2].write_text(to_latex(shown, formats))
    return paths
