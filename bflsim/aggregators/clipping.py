"""Clipping rules: norm bounding (Sun et al., 2019) and centered clipping (Karimireddy, He &
Jaggi, ICML 2021).

**Norm bounding** ("Can you really backdoor federated learning?", Sun, Kairouz, Suresh &
McMahan, 2019): each update is scaled down to norm at most ``M``,
``x_i * min(1, M / ||x_i||)``, and the clipped updates are averaged with the sample weights
``p_i``. ``M`` is ``max_norm``, or, when it is unset, the median norm of the round's updates
(then at least half of the updates pass unclipped, whatever their scale). This is the same
clipping as Flower's ``compute_clip_model_update`` (FlatClip), row by row. The paper's
optional "weak DP" noise is not added here. ``weights`` are the ``p_i`` (each row's share of
the mean of clipped rows); ``scores`` are the rows' norms before clipping; no row is
``rejected``: a clipped update still counts, with a bounded norm.

**Centered clipping** ("Learning from History for Byzantine Robust Optimization"): from a
starting point ``v_0``, ``iterations`` (L) times
``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``, an unweighted mean as in the
paper. ``v_0`` is the previous round's aggregate (:attr:`RoundContext.previous`; the zero
update in round 1 or without a context), as in the authors' code, where the aggregator keeps
its last output as the next centre. Defaults ``tau = 100``, ``L = 1``: what the authors' own
CIFAR-10 experiments run (``Clipping(tau=100, n_iter=1)`` in epfml/byzantine-robust-optimizer,
``momentum-robustness/cifar10-all.py``), and ByzFL's and FLPoison's defaults. ``tau`` is an
absolute norm, so it must be set for the scale of the updates: updates closer than ``tau`` to
the centre are not clipped at all, and with a huge ``tau`` one step is the plain mean. With
many iterations ``v`` reaches the fixed point ``sum_i clip(x_i - v, tau) = 0`` (a Huber-type
M-estimator of the centre). ``weights``: each row's coefficient in ``v_L`` written as
``a v_0 + sum_i w_i x_i`` (tracked through the iterations), normalised to sum to 1;
``scores``: each row's distance to the aggregate; no row is ``rejected``.

Both need the attackers to be a minority (``n > 2f``; :meth:`Rule.check` refuses otherwise):
centered clipping, whose steps follow the mean of the clipped differences, always; norm
bounding when its bound is the median norm, which a majority would set.
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


def row_norms(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """Euclidean norm of each row, in float64."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def clip_factors(norms: NDArray[np.float64], bound: float) -> NDArray[np.float64]:
    """``min(1, bound / norm)`` per row; 1 for a zero row (nothing to clip)."""
    factors = np.ones_like(norms)
    large = norms > bound
    factors[large] = bound / norms[large]
    return factors


def sample_weights(num_samples: ArrayLike | None, n: int, rule: str) -> NDArray[np.float64]:
    """The normalised sample counts (uniform without them); counts must be finite, >= 0,
    one per update, with a positive total."""
    if num_samples is None:
        return np.full(n, 1.0 / n)
    counts = np.asarray(num_samples, dtype=np.float64)
    if counts.shape != (n,) or not np.isfinite(counts).all() or (counts < 0).any() or counts.sum() <= 0:
        raise AggregatorError(
            f"{rule} needs num_samples as {n} finite counts >= 0 with a positive total, one per update; "
            f"got {counts.tolist()}"
        )
    return counts / counts.sum()


def norm_bounding(
    updates: ArrayLike, num_samples: ArrayLike | None = None, *, max_norm: float | None = None
) -> Selection:
    """Sample-weighted mean of the updates clipped to norm ``max_norm`` (None: the round's median norm)."""
    x = as_matrix(updates)
    n = x.shape[0]
    weights = sample_weights(num_samples, n, "norm bounding")
    _check_max_norm(max_norm)
    norms = row_norms(x)
    bound = float(np.median(norms)) if max_norm is None else float(max_norm)
    coefficients = weights * clip_factors(norms, bound)
    aggregate = coefficients @ x.astype(np.float64, copy=False)
    return Selection(aggregate.astype(x.dtype), np.flatnonzero(weights > 0), norms, weights)


