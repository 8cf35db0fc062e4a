"""What every aggregation rule shares: the :class:`Selection` it returns, the :class:`Rule`
record it is, its errors, and the matrix checks.

A rule is one frozen dataclass (ByzFL's shape): the constructor holds its parameters, among
them ``num_malicious``, the f the rule assumes; the call holds the (n, d) matrix of updates,
one flattened update (local - global) per row, and the clients' sample counts::

    selection = Krum(num_malicious=2)(updates, num_samples)

Each record owns its ``name`` (what experiment files say), ``label`` (tables, legends),
``reference`` (the paper), ``needs`` (inputs besides the updates, e.g. a server reference
update; none of today's rules needs one), its parameter checks (``__post_init__``), the
cohort-size check (:meth:`Rule.check`) and which rows it reports as outliers
(:meth:`Rule.rejected`, what the chain counts against a node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

_REAL = (int, float, np.integer, np.floating)


class AggregatorError(ValueError):
    """An aggregator cannot run with these settings or inputs; the message says why."""


class NonFiniteUpdateError(AggregatorError):
    """Some rows hold NaN or inf; ``rows`` lists them."""

    def __init__(self, rows: NDArray[np.int64]) -> None:
        self.rows = tuple(int(i) for i in rows)
        super().__init__(
            f"updates in rows {list(self.rows)} hold NaN or inf; refusing to aggregate them"
        )


@dataclass(frozen=True)
class Selection:
    """What an aggregator produced (all arrays read-only).

    Attributes
    ----------
    aggregate : (d,) array, the new update, in the input's floating dtype.
    selected : (k,) int64, ascending indices of the rows that contribute to ``aggregate``.
    scores : (n,) float64, the rule's per-row score (see each rule's docstring).
    weights : (n,) float64, each row's mean coefficient in ``aggregate``; sums to 1.
    """

    aggregate: NDArray[np.floating]
    selected: NDArray[np.int64]
    scores: NDArray[np.float64]
    weights: NDArray[np.float64]

    def __post_init__(self) -> None:
        for array in (self.aggregate, self.selected, self.scores, self.weights):
            array.flags.writeable = False


@dataclass(frozen=True)
class Rule:
    """Base of every rule record: ``num_malicious`` (f), the default checks and outliers.

    Subclasses set the class variables, add their parameters as fields with defaults, check
    them in ``__post_init__`` (calling ``super().__post_init__()``), and implement
    ``__call__``. Messages of parameter checks start with the parameter's name, so the
    config can name the key (``aggregator.params.<name> ...``).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    reference: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    num_malicious: int = 0

    def __post_init__(self) -> None:
        if integer("num_malicious", self.num_malicious) < 0:
            raise AggregatorError(f"num_malicious must be >= 0; got {self.num_malicious}")

    def check(self, num_clients: int) -> None:
        """Raise :class:`AggregatorError` if the rule cannot aggregate ``num_clients`` updates."""
        n = integer("num_clients", num_clients)
        if n < 1:
            raise AggregatorError(f"{self.label} needs at least one client; got n={n}")
        if self.num_malicious > n:
            raise AggregatorError(
                f"num_malicious must be between 0 and num_clients={n}; got num_malicious={self.num_malicious}"
            )

    def check_cohort(self, cohort_size: int) -> None:
        """Raise :class:`AggregatorError` if the rule cannot defend the planned cohort.

        Run once before a run starts: :meth:`check`, plus what makes the rule a no-op at
        that size without making it impossible (a trimmed mean that trims nothing). A round
        with fewer updates (failures) is aggregated under :meth:`check` alone.
        """
        self.check(cohort_size)

    def __call__(self, updates: ArrayLike, num_samples: ArrayLike | None = None) -> Selection:
        raise NotImplementedError

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """Ascending rows the rule judges outliers: by default those that contributed nothing."""
        return np.setdiff1d(np.arange(len(selection.scores)), selection.selected).astype(np.int64)


def top_f_outliers(selection: Selection, num_malicious: int, factor: float) -> NDArray[np.int64]:
    """Among the f rows with the highest scores (ties: the higher row index), those scoring
    more than ``factor`` times the median score.

    For score rules where lower is better (Krum). Without the factor, honest rows would be
    accused every round with fewer than f attackers (Krum always leaves f rows at the top),
    and reputation would revoke honest nodes.
    """
    scores = selection.scores
    n = len(scores)
    f = min(num_malicious, n)
    order = np.lexsort((-np.arange(n), -scores))  # highest score first
    top = order[:f]
    threshold = factor * float(np.median(scores))
    return np.sort(top[scores[top] > threshold]).astype(np.int64)


def pairwise_sq_distances(updates: ArrayLike) -> NDArray[np.float64]:
    """Squared Euclidean distances between rows, (n, n) float64, symmetric, zero diagonal.

    Uses ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y on rows centred at their coordinate-wise
    median: distances do not change, and centring keeps the cancellation error small when
    rows share a large common part or a few rows are huge outliers.

    Bitwise-identical rows are computed once (the matrix product rounds differently in
    different rows and columns), so they are exactly 0 apart and have exactly the same
    distances to every other row: their Krum scores tie exactly, and the tie-break by
    lowest index is what decides, as documented.
    """
    x = as_matrix(updates)
    _, first, inverse = np.unique(_row_keys(x), return_index=True, return_inverse=True)
    order = np.argsort(first)  # distinct rows in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    x64 = x.astype(np.float64)
    median = np.median(x64, axis=0)
    distinct = x64 if len(first) == len(x64) else x64[first[order]]
    distinct -= median
    sq_norms = np.einsum("ij,ij->i", distinct, distinct)
    small = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (distinct @ distinct.T)
    if not np.isfinite(small).all():
        raise AggregatorError("squared distances between updates overflow float64")
    np.maximum(small, 0.0, out=small)  # rounding can leave tiny negatives
    small = (small + small.T) / 2.0
    np.fill_diagonal(small, 0.0)
    index = rank[inverse.reshape(-1)]
    return small[np.ix_(index, index)]


def _row_keys(x: NDArray) -> NDArray:
    """One opaque value per row that is equal exactly when the rows' bytes are."""
    rows = np.ascontiguousarray(x)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)


def integer(key: str, value: Any) -> int:
    """``value`` as an int, or an :class:`AggregatorError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregatorError(f"{key} must be an integer; got {value!r}")
    return int(value)


def is_real(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, _REAL) and not isinstance(value, bool)


def as_matrix(updates: ArrayLike) -> NDArray[np.floating]:
    """Check the (n, d) shape, a real dtype and finiteness; integers become float64."""
    x = np.asarray(updates)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise AggregatorError(
            f"updates must be an (n, d) matrix with n, d >= 1, one flattened update per row; "
            f"got shape {x.shape}"
        )
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        x = x.astype(np.float64)
    elif not np.issubdtype(x.dtype, np.floating):
        raise AggregatorError(f"updates must hold real numbers; got dtype {x.dtype}")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad_rows.size:
        raise NonFiniteUpdateError(bad_rows)
    return x
