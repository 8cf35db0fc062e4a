"""Geometric median: robust federated aggregation, RFA (Pillutla, Kakade & Harchaoui, IEEE TSP 2022).

The aggregate is the point ``v`` minimising ``sum_i a_i * ||x_i - v||``, with ``a_i`` the
rows' sample counts (uniform without them): unlike the mean, fewer than half the weight,
however far away, cannot drag it arbitrarily far. It has no closed form; the smoothed
Weiszfeld iteration of the paper computes it: ``v <- sum_i b_i x_i / sum_i b_i`` with
``b_i = a_i / max(nu, ||x_i - v||)``, from the weighted mean, until ``v`` moves by less
than ``tolerance`` times the rows' weighted median distance to it, or after ``max_iter``
steps (when the median is one of the rows, holding half the weight or more, the steps shrink
only geometrically and it runs until that row's distance vanishes). ``weights`` are the
final ``b_i`` normalised (each row's coefficient in the aggregate), ``scores`` each row's
distance to the aggregate; every row contributes, so none is ``rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    is_real,
)


def geometric_median(
    updates: ArrayLike, num_samples: ArrayLike | None = None, *, max_iter: int = 100, tolerance: float = 1e-7,
    smoothing: float = 1e-12,
) -> Selection:
    """The (sample-weighted) geometric median of the rows by the smoothed Weiszfeld iteration."""
    x = as_matrix(updates)
    n = x.shape[0]
    alphas = np.ones(n) if num_samples is None else np.asarray(num_samples, dtype=np.float64)
    if alphas.shape != (n,) or not np.isfinite(alphas).all() or (alphas <= 0).any():
        raise AggregatorError(f"geometric median needs one positive sample count per update; got {alphas.tolist()}")
    _check_parameters(max_iter, tolerance, smoothing)
    rows = x.astype(np.float64)
    alphas = alphas / alphas.sum()
    median = alphas @ rows
    betas = alphas
    for _ in range(max_iter):
        distances = np.sqrt(((rows - median) ** 2).sum(axis=1))
        scale = _weighted_median(distances, alphas)  # the bulk's distance, not an outlier's
        if scale == 0.0:  # half the weight sits on the median already
            break
        betas = alphas / np.maximum(distances, smoothing * scale)
        betas /= betas.sum()
        moved = betas @ rows
        step = float(np.sqrt(((moved - median) ** 2).sum()))
        median = moved
        if step <= tolerance * scale:
            break
    distances = np.sqrt(((rows - median) ** 2).sum(axis=1))
    return Selection(median.astype(x.dtype), np.arange(n, dtype=np.int64), distances, betas)


def _weighted_median(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """The smallest value with at least half the (normalised) weight at or below it."""
    order = np.argsort(values, kind="stable")
    position = int(np.searchsorted(np.cumsum(weights[order]), 0.5 - 1e-12))
    return float(values[order[min(position, len(values) - 1)]])


def _check_parameters(max_iter: object, tolerance: object, smoothing: object) -> None:
    if integer("max_iter", max_iter) < 1:
        raise AggregatorError(f"max_iter must be >= 1; got {max_iter}")
    if not is_real(tolerance) or not 0 < tolerance < 1:
        raise AggregatorError(f"tolerance must be a number in (0, 1); got {tolerance!r}")
    if not is_real(smoothing) or not 0 < smoothing < 1:
        raise AggregatorError(f"smoothing must be a number in (0, 1); got {smoothing!r}")


@dataclass(frozen=True)
class GeometricMedian(Rule):
    """The sample-weighted geometric median of the updates (RFA)."""

    name: ClassVar[str] = "geometric_median"
    label: ClassVar[str] = "Geometric median"
    reference: ClassVar[str] = "Pillutla, Kakade & Harchaoui, IEEE TSP 2022 (RFA)"

    max_iter: int = 100
    tolerance: float = 1e-7
    smoothing: float = 1e-12

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_parameters(self.max_iter, self.tolerance, self.smoothing)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return geometric_median(updates, num_samples, max_iter=self.max_iter, tolerance=self.tolerance,
                                smoothing=self.smoothing)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """None: every update contributes, the far ones with little weight."""
        return np.zeros(0, dtype=np.int64)