def centered_clipping(
    updates: ArrayLike, start: ArrayLike | None = None, *, tau: float = 100.0, iterations: int = 1
) -> Selection:
    """``iterations`` steps ``v <- v + mean_i clip(x_i - v, tau)`` from ``start`` (None: zeros)."""
    x = as_matrix(updates)
    _check_centered_clipping(tau, iterations)
    rows = x.astype(np.float64, copy=False)
    n, d = rows.shape
    centre = np.zeros(d) if start is None else np.asarray(start, dtype=np.float64)
    if centre.shape != (d,) or not np.isfinite(centre).all():
        raise AggregatorError(f"centered clipping needs a finite start of shape ({d},); got shape {centre.shape}")
    on_start, on_rows = 1.0, np.zeros(n)  # centre = on_start * start + on_rows @ rows
    for _ in range(iterations):
        factors = clip_factors(row_norms(rows - centre), tau)
        centre = centre + (factors / n) @ (rows - centre)
        kept = factors.mean()  # centre_new = (1 - kept) centre + (factors / n) @ rows
        on_start, on_rows = (1.0 - kept) * on_start, (1.0 - kept) * on_rows + factors / n
    weights = on_rows / on_rows.sum()  # every factor is > 0, so the sum is 1 - on_start > 0
    return Selection(centre.astype(x.dtype), np.arange(n, dtype=np.int64), row_norms(rows - centre), weights)


def _check_max_norm(max_norm: object) -> None:
    if max_norm is not None and (not is_real(max_norm) or not 0 < max_norm < np.inf):
        raise AggregatorError(
            f"max_norm must be a positive finite number (or unset for the round's median norm); got {max_norm!r}"
        )


def _check_centered_clipping(tau: object, iterations: object) -> None:
    if not is_real(tau) or not 0 < tau < np.inf:
        raise AggregatorError(f"tau must be a positive finite number (the clipping radius); got {tau!r}")
    if integer("iterations", iterations) < 1:
        raise AggregatorError(f"iterations must be >= 1; got {iterations}")


@dataclass(frozen=True)
class NormBounding(Rule):
    """Sample-weighted mean of the updates clipped to norm ``max_norm`` (unset: the round's median norm)."""

    name: ClassVar[str] = "norm_bounding"
    label: ClassVar[str] = "Norm bounding"
    reference: ClassVar[str] = "Sun, Kairouz, Suresh & McMahan, arXiv:1911.07963, 2019"

    max_norm: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_max_norm(self.max_norm)

    def check(self, num_clients: int) -> None:
        """With the median norm as bound (``max_norm`` unset), attackers must be a minority."""
        super().check(num_clients)
        if self.max_norm is None:
            check_honest_majority("Norm bounding at the median norm", num_clients, self.num_malicious,
                                  "a majority of attackers sets the median norm, the bound (set max_norm)")

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return norm_bounding(updates, num_samples, max_norm=self.max_norm)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """None: every update counts, clipped."""
        return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class CenteredClipping(Rule):
    """``iterations`` steps of clipping the updates around a centre that starts at the
    previous round's aggregate; needs :attr:`RoundContext.previous` (None in round 1: zeros)."""

    name: ClassVar[str] = "centered_clipping"
    label: ClassVar[str] = "Centered clipping"
    reference: ClassVar[str] = "Karimireddy, He & Jaggi, ICML 2021"
    needs: ClassVar[frozenset[str]] = frozenset({"previous"})

    tau: float = 100.0
    iterations: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_centered_clipping(self.tau, self.iterations)

    def check(self, num_clients: int) -> None:
        super().check(num_clients)
        check_honest_majority("Centered clipping", num_clients, self.num_malicious,
                              "each step moves the centre by the mean of clipped differences, which a "
                              "majority of attackers steers")

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        x = as_matrix(updates)
        context = self.context_for(context, *x.shape)
        return centered_clipping(x, context.previous, tau=self.tau, iterations=self.iterations)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """None: every update counts, clipped around the centre."""
        return np.zeros(0, dtype=np.int64)
