"""Divide-and-Conquer, DnC (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing
Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2).

``iterations`` (niters) times: draw ``subsample`` (b) of the d coordinates without
replacement with :meth:`RoundContext.rng` (when d <= b, all of them, once: the iterations
would agree), centre the sampled
updates at their mean, take the top right singular vector ``v`` of the centred matrix, score
each row by its squared projection ``<x_i - mu, v>^2``, and keep all but the
``int(filter_fraction * f)`` highest-scoring rows (f = ``num_malicious``, the rule's assumed
count; ties keep the lower row index). The rows kept in every iteration are averaged
(unweighted, as in the paper); if no row is kept in every iteration, the aggregate is the
zero update and ``weights`` are all 0. DnC needs an honest majority (``n > 2f``) and
``int(c f) < n``; before a run it also refuses a filter that removes no row although
attackers are assumed (``int(c f) = 0`` with f >= 1: the plain mean).

Defaults: ``iterations = 5``, ``subsample = 10000``, ``filter_fraction = 1.0``: the paper's c
= 1 and b = 10,000 as Blades implements DnC (``DnC(num_byzantine, sub_dim=10000,
num_iters=5, filter_frac=1.0)``); FLPoison also runs 5 iterations with c = 1 but samples 20%
of the coordinates.

``scores``: per row, the largest over the iterations of its outlier score divided by that
iteration's median score (scale-free; over the mean where more than half the rows score 0).
``rejected`` (what the chain counts against a node) are the rows left out of the average
whose score exceeds ``factor`` (the experiment's ``reject_factor``), not every row left out:
DnC always leaves ``int(c f)`` rows out, so in a round without attackers it would accuse
honest nodes every round and reputation would revoke them (the same guard as Krum's,
:func:`bflsim.aggregators.base.top_f_outliers`).
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
    check_honest_majority,
    integer,
    is_real,
)


def dnc(
    updates: ArrayLike,
    num_malicious: int,
    *,
    iterations: int = 5,
    subsample: int = 10000,
    filter_fraction: float = 1.0,
    rng: np.random.Generator | None = None,
) -> Selection:
    """Mean of the rows that no iteration's spectral filter removes (Shejwalkar & Houmansadr, 2021).

    ``rng`` draws the coordinates (default: a generator seeded 0, so a call is reproducible).
    """
    x = as_matrix(updates)
    _check_parameters(iterations, subsample, filter_fraction)
    n, d = x.shape
    removed_per_iteration = int(filter_fraction * integer("num_malicious", num_malicious))
    check_dnc(n, num_malicious, filter_fraction)
    rng = np.random.default_rng(0) if rng is None else rng
    kept = np.ones(n, dtype=bool)
    scores = np.zeros(n)
    for _ in range(iterations if d > subsample else 1):  # with every coordinate, the iterations agree
        columns = np.sort(rng.choice(d, size=subsample, replace=False)) if d > subsample else slice(None)
        sample = x[:, columns].astype(np.float64)
        outlier = top_projections(sample - sample.mean(axis=0))
        order = np.lexsort((-np.arange(n), -outlier))  # highest first; ties: the higher index first
        kept[order[:removed_per_iteration]] = False
        scores = np.maximum(scores, _relative(outlier))
    selected = np.flatnonzero(kept).astype(np.int64)
    weights = np.zeros(n)
    if selected.size == 0:
        return Selection(np.zeros(d, dtype=x.dtype), selected, scores, weights)
    weights[selected] = 1.0 / selected.size
    aggregate = x[selected].mean(axis=0, dtype=np.float64)
    return Selection(aggregate.astype(x.dtype), selected, scores, weights)


def top_projections(centred: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row's squared projection on the top right singular vector v of ``centred``.

    With ``centred = U S V^T``, ``centred @ v = s_1 u_1``, so the scores are ``s_1^2 u_1^2``: the
    top eigenpair of the (n, n) Gram matrix gives them without the (n, b) SVD (a few ms
    instead of tens at n = 20, b = 10,000).
    """
    eigenvalues, eigenvectors = np.linalg.eigh(centred @ centred.T)
    return max(float(eigenvalues[-1]), 0.0) * eigenvectors[:, -1] ** 2


def _relative(outlier: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scores over their median (over their mean where the median is 0; zeros if all are 0)."""
    scale = float(np.median(outlier)) or float(outlier.mean())
    return outlier / scale if scale > 0 else np.zeros_like(outlier)


def check_dnc(num_clients: int, num_malicious: int, filter_fraction: float) -> None:
    """DnC needs an honest majority (n > 2f), and each iteration, removing int(c f) rows, must
    keep one (int(c f) < n)."""
    check_honest_majority("DnC", num_clients, num_malicious,
                          "the top singular direction separates a minority from the bulk, and the rows it "
                          "removes are the far side's")
    n, f = integer("num_clients", num_clients), integer("num_malicious", num_malicious)
    removed = int(filter_fraction * f)
    if removed >= n:
        raise AggregatorError(
            f"DnC cannot remove int(filter_fraction * f) = int({filter_fraction} * {f}) = {removed} of n={n} "
            f"updates and keep any; it needs int(filter_fraction * num_malicious) < n"
        )


def _check_parameters(iterations: object, subsample: object, filter_fraction: object) -> None:
    if integer("iterations", iterations) < 1:
        raise AggregatorError(f"iterations must be >= 1; got {iterations}")
    if integer("subsample", subsample) < 1:
        raise AggregatorError(f"subsample must be >= 1 (coordinates drawn per iteration); got {subsample}")
    if not is_real(filter_fraction) or not 0 < filter_fraction < np.inf:
        raise AggregatorError(
            f"filter_fraction must be a positive finite number (c: each iteration removes int(c * f) rows); "
            f"got {filter_fraction!r}"
        )


@dataclass(frozen=True)
class DnC(Rule):
    """Spectral filtering on random coordinate subsets: the rows no iteration removes are averaged."""

    name: ClassVar[str] = "dnc"
    label: ClassVar[str] = "DnC"
    reference: ClassVar[str] = "Shejwalkar & Houmansadr, NDSS 2021"

    iterations: int = 5
    subsample: int = 10000
    filter_fraction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_parameters(self.iterations, self.subsample, self.filter_fraction)

    def check(self, num_clients: int) -> None:
        super().check(num_clients)
        check_dnc(num_clients, self.num_malicious, self.filter_fraction)

    def check_cohort(self, cohort_size: int) -> None:
        """Also refuses a filter that removes no row although attackers are assumed (a plain mean)."""
        super().check_cohort(cohort_size)
        if self.num_malicious >= 1 and int(self.filter_fraction * self.num_malicious) == 0:
            raise AggregatorError(
                f"filter_fraction = {self.filter_fraction} removes int({self.filter_fraction} * "
                f"{self.num_malicious}) = 0 rows per iteration with num_malicious={self.num_malicious}, "
                f"so DnC is the plain mean; use filter_fraction >= {1 / self.num_malicious:.3g}"
            )

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        x = as_matrix(updates)
        context = self.context_for(context, *x.shape)
        return dnc(x, self.num_malicious, iterations=self.iterations, subsample=self.subsample,
                   filter_fraction=self.filter_fraction, rng=context.rng())

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """The rows left out whose relative outlier score exceeds ``factor``."""
        left_out = selection.weights == 0
        return np.flatnonzero(left_out & (selection.scores > factor)).astype(np.int64)
