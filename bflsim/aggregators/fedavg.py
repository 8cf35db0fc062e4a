"""FedAvg: the sample-weighted mean of the updates (McMahan et al., AISTATS 2017).

``selected``: rows with ``num_samples > 0``; ``scores`` and ``weights``: the normalised
sample weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from bflsim.aggregators.base import (
    AggregatorError,
    RoundContext,
    Rule,
    Selection,
    as_matrix,
    integer,
)


def check_fedavg(num_clients: int) -> None:
    """FedAvg needs at least one client."""
    if integer("num_clients", num_clients) < 1:
        raise AggregatorError(f"FedAvg needs at least one client; got n={num_clients}")


def fedavg(updates: ArrayLike, num_samples: ArrayLike) -> Selection:
    """Sample-weighted mean; ``scores`` are the normalised weights."""
    x = as_matrix(updates)
    check_fedavg(x.shape[0])
    counts = np.asarray(num_samples, dtype=np.float64)
    if counts.shape != (x.shape[0],) or not np.isfinite(counts).all() or (counts < 0).any():
        raise AggregatorError(
            f"FedAvg needs num_samples as {x.shape[0]} finite counts >= 0, one per update; "
            f"got {counts.tolist()}"
        )
    if counts.sum() <= 0:
        raise AggregatorError("FedAvg needs a positive total of num_samples; all are 0")
    weights = counts / counts.sum()
    aggregate = weights @ x.astype(np.float64, copy=False)
    return Selection(aggregate.astype(x.dtype), np.flatnonzero(weights > 0), weights, weights)


@dataclass(frozen=True)
class FedAvg(Rule):
    """Sample-weighted mean: no defence, the baseline (Standard FL)."""

    name: ClassVar[str] = "fedavg"
    label: ClassVar[str] = "FedAvg"
    reference: ClassVar[str] = "McMahan et al., AISTATS 2017"

    def check(self, num_clients: int) -> None:
        check_fedavg(num_clients)
        super().check(num_clients)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        if num_samples is None:
            raise AggregatorError("FedAvg needs num_samples, one count per update")
        return fedavg(updates, num_samples)
