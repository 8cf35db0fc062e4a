"""Robust aggregation rules as pure functions over a stacked (n, d) matrix of updates.

Each row is one client's flattened update (or weights: the rules are agnostic). Every
rule returns a :class:`Selection`: the aggregate, which rows went into it, a per-row score
and each row's share of the aggregate, so "did a poisoned update get through?" is a
metric and the selection can be recorded and re-checked on chain.

=============  ====================================  =====================================
rule           ``selected`` (ascending row indices)  ``scores`` (one per row)
=============  ====================================  =====================================
fedavg         rows with ``num_samples > 0``         normalised sample weight
krum           the row with the lowest score         Krum score (lower is better)
multikrum      the ``m`` rows with lowest scores     Krum score (lower is better)
median         rows that are a middle value in at    fraction of coordinates where the row
               least one coordinate                  is a middle value (1 or 2 per column)
trimmed_mean   rows kept in at least one coordinate  fraction of coordinates where the row
                                                     is kept (not among the trimmed ends)
=============  ====================================  =====================================

``weights[i]`` is row i's coefficient in the aggregate averaged over coordinates; the
weights sum to 1, so the weights of the malicious rows add up to the poisoned share.

Krum score of row i: the sum of squared distances to its ``n - f - 2`` nearest other rows.
Ties (equal scores) go to the lowest row index. Rows holding NaN or inf are refused
(:class:`NonFiniteUpdateError` names them) rather than scored: a non-finite row has no
meaningful distance, and for FedAvg it would corrupt the aggregate silently. The caller
(the strategy) decides whether to drop those rows and aggregate the rest. Arithmetic is in
float64; the aggregate keeps the input's floating dtype (float64 for integer input).
Median and trimmed mean credit tied values to one of the tied rows, deterministically.

References
----------
- McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
  Data", AISTATS 2017 (FedAvg).
- Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
  Descent", NeurIPS 2017 (Krum, Multi-Krum; needs n > 2f + 2).
- El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning in
  Byzantium", ICML 2018 (Bulyan; the Multi-Krum name and the default m = n - f).
- Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
  ICML 2018 (coordinate-wise median and trimmed mean).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    scores : (n,) float64, the rule's per-row score (see the module docstring).
    weights : (n,) float64, each row's mean coefficient in ``aggregate``; sums to 1.
    """

    aggregate: NDArray[np.floating]
    selected: NDArray[np.int64]
    scores: NDArray[np.float64]
    weights: NDArray[np.float64]

    def __post_init__(self) -> None:
        for array in (self.aggregate, self.selected, self.scores, self.weights):
            array.flags.writeable = False


# --- settings checks: each raises a sentence naming the setting -----------------------


def check_fedavg(num_clients: int) -> None:
    """FedAvg needs at least one client."""
    if _integer("num_clients", num_clients) < 1:
        raise AggregatorError(f"FedAvg needs at least one client; got n={num_clients}")


def check_krum(num_clients: int, num_malicious: int, *, rule: str = "Krum") -> None:
    """Krum tolerates f malicious among n only if n > 2f + 2 (Blanchard et al., 2017)."""
    n, f = _integer("num_clients", num_clients), _integer("num_malicious", num_malicious)
    if f < 0:
        raise AggregatorError(f"{rule}: num_malicious must be >= 0; got f={f}")
    if n <= 2 * f + 2:
        raise AggregatorError(
            f"{rule} cannot tolerate f={f} malicious among n={n} clients: "
            f"it needs n > 2f + 2 (n >= {2 * f + 3})"
        )


def check_multikrum(num_clients: int, num_malicious: int, num_selected: int) -> None:
    """Multi-Krum needs n > 2f + 2 and 1 <= m <= n - f (more would admit a malicious row)."""
    check_krum(num_clients, num_malicious, rule="Multi-Krum")
    m, n, f = _integer("num_selected", num_selected), num_clients, num_malicious
    if not 1 <= m <= n - f:
        raise AggregatorError(
            f"Multi-Krum cannot select m={m} of n={n} updates with f={f} malicious: "
            f"it needs 1 <= m <= n - f (m <= {n - f}), or a malicious update always gets in"
        )


