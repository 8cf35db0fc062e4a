"""How every figure looks at print size.

A venue prints a figure at the width of one column (3.5 in, IEEE and ACM) or of the page's
text (7.16 in). Every figure here is drawn at exactly one of those widths, so its text is
printed at the size it was set in: at least 7 pt (:data:`MIN_POINTS`). PDFs embed TrueType
(Type 42) fonts, which IEEE PDF eXpress and ACM's checks accept; matplotlib's default Type 3
fonts are refused.

Series differ in colour, marker and line style at once, so no curve hides another and the
figure survives greyscale printing; the colours are Okabe and Ito's palette, which readers
with the common colour-vision deficiencies tell apart (Okabe & Ito, "Color Universal
Design", 2008). Bands are 95% confidence intervals of the mean over seeds, Student's t with
n - 1 degrees of freedom (:func:`mean_ci95`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

WIDTHS = {"column": 3.5, "double": 7.16}
"""Print widths in inches: one column, and the page's text (``figure*``)."""

MIN_POINTS = 7.0
"""The smallest text size, in points, at print width."""

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
"""Okabe-Ito: blue, vermillion, bluish green, reddish purple, orange, sky blue, black, yellow."""

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 2)))

RC = {
    "pdf.fonttype": 42,  # TrueType in the PDF, not Type 3
    "ps.fonttype": 42,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "figure.titlesize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.linewidth": 0.6,
    "savefig.dpi": 300,
    "figure.dpi": 100,
}


def pyplot():
    """matplotlib's pyplot, headless, with :data:`RC` applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def new_figure(width: str = "column", height: float | None = None, **subplots: Any):
    """``plt.subplots`` at a print width (:data:`WIDTHS`) and ``height`` inches (default 0.7 x a column)."""
    if width not in WIDTHS:
        raise ValueError(f"figure width {width!r} is not one of {sorted(WIDTHS)}")
    plt = pyplot()
    subplots.setdefault("layout", "constrained")
    return plt.subplots(figsize=(WIDTHS[width], height or 0.7 * WIDTHS["column"]), **subplots)


def series(k: int) -> dict[str, Any]:
    """The ``k``-th series' colour, marker and line style (``ax.plot(..., **series(k))``)."""
    return {"color": PALETTE[k % len(PALETTE)], "marker": MARKERS[k % len(MARKERS)],
            "linestyle": LINESTYLES[k % len(LINESTYLES)]}


def ci95_half_width(std: ArrayLike, n: ArrayLike) -> NDArray[np.float64]:
    """Half-width of the 95% confidence interval of a mean from the sample ``std`` (ddof 1)
    and count ``n``: Student's t, n - 1 degrees of freedom; NaN where n < 2."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * np.asarray(std, dtype=float) / np.sqrt(n)
    return np.where(n > 1, half, np.nan)


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of its 95% confidence interval, n) (:func:`ci95_half_width`).

    One value has no interval: its half-width is NaN.
    """
    array = np.asarray(list(values), dtype=float)
    array = array[~np.isnan(array)]
    n = len(array)
    if n == 0:
        return float("nan"), float("nan"), 0
    std = array.std(ddof=1) if n > 1 else float("nan")
    return float(array.mean()), float(ci95_half_width(std, n)), n


def mean_ci95_by(grouped) -> Any:
    """:func:`mean_ci95` of each group of a pandas ``SeriesGroupBy``: a frame indexed by the
    group key with columns ``mean``, ``half`` (the 95% CI's half-width) and ``n``."""
    import pandas as pd

    return grouped.apply(lambda v: pd.Series(mean_ci95(v), index=["mean", "half", "n"])).unstack()


def smallest_text_points(fig) -> float:
    """The smallest visible text of ``fig``, in points, printed at the width it was drawn for."""
    from matplotlib.text import Text

    width = fig.get_size_inches()[0]
    target = min(WIDTHS.values(), key=lambda w: abs(w - width))
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * target / width if sizes else float("inf")


def overflow(fig, tolerance: float = 0.01) -> dict[str, float]:
    """By how many inches what ``fig`` draws reaches past each of its edges (only those over
    ``tolerance``): a legend or label cut at print size. Matplotlib's tight box counts only
    what is drawn (tick labels outside the view are not)."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    edges = {"left": -box.x0, "bottom": -box.y0, "right": box.x1 - width, "top": box.y1 - height}
    return {edge: float(by) for edge, by in edges.items() if by > tolerance}


def save(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` at the figure's own size; return the paths.

    Refuses a figure whose text would print below :data:`MIN_POINTS`, reaches past its
    edges, or whose width is not one of :data:`WIDTHS`.
    """
    plt = pyplot()
    width = fig.get_size_inches()[0]
    if not any(abs(width - w) < 0.01 for w in WIDTHS.values()):
        plt.close(fig)
        raise ValueError(f"{stem}: drawn {width:.2f} in wide; a figure is {WIDTHS['column']} or "
                         f"{WIDTHS['double']} in wide")
    smallest = smallest_text_points(fig)
    if smallest < MIN_POINTS - 1e-6:
        plt.close(fig)
        raise ValueError(f"{stem}: text of {smallest:.1f} pt at print width; the least is {MIN_POINTS} pt")
    for title in [ax.title for ax in fig.axes] + [t for t in (getattr(fig, "_suptitle", None),) if t is not None]:
        title.set_wrap(True)  # a long title (a sweep point's label) breaks into lines, not past the edge
    if cut := overflow(fig):
        plt.close(fig)
        edges = ", ".join(f"{edge} by {by:.2f} in" for edge, by in cut.items())
        raise ValueError(f"{stem}: what it draws runs past the figure's edge ({edges})")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths
