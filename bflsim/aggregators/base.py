"""What every aggregation rule shares: the :class:`Selection` it returns, the :class:`Rule`
record it is, its errors, and the matrix checks.

A rule is one frozen dataclass (ByzFL's shape): the constructor holds its parameters, among
them ``num_malicious``, the f the rule assumes; the call holds the (n, d) matrix of updates,
one flattened update (local - global) per row, and the clients' sample counts::

    selection = Krum(num_malicious=2)(updates, num_samples)

Each record owns its ``name`` (what experiment files say), ``label`` (tables, legends),
``reference`` (the paper), ``needs`` (what of the :class:`RoundContext` it reads besides the
updates: the server's reference update, the previous aggregate, the nodes' history), its
parameter checks (``__post_init__``), the
cohort-size check (:meth:`Rule.check`) and which rows it reports as outliers
(:meth:`Rule.rejected`, what the chain counts against a node).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    weights : (n,) float64, each row's mean coefficient in ``aggregate``; sums to 1, or is
        all 0 when the rule trusts no row and the aggregate is the zero update (FLTrust,
        FoolsGold, DnC, FLAME can; each rule's docstring says when).
    """

    aggregate: NDArray[np.floating]
    selected: NDArray[np.int64]
    scores: NDArray[np.float64]
    weights: NDArray[np.float64]

    def __post_init__(self) -> None:
        for array in (self.aggregate, self.selected, self.scores, self.weights):
            array.flags.writeable = False


CONTEXT_NEEDS = frozenset({"reference", "previous", "history"})
"""What a rule may need of the :class:`RoundContext` besides its ``server_round`` and ``seed``."""


@dataclass(frozen=True)
class RoundContext:
    """What the server knows of a round besides the updates: given to rules that need it.

    ``server_round`` and ``seed`` (the rule's own randomness this round, e.g. FLAME's noise,
    DnC's subsampling: draw with :meth:`rng`; the server derives it from the aggregator's
    seed and the round, so the audit replays it). ``reference``: the server's own update
    on its clean root set (FLTrust), a (d,) delta. ``previous``: the previous round's
    aggregate (d,), None in round 1 (centered clipping's starting point). ``history``: per
    row, the sum of that node's updates over this and every earlier round it took part in
    (n, d) (FoolsGold).
    """

    server_round: int = 0
    seed: int = 0
    reference: NDArray[np.floating] | None = None
    previous: NDArray[np.floating] | None = None
    history: NDArray[np.floating] | None = None

    def rng(self) -> np.random.Generator:
        """The rule's random generator for this round (a fresh one per call, same draws)."""
        return np.random.default_rng([self.seed, self.server_round])


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

    @classmethod
    def max_tolerated(cls, num_clients: int) -> int:
        """The most attackers the rule can assume among ``num_clients`` (a defender's upper
        bound, never the truth): by default a strict minority, ``(n - 1) // 2``."""
        return max(0, (int(num_clients) - 1) // 2)

    def check_cohort(self, cohort_size: int) -> None:
        """Raise :class:`AggregatorError` if the rule cannot defend the planned cohort.

        Run once before a run starts: :meth:`check`, plus what makes the rule a no-op at
        that size without making it impossible (a trimmed mean that trims nothing). A round
        with fewer updates (failures) is aggregated under :meth:`check` alone.
        """
        self.check(cohort_size)

    def __call__(
        self, updates: ArrayLike, num_samples: ArrayLike | None = None, context: RoundContext | None = None
    ) -> Selection:
        """Aggregate the (n, d) ``updates``; ``context`` holds what ``needs`` names."""
        raise NotImplementedError

    def context_for(self, context: RoundContext | None, n: int, d: int) -> RoundContext:
        """``context`` checked against :attr:`needs` (shapes too); an empty one for rules that need nothing."""
        context = RoundContext() if context is None else context
        shapes = {"reference": (d,), "previous": (d,), "history": (n, d)}
        for need in sorted(self.needs):
            value = getattr(context, need)
            if value is None and need != "previous":
                raise AggregatorError(f"{self.label} needs the round's {need} (RoundContext.{need})")
            if value is not None and np.shape(value) != shapes[need]:
                raise AggregatorError(f"{self.label}: RoundContext.{need} has shape {np.shape(value)}; "
                                      f"expected {shapes[need]}")
            if value is not None and not np.isfinite(value).all():
                raise AggregatorError(f"{self.label}: RoundContext.{need} holds NaN or inf")
        return context

    def rejected(self, selection: Selection, factor: float) -> NDArray[np.int64]:
        """Ascending rows the rule judges outliers: by default those that contributed nothing."""
        return np.setdiff1d(np.arange(len(selection.scores)), selection.selected).astype(np.int64)


def check_honest_majority(rule: str, num_clients: int, num_malicious: int, reason: str) -> None:
    """Refuse f >= n / 2 for a rule that needs the honest updates to be the majority (n > 2f);
    ``reason`` says why, in the rule's terms."""
    n, f = integer("num_clients", num_clients), integer("num_malicious", num_malicious)
    if n <= 2 * f:
        raise AggregatorError(
            f"{rule} cannot tolerate f={f} malicious among n={n} clients: {reason}; "
            f"it needs n > 2f (n >= {2 * f + 1})"
        )


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

    The matrix is checked (:func:`as_matrix`, finiteness on the way) and handed to
    :func:`sq_distances`, which says how the distances are computed.
    """
    return sq_distances(as_matrix(updates, check_finite=False))


def sq_distances(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """:func:`pairwise_sq_distances` of a matrix that :func:`as_matrix` has already checked
    (finiteness aside: rows holding NaN or inf are refused here, :class:`NonFiniteUpdateError`).

    Uses ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y in float64 on rows centred at one of them,
    the centre: distances do not change, and the rounding error of each distance is then of
    order eps * (||x - c||^2 + ||y - c||^2) instead of eps * (||x||^2 + ||y||^2), small when
    rows share a large common part. The centre is a medoid (the row nearest to its
    (n - 1) // 2 nearest others, so fewer than half the rows, however huge, cannot
    move it off the bulk) found on a sample of the columns; if the full distances show it far
    from their own medoid (a row can hide its difference outside the sample), the distances
    are computed again around that one. Around the bulk, the error is of order eps times the
    distances between its rows, not times their norms.

    The product is accumulated over blocks of columns that stay in cache, each converted to
    float64 and centred on the way in; BLAS computes one triangle of each block's Gram
    matrix (``block @ block.T`` is a symmetric rank-k update), so the cost is close to one
    float64 Gram matrix of the stack, with no float64 copy of the whole stack.

    Equal rows (bitwise-identical, or differing only in the sign of zeros) are exactly 0
    apart and have exactly the same distances to every other row, although the matrix
    product rounds differently in different rows and columns: their Krum scores tie exactly,
    and the tie-break by lowest index is what decides, as documented. Candidate pairs are
    those the product puts within its own rounding bound of 0; they are confirmed by
    comparing the rows, and each row then takes the distances of the first row it equals.
    """
    if _DISTANCES.get() == "v1":
        refuse_non_finite(x)
        return _sq_distances_v1(x)
    n = x.shape[0]
    if n == 1:
        refuse_non_finite(x)
        return np.zeros((1, 1))
    sample = _sample_columns(x)
    centre, _ = _medoid(_finite(_centred_sq_distances(sample, _column_medians(sample)), x))
    distances = _finite(_centred_sq_distances(x, x[centre]), x)
    first_equal = _first_equal_rows(x, sample, distances, centre)
    distances = _tie_equal_rows(distances, first_equal)
    medoid, spread = _medoid(distances)
    if distances[centre, medoid] > _FAR_FROM_THE_BULK * spread:
        distances = _tie_equal_rows(_finite(_centred_sq_distances(x, x[medoid]), x), first_equal)
    return distances


DISTANCE_VERSIONS = ("v1", "v2")
"""How :func:`sq_distances` computes: ``v2`` (this module's, since issue 10) and ``v1`` (rows
centred at their coordinate-wise median, equal rows found by sorting their bytes), kept so
that the audit of a run recorded with v1 re-computes its Krum scores bit for bit: the scores
digest on chain hashes them. A run's ``trail/chain.json`` records its version."""

_DISTANCES: ContextVar[str] = ContextVar("bflsim_distances", default="v2")


@contextmanager
def distances_version(version: str) -> Iterator[None]:
    """Compute squared distances as ``version`` (:data:`DISTANCE_VERSIONS`) inside the block."""
    if version not in DISTANCE_VERSIONS:
        raise ValueError(f"distances version must be one of {list(DISTANCE_VERSIONS)}; got {version!r}")
    token = _DISTANCES.set(version)
    try:
        yield
    finally:
        _DISTANCES.reset(token)


def _sq_distances_v1(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """The v1 computation (:data:`DISTANCE_VERSIONS`), unchanged: the Gram matrix of rows
    centred at their coordinate-wise median, each distinct row computed once."""
    rows = np.ascontiguousarray(x)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
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


_SAMPLE_COLUMNS = 256
"""Columns the centre is chosen on (evenly spaced); the guard in :func:`sq_distances` covers
a row that looks central on them and is not."""

_BLOCK_BYTES = 1 << 20
"""Size of one float64 block of columns of the stack, about half a core's L2 cache, but at
least :data:`_BLOCK_COLUMNS` wide (measured on 2 cores at n = 10, 50, 200 and d = 33,605,
1M: 0.5-2 MB blocks beat the whole stack at once by up to 20%, and at n = 200 blocks of
fewer than ~1300 columns lose up to 10%)."""

_BLOCK_COLUMNS = 2048
"""Fewest columns in a block: syrk needs a long enough inner dimension to run at speed."""

_FAR_FROM_THE_BULK = 100.0
"""A centre whose squared distance to the medoid exceeds this many times the medoid's mean
squared distance to its nearest half is too far for the rounding bound above."""


def _finite(distances: NDArray[np.float64], x: NDArray[np.floating]) -> NDArray[np.float64]:
    """``distances``, if finite; otherwise the rows of ``x`` holding NaN or inf are refused (a
    NaN or inf in a row makes its distances NaN or inf), or, if there are none, the overflow."""
    if not np.isfinite(distances).all():
        refuse_non_finite(x)
        raise AggregatorError("squared distances between updates overflow float64")
    return distances


def _sample_columns(x: NDArray[np.floating]) -> NDArray[np.floating]:
    """At most :data:`_SAMPLE_COLUMNS` evenly spaced columns of ``x`` (all when d is small)."""
    step = -(-x.shape[1] // _SAMPLE_COLUMNS)
    return x if step == 1 else x[:, ::step]


def _column_medians(sample: NDArray[np.floating]) -> NDArray[np.float64]:
    """``np.median(sample, axis=0)`` in float64, by one partition of a contiguous copy (a
    quarter of np.median's time on a small sample, which matters when d is small)."""
    columns = np.array(sample.T, dtype=np.float64)
    n = columns.shape[1]
    low, high = (n - 1) // 2, n // 2
    columns.partition([low, high], axis=1)
    return (columns[:, low] + columns[:, high]) / 2.0


def _centred_sq_distances(
    x: NDArray[np.floating], centre: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Squared distances between the rows of ``x`` through the float64 Gram matrix of
    ``x - centre``, clamped at 0 (rounding can leave tiny negatives), exactly symmetric; NaN
    or inf where a row holds NaN or inf or the distances overflow."""
    n, d = x.shape
    with np.errstate(over="ignore", invalid="ignore"):  # NaN and inf: see _finite
        centre = centre.astype(np.float64)
        num_blocks = max(1, min(round(8 * n * d / _BLOCK_BYTES), d // _BLOCK_COLUMNS))
        width = -(-d // num_blocks)
        block = np.empty((n, width))
        gram, product = np.zeros((n, n)), np.empty((n, n))
        for start in range(0, d, width):
            stop = min(d, start + width)
            part = block[:, : stop - start]
            np.copyto(part, x[:, start:stop])
            part -= centre[start:stop]  # in float64, in cache
            np.matmul(part, part.T, out=product)  # numpy hands A @ A.T to BLAS syrk
            gram += product
        sq_norms = gram.diagonal().copy()
        distances = gram
        distances *= -2.0
        distances += sq_norms[:, None]
        distances += sq_norms[None, :]
        distances += distances.T.copy()
        distances *= 0.5
        np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def _first_equal_rows(
    x: NDArray[np.floating],
    sample: NDArray[np.floating],
    distances: NDArray[np.float64],
    centre: int,
) -> NDArray[np.int64]:
    """For each row, the lowest index of a row equal to it (itself if none is).

    ``distances`` come from :func:`_centred_sq_distances` around row ``centre``, so
    ``distances[i, centre]`` is exactly the computed ||x_i - c||^2. Whatever order BLAS sums
    the d products of a dot product in, its error is at most about d * eps times the sum of
    their magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, 2002, §3.1), so
    two equal rows come out at most ~4 d eps ||x_i - c||^2 apart; pairs within twice that
    are compared, on the sample first.
    """
    n, d = x.shape
    sq_norms = distances[:, centre]
    bound = 4.0 * (d + 2) * np.finfo(np.float64).eps * (sq_norms[:, None] + sq_norms[None, :])
    first = np.arange(n)
    close = distances <= bound
    if np.count_nonzero(close) == n:  # the diagonal alone: no candidates
        return first
    for i, j in zip(*np.nonzero(np.triu(close, 1)), strict=True):  # row-major
        # if i equals an earlier row r, the pair (r, j) came first and settled j
        if first[i] != i or first[j] != j:
            continue
        if np.array_equal(sample[i], sample[j]) and np.array_equal(x[i], x[j]):
            first[j] = i
    return first


def _tie_equal_rows(
    distances: NDArray[np.float64], first: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Each row's and column's distances replaced by those of the first row equal to it."""
    if (first == np.arange(len(first))).all():
        return distances
    return distances[np.ix_(first, first)]  # equal rows: distances[r, r] = 0 apart


def _medoid(distances: NDArray[np.float64]) -> tuple[int, float]:
    """The row with the smallest sum of squared distances to its (n - 1) // 2 nearest other
    rows (at least one; ties to the lowest index), and that sum's mean per neighbour.

    An honest row has at least that many honest others while fewer than half the rows are
    not honest, so outliers, however far, cannot make one of them the medoid."""
    n = len(distances)
    k = max(1, (n - 1) // 2)
    others = distances.copy()
    np.fill_diagonal(others, np.inf)
    sums = np.partition(others, k - 1, axis=1)[:, :k].sum(axis=1)
    medoid = int(np.argmin(sums))
    return medoid, float(sums[medoid]) / k


def integer(key: str, value: Any) -> int:
    """``value`` as an int, or an :class:`AggregatorError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregatorError(f"{key} must be an integer; got {value!r}")
    return int(value)


def is_real(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, _REAL) and not isinstance(value, bool)


def as_matrix(updates: ArrayLike, *, check_finite: bool = True) -> NDArray[np.floating]:
    """Check the (n, d) shape, a real dtype and finiteness; integers become float64.

    ``check_finite=False`` leaves finiteness to the caller: :func:`sq_distances` finds NaN and
    inf on its way (one pass over a large stack saved).
    """
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
    if check_finite:
        refuse_non_finite(x)
    return x


def refuse_non_finite(x: NDArray[np.floating]) -> None:
    """Raise :class:`NonFiniteUpdateError` naming the rows of ``x`` that hold NaN or inf."""
    # A NaN or inf makes its row's sum non-finite; a finite row's sum only when it overflows.
    with np.errstate(over="ignore", invalid="ignore"):
        suspects = np.flatnonzero(~np.isfinite(x.sum(axis=1)))
    bad_rows = np.array([i for i in suspects if not np.isfinite(x[i]).all()], dtype=np.int64)
    if bad_rows.size:
        raise NonFiniteUpdateError(bad_rows)