def check_median(num_clients: int) -> None:
    """The median needs at least one client."""
    if _integer("num_clients", num_clients) < 1:
        raise AggregatorError(f"median needs at least one client; got n={num_clients}")


def check_trimmed_mean(num_clients: int, trim_fraction: float | None) -> None:
    """Trimmed mean drops ``int(beta * n)`` rows at each end; beta in [0, 0.5) keeps 2k < n."""
    n = _integer("num_clients", num_clients)
    if n < 1:
        raise AggregatorError(f"trimmed mean needs at least one client; got n={n}")
    beta = trim_fraction
    if isinstance(beta, bool) or not isinstance(beta, _REAL) or not 0 <= beta < 0.5:
        raise AggregatorError(
            f"trimmed mean needs trim_fraction (beta) in [0, 0.5), so that it trims "
            f"int(beta * n) rows from each end and keeps some; got trim_fraction={beta!r}"
        )


# --- the rules ------------------------------------------------------------------------


def pairwise_sq_distances(updates: ArrayLike) -> NDArray[np.float64]:
    """Squared Euclidean distances between rows, (n, n) float64, symmetric, zero diagonal.

    Uses ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y on rows centred at their coordinate-wise
    median: distances do not change, and centring keeps the cancellation error small when
    rows share a large common part (full weights) or a few rows are huge outliers.
    """
    x = _as_matrix(updates).astype(np.float64)
    x -= np.median(x, axis=0)
    sq_norms = np.einsum("ij,ij->i", x, x)
    distances = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)
    if not np.isfinite(distances).all():
        raise AggregatorError("squared distances between updates overflow float64")
    np.maximum(distances, 0.0, out=distances)  # rounding can leave tiny negatives
    distances = (distances + distances.T) / 2.0
    np.fill_diagonal(distances, 0.0)
    return distances


def krum_scores(updates: ArrayLike, num_malicious: int) -> NDArray[np.float64]:
    """Sum of squared distances from each row to its ``n - f - 2`` nearest other rows."""
    x = _as_matrix(updates)
    n = x.shape[0]
    check_krum(n, num_malicious)
    distances = pairwise_sq_distances(x)
    np.fill_diagonal(distances, np.inf)  # a row is not its own neighbour
    num_neighbours = n - num_malicious - 2
    return np.sort(distances, axis=1)[:, :num_neighbours].sum(axis=1)


def fedavg(updates: ArrayLike, num_samples: ArrayLike) -> Selection:
    """Sample-weighted mean (McMahan et al., 2017); ``scores`` are the normalised weights."""
    x = _as_matrix(updates)
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


def multikrum(updates: ArrayLike, num_malicious: int, num_selected: int | None = None) -> Selection:
    """Plain mean of the ``m`` rows with the lowest Krum scores (Blanchard et al., 2017).

    ``num_selected=None`` takes m = n - f, the choice of El Mhamdi et al. (2018). This is
    the one-shot rule; Bulyan's iterated Krum re-scores after each pick and is not this.
    """
    x = _as_matrix(updates)
    n, f = x.shape[0], _integer("num_malicious", num_malicious)
    m = n - f if num_selected is None else num_selected
    check_multikrum(n, f, m)
    scores = krum_scores(x, f)
    selected = np.sort(np.argsort(scores, kind="stable")[:m])  # stable: ties to lowest index
    weights = np.zeros(n)
    weights[selected] = 1.0 / m
    aggregate = x[selected].mean(axis=0, dtype=np.float64)
    return Selection(aggregate.astype(x.dtype), selected, scores, weights)


def krum(updates: ArrayLike, num_malicious: int) -> Selection:
    """The row with the lowest Krum score (Blanchard et al., 2017); Multi-Krum with m = 1."""
    x = _as_matrix(updates)
    check_krum(x.shape[0], num_malicious)
    return multikrum(x, num_malicious, 1)


