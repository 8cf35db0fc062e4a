"""FoolsGold (Fung, Yoon & Beschastnikh, "The Limitations of Federated Learning in Sybil
Settings", RAID 2020).

Sybils pushing one goal send updates that point the same way round after round; honest
nodes' histories differ. From each node's history ``h_i`` (the sum of its updates over this
and every earlier round, :attr:`RoundContext.history`), as the authors' code
(DistributedML/FoolsGold, ``deep-fg/fg/foolsgold.py`` and ``ML/code/model_aggregator.py``):

1. ``cs_ij`` = cosine similarity of ``h_i`` and ``h_j``, with ``cs_ii = 0``; ``m_i = max_j cs_ij``.
2. Pardoning: where ``m_i < m_j``, ``cs_ij *= m_i / m_j`` (an honest node that merely
   resembles a sybil is not punished as one).
3. ``alpha_i = 1 - max_j cs_ij``, clipped to [0, 1], divided by the largest (the most
   distinct node gets 1, then 0.99 so that the logit is finite).
4. Logit: ``alpha_i = kappa * (ln(alpha_i / (1 - alpha_i)) + 0.5)``, clipped to [0, 1];
   ``kappa`` is the paper's confidence parameter (1 in the authors' code).
5. Aggregate: ``sum_i alpha_i x_i / sum_i alpha_i``; the zero update when every alpha is 0.

Where we differ from the authors' code: (a) their aggregate is ``sum_i alpha_i x_i`` without
the division (a gradient step scaled by the learning rate; FLPoison too); we divide, so that
the aggregate is an update of the usual scale and the weights are shares; (b) the optional
"importance" feature weighting of their linear models (off by default in their deep-learning
code) and FLPoison's output-layer mask are not applied: similarities are over every
coordinate; (c) ``kappa`` is a parameter; (d) a node whose history is the zero vector has
similarity 0 with everyone, itself included (their ``cs - I`` would give it -1 on the
diagonal). Histories sum whole local-training updates (bflsim's rows) rather than per-step
gradients. Sample counts are not used.

``weights``: the alphas normalised (all 0 when every alpha is 0); ``scores``: each row's
largest pardoned similarity to another node (1 - the alpha before normalisation);
``rejected``: the rows with alpha 0, which contribute nothing.
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
    is_real,
)
from bflsim.aggregators.clipping import row_norms


def cosine_similarities(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cosine similarity between rows, (n, n), symmetric, in [-1, 1], zero diagonal; 0 with a zero row."""
    norms = row_norms(rows)
    units = np.zeros_like(rows)
    nonzero = norms > 0
    units[nonzero] = rows[nonzero] / norms[nonzero, None]
    similarities = np.clip(units @ units.T, -1.0, 1.0)
    similarities = (similarities + similarities.T) / 2.0
    np.fill_diagonal(similarities, 0.0)
    return similarities


def foolsgold_alphas(history: NDArray[np.float64], kappa: float = 1.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """FoolsGold's per-node learning rates alpha in [0, 1] from the (n, d) histories, and each
    node's largest pardoned similarity."""
    similarities = cosine_similarities(history)
    largest = similarities.max(axis=1)  # >= 0: the diagonal is 0
    pardoned = largest[:, None] < largest[None, :]  # then largest[j] > largest[i] >= 0
    ratio = np.divide(largest[:, None], largest[None, :], out=np.ones_like(similarities), where=pardoned)
    similarities = similarities * ratio
    largest = similarities.max(axis=1)
    alphas = np.clip(1.0 - largest, 0.0, 1.0)
    if alphas.max() == 0.0:
        return alphas, largest
    alphas = alphas / alphas.max()
    alphas[alphas == 1.0] = 0.99
    with np.errstate(divide="ignore"):  # alpha 0: ln 0 = -inf, clipped to 0 below
        logits = kappa * (np.log(alphas / (1.0 - alphas)) + 0.5)
    return np.clip(logits, 0.0, 1.0), largest


def foolsgold(updates: ArrayLike, history: ArrayLike, *, kappa: float = 1.0) -> Selection:
    """The alpha-weighted mean of the updates, alphas from the nodes' histories (Fung et al., 2020)."""
    x = as_matrix(updates)
    _check_kappa(kappa)
    past = np.asarray(history, dtype=np.float64)
    if past.shape != x.shape or not np.isfinite(past).all():
        raise AggregatorError(f"FoolsGold needs a finite history of shape {x.shape}, one row per update; "
                              f"got shape {past.shape}")
    alphas, scores = foolsgold_alphas(past, kappa)
    n, d = x.shape
    if alphas.sum() == 0.0:
        return Selection(np.zeros(d, dtype=x.dtype), np.zeros(0, dtype=np.int64), scores, np.zeros(n))
    weights = alphas / alphas.sum()
    aggregate = weights @ x.astype(np.float64, copy=False)
    return Selection(aggregate.astype(x.dtype), np.flatnonzero(weights > 0), scores, weights)


def _check_kappa(kappa: object) -> None:
    if not is_real(kappa) or not 0 < kappa < np.inf:
        raise AggregatorError(f"kappa must be a positive finite number (the logit's confidence); got {kappa!r}")


@dataclass(frozen=True)
class FoolsGold(Rule):
    """Nodes whose update histories point the same way (sybils) get learning rate ~0;
    needs :attr:`RoundContext.history`."""

    name: ClassVar[str] = "foolsgold"
    label: ClassVar[str] = "FoolsGold"
    reference: ClassVar[str] = "Fung, Yoon & Beschastnikh, RAID 2020"
    needs: ClassVar[frozenset[str]] = frozenset({"history"})

    kappa: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_kappa(self.kappa)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        x = as_matrix(updates)
        context = self.context_for(context, *x.shape)
        return foolsgold(x, context.history, kappa=self.kappa)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """The rows whose alpha is 0."""
        return np.flatnonzero(selection.weights == 0).astype(np.int64)
