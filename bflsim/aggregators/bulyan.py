"""Bulyan (El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning
in Byzantium", ICML 2018, arXiv:1802.07927; needs n >= 4f + 3).

Two steps on the (n, d) matrix of updates:

1. Selection by iterated Krum: apply Krum to the rows not yet chosen, move its pick into the
   selection, and repeat until theta = n - 2f rows are chosen. Each pick re-scores the
   remaining n' rows (sum of squared distances to the n' - f - 2 nearest other remaining
   rows), so this is not one-shot Multi-Krum (:func:`bflsim.aggregators.krum.multikrum`).
2. Coordinate-wise trimmed aggregation: per coordinate, the mean of the beta = theta - 2f
   selected values closest to the coordinate-wise median of the selected rows.

``selected``: as for every rule, the rows that contribute to the aggregate: those of the theta
rows of step 1 that are among the beta closest in at least one coordinate (with d = 1, 2f of
the theta never are; :func:`iterated_krum` gives step 1's rows); ``scores``: the first pick's
Krum scores of all n rows, the same numbers as :func:`bflsim.aggregators.krum.krum_scores`
(lower is better); ``weights``: each row's coefficient in the aggregate averaged over
coordinates. As outliers (what the chain counts against a node) Bulyan
reports, like Krum, those of the f highest scores above ``factor`` times the median score
(:func:`bflsim.aggregators.base.top_f_outliers`).
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
    pairwise_sq_distances,
    top_f_outliers,
)
from bflsim.aggregators.krum import neighbour_scores


def check_bulyan(num_clients: int, num_malicious: int) -> None:
    """Bulyan tolerates f malicious among n only if n >= 4f + 3 (El Mhamdi et al., 2018)."""
    n, f = integer("num_clients", num_clients), integer("num_malicious", num_malicious)
    if f < 0:
        raise AggregatorError(f"Bulyan: num_malicious must be >= 0; got f={f}")
    if n < 4 * f + 3:
        raise AggregatorError(
            f"Bulyan cannot tolerate f={f} malicious among n={n} clients: "
            f"it needs n >= 4f + 3 (n >= {4 * f + 3})"
        )


def iterated_krum(
    distances: NDArray[np.float64], num_malicious: int, num_selected: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Bulyan's step 1: Krum ``num_selected`` times, each time on the rows not yet chosen.

    ``distances`` is the (n, n) matrix of squared distances, computed once; each pick reads
    the sub-matrix of the remaining n' rows. A row's score sums the squared distances to its
    k nearest other remaining rows: Krum's k = n' - f - 2 while that is at least 1; it falls
    to f - 1 at the last pick (n' = 2f + 1), to zero or below for f <= 1, so k is raised to 1
    (as in Flower's ``select_multikrum``), and capped at n' - 1 (the lone last row, f = 0).

    Ties (equal scores) go to the row with the smaller sum of squared distances to all the
    remaining rows, then to the lowest row index. The first key matters: with k = 1 (the picks
    with n' <= f + 3, which exist for f = 1 and 2) a row's score is the distance to its nearest
    neighbour, so the two mutually nearest remaining rows always tie, and breaking that tie by
    index alone would make the selection depend on the order of the node ids.

    Returns the chosen rows in ascending order and the first pick's scores of all n rows.
    """
    remaining = np.arange(len(distances))
    chosen = []
    first_scores = None
    for _ in range(num_selected):
        size = len(remaining)
        num_neighbours = min(size - 1, max(1, size - num_malicious - 2))
        among = distances[np.ix_(remaining, remaining)]
        scores = neighbour_scores(among, num_neighbours)
        if first_scores is None:
            first_scores = scores
        spread = among.sum(axis=1)  # to all remaining rows (zero diagonal)
        pick = int(np.lexsort((np.arange(size), spread, scores))[0])  # remaining is ascending
        chosen.append(remaining[pick])
        remaining = np.delete(remaining, pick)
    return np.sort(np.array(chosen, dtype=np.int64)), first_scores


def bulyan(updates: ArrayLike, num_malicious: int) -> Selection:
    """Bulyan over Krum: iterated Krum picks theta = n - 2f rows, then per coordinate the mean
    of the beta = theta - 2f picked values closest to their median (El Mhamdi et al., 2018).

    Per coordinate, ties in the distance to the median go to the lowest row index; the kept
    values are summed in row order. With f = 0 this is the plain mean of all rows.
    """
    x = as_matrix(updates)
    n, f = x.shape[0], integer("num_malicious", num_malicious)
    check_bulyan(n, f)
    theta = n - 2 * f
    beta = theta - 2 * f
    chosen, scores = iterated_krum(pairwise_sq_distances(x), f, theta)

    picked = x[chosen].astype(np.float64)
    distance_to_median = np.abs(picked - np.median(picked, axis=0))
    closest = np.sort(np.argsort(distance_to_median, axis=0, kind="stable")[:beta], axis=0)
    aggregate = np.take_along_axis(picked, closest, axis=0).mean(axis=0)
    counts = np.bincount(chosen[closest].ravel(), minlength=n).astype(np.float64)
    weights = counts / (x.shape[1] * beta)
    return Selection(aggregate.astype(x.dtype), np.flatnonzero(counts), scores, weights)


@dataclass(frozen=True)
class Bulyan(Rule):
    """Iterated Krum selects n - 2f rows; per coordinate, the mean of the n - 4f of them
    closest to their median.

    :meth:`rejected` names, among the f highest first-pick Krum scores, those above ``factor``
    times the median score, as Krum does. Not "every row left out of the selection": Bulyan
    always leaves 2f rows out, so with fewer than 2f attackers (none, in a clean round) it
    would accuse honest nodes every round, and reputation would revoke them.
    """

    name: ClassVar[str] = "bulyan"
    label: ClassVar[str] = "Bulyan"
    reference: ClassVar[str] = "El Mhamdi, Guerraoui and Rouault, ICML 2018 (arXiv:1802.07927)"

    def check(self, num_clients: int) -> None:
        check_bulyan(num_clients, self.num_malicious)

    @classmethod
    def max_tolerated(cls, num_clients: int) -> int:
        """Bulyan needs n >= 4f + 3."""
        return max(0, (int(num_clients) - 3) // 4)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        return bulyan(updates, self.num_malicious)

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        return top_f_outliers(selection, self.num_malicious, factor)
