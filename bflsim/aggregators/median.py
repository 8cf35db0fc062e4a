"""Coordinate-wise median and trimmed mean (Yin et al., ICML 2018).

Per coordinate, both average the middle values: the median the one or two middles, the
trimmed mean what is left after dropping ``k = int(beta * n)`` values at each end (computed
as in ``scipy.stats.trim_mean`` and Flower's ``FedTrimmedAvg``). ``selected``: rows that
give a kept value in at least one coordinate; ``scores``: the fraction of coordinates where
a row's value is kept. Tied values are credited to one of the tied rows, deterministically.
Before a run, a trim fraction that trims nothing at the planned cohort size is refused
(:func:`check_trims_one`): that trimmed mean would be the plain mean.
"""

from __future__ import annotations

import math
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


def check_median(num_clients: int) -> None:
    """The median needs at least one client."""
    if integer("num_clients", num_clients) < 1:
        raise AggregatorError(f"median needs at least one client; got n={num_clients}")


def check_trimmed_mean(num_clients: int, trim_fraction: float | None) -> None:
    """Trimmed mean drops ``int(beta * n)`` rows at each end; beta in [0, 0.5) keeps 2k < n."""
    n = integer("num_clients", num_clients)
    if n < 1:
        raise AggregatorError(f"trimmed mean needs at least one client; got n={n}")
    _check_beta(trim_fraction)


def check_trims_one(num_clients: int, trim_fraction: float) -> None:
    """Refuse a trim fraction that trims no row at ``num_clients`` (``int(beta * n) = 0``):
    that trimmed mean is the plain mean, no defence at all. Names the smallest beta that trims one."""
    n = integer("num_clients", num_clients)
    if int(trim_fraction * n) >= 1:
        return
    if n <= 2:
        raise AggregatorError(
            f"trim_fraction (beta) = {trim_fraction} with n={n} clients: a trimmed mean of {n} rows cannot trim one "
            f"from each end and keep any; use more nodes or the median"
        )
    smallest = math.ceil(1000 / n) / 1000  # 1/n rounded up to 3 decimals, so int(beta * n) = 1
    raise AggregatorError(
        f"trim_fraction (beta) = {trim_fraction} trims int({trim_fraction} * {n}) = 0 rows at each end with "
        f"n={n} clients, so the trimmed mean is the plain mean; the smallest trim_fraction that trims "
        f"one row at n={n} is {smallest} (1/n)"
    )


def _check_beta(beta: object) -> None:
    if not is_real(beta) or not 0 <= beta < 0.5:
        raise AggregatorError(
            f"trim_fraction (beta) must be in [0, 0.5), so that the trimmed mean trims "
            f"int(beta * n) rows from each end and keeps some; got trim_fraction={beta!r}"
        )


def median(updates: ArrayLike) -> Selection:
    """Coordinate-wise median; the mean of the two middles for even n."""
    x = as_matrix(updates)
    check_median(x.shape[0])
    return _middle_mean(x, num_trimmed=(x.shape[0] - 1) // 2)


def trimmed_mean(updates: ArrayLike, trim_fraction: float) -> Selection:
    """Coordinate-wise mean after dropping ``k = int(beta * n)`` rows at each end."""
    x = as_matrix(updates)
    check_trimmed_mean(x.shape[0], trim_fraction)
    return _middle_mean(x, num_trimmed=int(trim_fraction * x.shape[0]))


def _middle_mean(x: NDArray[np.floating], num_trimmed: int) -> Selection:
    """Per column, average the values ranked k .. n-k-1, and credit the rows they came from."""
    n, d = x.shape
    k = num_trimmed
    order = np.argpartition(x, (k, n - k - 1), axis=0)[k : n - k]  # rows of the middle values
    aggregate = np.take_along_axis(x, order, axis=0).mean(axis=0, dtype=np.float64)
    counts = np.bincount(order.ravel(), minlength=n).astype(np.float64)
    return Selection(
        aggregate.astype(x.dtype), np.flatnonzero(counts), counts / d, counts / (d * (n - 2 * k))
    )


@dataclass(frozen=True)
class Median(Rule):
    """Coordinate-wise median."""

    name: ClassVar[str] = "median"
    label: ClassVar[str] = "Median"
    reference: ClassVar[str] = "Yin et al., ICML 2018"

    def check(self, num_clients: int) -> None:
        check_median(num_clients)
        super().check(num_clients)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return median(updates)


@dataclass(frozen=True)
class TrimmedMean(Rule):
    """Coordinate-wise mean without the ``int(trim_fraction * n)`` lowest and highest values."""

    name: ClassVar[str] = "trimmed_mean"
    label: ClassVar[str] = "Trimmed mean"
    reference: ClassVar[str] = "Yin et al., ICML 2018"

    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta(self.trim_fraction)

    def check(self, num_clients: int) -> None:
        check_trimmed_mean(num_clients, self.trim_fraction)
        super().check(num_clients)

    def check_cohort(self, cohort_size: int) -> None:
        super().check_cohort(cohort_size)
        check_trims_one(cohort_size, self.trim_fraction)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return trimmed_mean(updates, self.trim_fraction)
