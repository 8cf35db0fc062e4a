"""FLTrust (Cao, Fang, Liu & Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021).

The server trains on its own small clean root set and sends that update ``g0`` along
(:attr:`RoundContext.reference`). Each node's trust score is ``TS_i = ReLU(cos(x_i, g0))``;
each update is rescaled to ``g0``'s norm, ``x_i * ||g0|| / ||x_i||``, so no node can weigh
in by magnitude; the aggregate is ``sum_i TS_i x_i ||g0|| / ||x_i|| / sum_i TS_i``, and the
zero update when every score is 0 (no update points the server's way; FLPoison falls back to
uniform scores there, we keep the global model). A zero update has no direction and scores 0.
Sample counts are not used, as in the paper.

``weights`` are the trust scores normalised, ``TS_i / sum_j TS_j``: each row's share of the
weighted mean of the *rescaled* rows. FLTrust's coefficients on the rows themselves,
``TS_i ||g0|| / (||x_i|| sum_j TS_j)``, do not sum to 1 (they carry the rescaling), so they
cannot be read as shares; the poisoned weight is the attackers' share of the trust. All 0
when every score is 0. ``scores`` are the cosine similarities before the ReLU; ``rejected``
are the rows with ``TS_i = 0`` (pointing at least 90 degrees away from the server's update),
which contribute nothing.
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
)
from bflsim.aggregators.clipping import row_norms


def cosine_to(rows: NDArray[np.float64], direction: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cosine similarity of each row with ``direction``; 0 where either is the zero vector."""
    norms = row_norms(rows) * float(np.sqrt(direction @ direction))
    products = rows @ direction
    cosines = np.zeros(len(rows))
    nonzero = norms > 0
    cosines[nonzero] = products[nonzero] / norms[nonzero]
    return np.clip(cosines, -1.0, 1.0)


def fltrust(updates: ArrayLike, reference: ArrayLike) -> Selection:
    """Trust-weighted mean of the updates rescaled to the reference's norm (Cao et al., 2021)."""
    x = as_matrix(updates)
    rows = x.astype(np.float64, copy=False)
    g0 = np.asarray(reference, dtype=np.float64)
    if g0.shape != (x.shape[1],) or not np.isfinite(g0).all():
        raise AggregatorError(f"FLTrust needs a finite reference update of shape ({x.shape[1]},); "
                              f"got shape {g0.shape}")
    cosines = cosine_to(rows, g0)
    trust = np.maximum(cosines, 0.0)
    n = len(rows)
    if trust.sum() == 0.0:
        return Selection(np.zeros(x.shape[1], dtype=x.dtype), np.zeros(0, dtype=np.int64), cosines, np.zeros(n))
    norms = row_norms(rows)
    weights = trust / trust.sum()
    scale = np.zeros(n)
    trusted = trust > 0  # a trusted row has a direction, so a positive norm
    scale[trusted] = weights[trusted] * float(np.sqrt(g0 @ g0)) / norms[trusted]
    aggregate = scale @ rows
    return Selection(aggregate.astype(x.dtype), np.flatnonzero(trusted), cosines, weights)


@dataclass(frozen=True)
class FLTrust(Rule):
    """Updates weighted by ReLU(cosine) with the server's root-set update, rescaled to its norm;
    needs :attr:`RoundContext.reference`."""

    name: ClassVar[str] = "fltrust"
    label: ClassVar[str] = "FLTrust"
    reference: ClassVar[str] = "Cao, Fang, Liu & Gong, NDSS 2021"
    needs: ClassVar[frozenset[str]] = frozenset({"reference"})

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        x = as_matrix(updates)
        context = self.context_for(context, *x.shape)
        return fltrust(x, context.reference)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """The rows with trust score 0 (cosine <= 0 with the server's update)."""
        return np.flatnonzero(selection.weights == 0).astype(np.int64)