def median(updates: ArrayLike) -> Selection:
    """Coordinate-wise median (Yin et al., 2018); the mean of the two middles for even n."""
    x = _as_matrix(updates)
    check_median(x.shape[0])
    return _middle_mean(x, num_trimmed=(x.shape[0] - 1) // 2)


def trimmed_mean(updates: ArrayLike, trim_fraction: float) -> Selection:
    """Coordinate-wise mean after dropping ``k = int(beta * n)`` rows at each end (Yin et al.).

    ``k`` is computed as in ``scipy.stats.trim_mean`` and Flower's ``FedTrimmedAvg``.
    """
    x = _as_matrix(updates)
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


# --- registry and uniform entry -------------------------------------------------------

AGGREGATORS: dict[str, Callable[..., Selection]] = {
    "fedavg": fedavg,
    "krum": krum,
    "multikrum": multikrum,
    "median": median,
    "trimmed_mean": trimmed_mean,
}

# Which of the uniform settings each rule takes; settings a rule does not use are ignored.
_SETTINGS: dict[str, tuple[str, ...]] = {
    "fedavg": ("num_samples",),
    "krum": ("num_malicious",),
    "multikrum": ("num_malicious", "num_selected"),
    "median": (),
    "trimmed_mean": ("trim_fraction",),
}

_CHECKS: dict[str, Callable[[int, int, int | None, float | None], None]] = {
    "fedavg": lambda n, f, m, beta: check_fedavg(n),
    "krum": lambda n, f, m, beta: check_krum(n, f),
    "multikrum": lambda n, f, m, beta: check_multikrum(n, f, n - f if m is None else m),
    "median": lambda n, f, m, beta: check_median(n),
    "trimmed_mean": lambda n, f, m, beta: check_trimmed_mean(n, beta),
}


def validate_aggregator(
    name: str,
    num_clients: int,
    num_malicious: int,
    *,
    num_selected: int | None = None,
    trim_fraction: float | None = None,
) -> None:
    """Raise :class:`AggregatorError` before a run if ``name`` cannot work with these settings.

    ``num_clients`` is the number of updates aggregated per round (the cohort size).
    """
    _lookup(name)
    n, f = _integer("num_clients", num_clients), _integer("num_malicious", num_malicious)
    if not 0 <= f <= n:
        raise AggregatorError(
            f"num_malicious must be between 0 and num_clients={n}; got num_malicious={f}"
        )
    _CHECKS[name](n, f, num_selected, trim_fraction)


def aggregate(
    name: str,
    updates: ArrayLike,
    *,
    num_samples: ArrayLike | None,
    num_malicious: int,
    num_selected: int | None = None,
    trim_fraction: float | None = None,
) -> Selection:
    """Run the rule called ``name``, passing it only the settings it takes."""
    rule = _lookup(name)
    settings: dict[str, Any] = {
        "num_samples": num_samples,
        "num_malicious": num_malicious,
        "num_selected": num_selected,
        "trim_fraction": trim_fraction,
    }
    return rule(updates, **{key: settings[key] for key in _SETTINGS[name]})


def rejected(name: str, selection: Selection, num_malicious: int, factor: float = 3.0) -> NDArray[np.int64]:
    """Ascending row indices the rule judges to be outliers (what the chain counts against a node).

    Krum and Multi-Krum: among the ``num_malicious`` rows with the highest Krum scores (the
    f the rule assumes Byzantine; ties: the higher row index), those scoring more than
    ``factor`` times the median score. Without the factor, honest rows would be accused every
    round in which there are fewer than f attackers (Krum always leaves f rows at the top),
    and reputation would revoke honest nodes. FedAvg, median and trimmed mean: the rows that
    contributed nothing to the aggregate.
    """
    _lookup(name)
    n = len(selection.scores)
    if name in ("krum", "multikrum"):
        f = min(_integer("num_malicious", num_malicious), n)
        order = np.lexsort((-np.arange(n), -selection.scores))  # highest score first
        top = order[:f]
        threshold = factor * float(np.median(selection.scores))
        return np.sort(top[selection.scores[top] > threshold]).astype(np.int64)
    return np.setdiff1d(np.arange(n), selection.selected).astype(np.int64)


def _lookup(name: str) -> Callable[..., Selection]:
    if name not in AGGREGATORS:
        raise AggregatorError(f"unknown aggregator {name!r}; expected one of {list(AGGREGATORS)}")
    return AGGREGATORS[name]


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregatorError(f"{key} must be an integer; got {value!r}")
    return int(value)


def _as_matrix(updates: ArrayLike) -> NDArray[np.floating]:
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
