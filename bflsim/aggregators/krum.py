"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017; needs n > 2f + 2).

Krum score of row i: the sum of squared distances to its ``n - f - 2`` nearest other rows
(lower is better). Krum keeps the row with the lowest score; Multi-Krum averages the ``m``
rows with the lowest scores, m = n - f by default (El Mhamdi et al., ICML 2018). Krum is
Multi-Krum with m = 1, as in Flower. Ties (equal scores) go to the lowest row index.

As outliers (what the chain counts against a node) both report, among the f rows with the
highest scores, those scoring above ``factor`` times the median score
(:func:`bflsim.aggregators.base.top_f_outliers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.aggregators.base import (
    AggregatorError,
    RoundContext,
    Rule,
    Selection,
    as_matrix,
    integer,
    sq_distances,
    top_f_outliers,
)


def check_krum(num_clients: int, num_malicious: int, *, rule: str = "Krum") -> None:
    """Krum tolerates f malicious among n only if n > 2f + 2 (Blanchard et al., 2017)."""
    n, f = integer("num_clients", num_clients), integer("num_malicious", num_malicious)
    if f < 0:
        raise AggregatorError(f"{rule}: num_malicious must be >= 0; got f={f}")
    if n <= 2 * f + 2:
        raise AggregatorError(
            f"{rule} cannot tolerate f={f} malicious among n={n} clients: "
            f"it needs n > 2f + 2 (n >= {2 * f + 3})"
        )


def check_multikrum(num_clients: int, num_malicious: int, num_selected: int) -> None:
    """Multi-Krum needs n > 2f + 2 and 1 <= m <= n - f (more would admit a malicious row)."""
    check_krum(num_clients, num_malicious, rule="Multi-Krum")
    m, n, f = integer("num_selected", num_selected), num_clients, num_malicious
    if not 1 <= m <= n - f:
        raise AggregatorError(
            f"Multi-Krum cannot select m={m} of n={n} updates with f={f} malicious: "
            f"it needs 1 <= m <= n - f (m <= {n - f}), or a malicious update always gets in"
        )


def neighbour_scores(distances: NDArray[np.float64], num_neighbours: int) -> NDArray[np.float64]:
    """Each row's sum of squared distances to its ``num_neighbours`` nearest other rows, from an
    (n, n) matrix of squared distances with a zero diagonal (left unchanged)."""
    others = distances.copy()
    np.fill_diagonal(others, np.inf)  # a row is not its own neighbour
    return np.sort(others, axis=1)[:, :num_neighbours].sum(axis=1)


def krum_scores(updates: ArrayLike, num_malicious: int) -> NDArray[np.float64]:
    """Sum of squared distances from each row to its ``n - f - 2`` nearest other rows."""
    x = as_matrix(updates, check_finite=False)  # sq_distances refuses NaN and inf
    check_krum(x.shape[0], num_malicious)
    return _scores(x, num_malicious)


def multikrum(updates: ArrayLike, num_malicious: int, num_selected: int | None = None) -> Selection:
    """Plain mean of the ``m`` rows with the lowest Krum scores (Blanchard et al., 2017).

    ``num_selected=None`` takes m = n - f, the choice of El Mhamdi et al. (2018). This is
    the one-shot rule; Bulyan's iterated Krum re-scores after each pick and is not this.
    """
    x = as_matrix(updates, check_finite=False)  # sq_distances refuses NaN and inf
    n, f = x.shape[0], integer("num_malicious", num_malicious)
    m = n - f if num_selected is None else num_selected
    check_multikrum(n, f, m)
    return _select_lowest(x, f, m)


def krum(updates: ArrayLike, num_malicious: int) -> Selection:
    """The row with the lowest Krum score (Blanchard et al., 2017); Multi-Krum with m = 1."""
    x = as_matrix(updates, check_finite=False)  # sq_distances refuses NaN and inf
    check_krum(x.shape[0], num_malicious)
    return _select_lowest(x, num_malicious, 1)


def _scores(x: NDArray[np.floating], num_malicious: int) -> NDArray[np.float64]:
    """Krum scores of a matrix whose shape, dtype, f and m are checked (finiteness: below)."""
    return neighbour_scores(sq_distances(x), x.shape[0] - num_malicious - 2)


def _select_lowest(x: NDArray[np.floating], num_malicious: int, num_selected: int) -> Selection:
    """Multi-Krum's selection and plain mean, on a checked matrix with checked f and m."""
    n, m = x.shape[0], num_selected
    scores = _scores(x, num_malicious)
    selected = np.sort(np.argsort(scores, kind="stable")[:m])  # stable: ties to lowest index
    weights = np.zeros(n)
    weights[selected] = 1.0 / m
    if m == 1:  # the mean of one row is the row
        aggregate = x[selected[0]].copy()
    else:
        aggregate = x[selected].mean(axis=0, dtype=np.float64).astype(x.dtype)
    return Selection(aggregate, selected, scores, weights)


@dataclass(frozen=True)
class MultiKrum(Rule):
    """Mean of the ``num_selected`` rows with the lowest Krum scores (default n - f)."""

    name: ClassVar[str] = "multikrum"
    label: ClassVar[str] = "Multi-Krum"
    reference: ClassVar[str] = "Blanchard et al., NeurIPS 2017; m = n - f: El Mhamdi et al., ICML 2018"

    num_selected: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_selected is not None and integer("num_selected", self.num_selected) < 1:
            raise AggregatorError(f"num_selected must be >= 1 (or unset for n - f); got {self.num_selected}")

    @classmethod
    def max_tolerated(cls, num_clients: int) -> int:
        """Krum needs n > 2f + 2."""
        return max(0, (int(num_clients) - 3) // 2)

    def check(self, num_clients: int) -> None:
        m = num_clients - self.num_malicious if self.num_selected is None else self.num_selected
        check_multikrum(num_clients, self.num_malicious, m)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return multikrum(updates, self.num_malicious, self.num_selected)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        return top_f_outliers(selection, self.num_malicious, factor)


@dataclass(frozen=True)
class Krum(MultiKrum):
    """The single row with the lowest Krum score: Multi-Krum with m = 1."""

    name: ClassVar[str] = "krum"
    label: ClassVar[str] = "Krum"
    reference: ClassVar[str] = "Blanchard et al., NeurIPS 2017"

    num_selected: int | None = field(default=1, init=False)

    def check(self, num_clients: int) -> None:
        check_krum(num_clients, self.num_malicious)
