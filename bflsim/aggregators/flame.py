"""FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022).

Three steps on the round's updates:

1. Clustering: HDBSCAN (scikit-learn's) on the pairwise cosine distances ``1 - cos(x_i, x_j)``
   with ``min_cluster_size = n // 2 + 1``, ``min_samples = 1`` and a single cluster allowed,
   as in the paper; the admitted updates are the cluster's (a cluster holds a majority, so
   there is at most one; HDBSCAN's noise points are the outliers). The paper clusters the
   local models; we cluster their updates (local - global), whose directions differ where
   the models' own, dominated by the shared global model, hardly do (FLPoison does the same).
   A zero update has cosine 0 with every other, distance 1.
2. Clipping: ``S`` = the median Euclidean norm of *all* n updates; each admitted update is
   clipped to norm ``S`` and the clipped updates are averaged (unweighted, as in the paper).
3. Noise: Gaussian noise of standard deviation ``noise_lambda * S`` is added to every
   coordinate of the aggregate, drawn from :meth:`RoundContext.rng` (the round's seed, which
   the audit replays). ``noise_lambda`` defaults to 0.001, the paper's noise level for image
   classification and IoT intrusion detection (0.01 for word prediction); 0 adds none.

``weights``: ``1 / k`` on the k admitted rows (the noise is nobody's); ``scores``: each row's
median cosine distance to the other rows; ``rejected``: the rows outside the cluster. Should
HDBSCAN admit no row, the aggregate is the zero update (no noise), ``weights`` all 0.
Before a run, FLAME refuses ``num_malicious >= n / 2``: a majority cluster can then be the
attackers'.
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
    is_real,
)
from bflsim.aggregators.clipping import clip_factors, row_norms


def cosine_distances(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 - cos`` between rows, (n, n), symmetric, zero diagonal, in [0, 2]; a zero row is at 1
    from every other."""
    norms = row_norms(rows)
    units = np.zeros_like(rows)
    nonzero = norms > 0
    units[nonzero] = rows[nonzero] / norms[nonzero, None]
    distances = 1.0 - units @ units.T
    distances = np.clip((distances + distances.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def majority_cluster(distances: NDArray[np.float64]) -> NDArray[np.int64]:
    """Ascending rows of the largest HDBSCAN cluster (min_cluster_size n // 2 + 1, min_samples 1,
    one cluster allowed) on the precomputed ``distances``; empty if every row is noise."""
    n = len(distances)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    # scikit-learn's import takes about a second: only rounds that cluster pay it
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed", allow_single_cluster=True, copy=True
    ).fit(distances).labels_
    clusters, sizes = np.unique(labels[labels >= 0], return_counts=True)
    if clusters.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(labels == clusters[np.argmax(sizes)]).astype(np.int64)


def flame(updates: ArrayLike, *, noise_lambda: float = 0.001, rng: np.random.Generator | None = None) -> Selection:
    """FLAME's clustering, median-norm clipping and noise (Nguyen et al., 2022).

    ``rng`` draws the noise (default: a generator seeded 0, so a call is reproducible).
    """
    x = as_matrix(updates)
    _check_noise_lambda(noise_lambda)
    rows = x.astype(np.float64, copy=False)
    n, d = rows.shape
    distances = cosine_distances(rows)
    kept = majority_cluster(distances)
    norms = row_norms(rows)
    bound = float(np.median(norms))
    scores = np.median(distances[~np.eye(n, dtype=bool)].reshape(n, n - 1), axis=1) if n > 1 else np.zeros(1)
    weights = np.zeros(n)
    if kept.size == 0:
        return Selection(np.zeros(d, dtype=x.dtype), kept, scores, weights)
    weights[kept] = 1.0 / kept.size
    aggregate = (weights[kept] * clip_factors(norms[kept], bound)) @ rows[kept]
    rng = np.random.default_rng(0) if rng is None else rng
    aggregate += rng.normal(0.0, noise_lambda * bound, size=d)
    return Selection(aggregate.astype(x.dtype), kept, scores, weights)


def check_flame(num_clients: int, num_malicious: int) -> None:
    """FLAME admits one cluster of more than half the updates: it needs n > 2f."""
    check_honest_majority("FLAME", num_clients, num_malicious,
                          "it admits one cluster of n // 2 + 1 updates, which the attackers can fill")


def _check_noise_lambda(noise_lambda: object) -> None:
    if not is_real(noise_lambda) or not 0 <= noise_lambda < np.inf:
        raise AggregatorError(f"noise_lambda must be a finite number >= 0; got {noise_lambda!r}")


@dataclass(frozen=True)
class Flame(Rule):
    """HDBSCAN on cosine distances admits a majority cluster; its updates are clipped to the
    median norm and averaged; Gaussian noise of scale ``noise_lambda`` x that norm is added."""

    name: ClassVar[str] = "flame"
    label: ClassVar[str] = "FLAME"
    reference: ClassVar[str] = "Nguyen et al., USENIX Security 2022"

    noise_lambda: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_noise_lambda(self.noise_lambda)

    def check(self, num_clients: int) -> None:
        super().check(num_clients)
        check_flame(num_clients, self.num_malicious)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        x = as_matrix(updates)
        context = self.context_for(context, *x.shape)
        return flame(x, noise_lambda=self.noise_lambda, rng=context.rng())

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """The rows outside the admitted cluster (HDBSCAN's noise)."""
        return np.flatnonzero(selection.weights == 0).astype(np.int64)
