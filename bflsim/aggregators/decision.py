"""One round's decision, written once: what the server commits and the audit recomputes.

:func:`decide_round` stacks the nodes' updates as deltas (local - global, in float64 so the
difference of two float32 weights is exact), runs the rule, adds the aggregate back to the
global model, names the selected, rejected and accepted nodes, and digests the scores. The
Flower strategy, the audit's replay and the benchmark's plain loop all call it, so the audit
replays the server's decision by construction.

Working in float64 deltas keeps today's rules bit-identical to aggregating the weights
themselves where they pick rows (Krum, Multi-Krum, median: ``global + (local - global)`` is
``local`` exactly), and within float64 round-off, invisible after the cast to float32, where
they average (FedAvg, trimmed mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.aggregators.base import (
    AggregatorError,
    RoundContext,
    Rule,
    Selection,
    distances_version,
)
from bflsim.hashing import scores_digest
from bflsim.vectors import Weights, flatten, unflatten


@dataclass(frozen=True)
class RoundDecision:
    """What the rule made of one round's updates, in node ids.

    ``nodes`` are the candidates in row order (ascending node ids); ``selected`` contribute to
    the aggregate; ``rejected`` are the rule's outliers (counted against them on chain);
    ``accepted`` are the candidates not rejected (what the round commits).
    """

    nodes: tuple[int, ...]
    selection: Selection
    new_weights: Weights
    selected: tuple[int, ...]
    rejected: tuple[int, ...]
    accepted: tuple[int, ...]
    scores_digest: bytes


def stack_deltas(updates: Sequence[Weights], global_weights: Weights) -> NDArray[np.float64]:
    """The (n, d) float64 matrix of ``flatten(update) - flatten(global)``, one row per update."""
    flat_global, shapes = flatten(global_weights)
    origin = flat_global.astype(np.float64)
    rows = []
    for position, update in enumerate(updates):
        flat, update_shapes = flatten(update)
        if update_shapes != shapes:
            raise AggregatorError(
                f"update {position} has array shapes {list(update_shapes)}, the global model "
                f"{list(shapes)}"
            )
        rows.append(flat.astype(np.float64) - origin)
    return np.stack(rows) if rows else np.empty((0, origin.size))


def apply_update(global_weights: Weights, aggregate: ArrayLike) -> Weights:
    """``global + aggregate`` as float32 arrays of the global model's shapes."""
    flat_global, shapes = flatten(global_weights)
    new = flat_global.astype(np.float64) + np.asarray(aggregate, dtype=np.float64)
    return unflatten(new.astype(np.float32), shapes)


def decide_round(
    rule: Rule,
    nodes: Sequence[int],
    updates: Sequence[Weights],
    global_weights: Weights,
    num_samples: ArrayLike,
    reject_factor: float,
    distances: str = "v2",
    context: RoundContext | None = None,
) -> RoundDecision:
    """Aggregate the ``updates`` (each node's returned weights, in ``nodes`` order) with ``rule``.

    ``context``: what the server knows of the round besides the updates, for rules that
    need it (:class:`bflsim.aggregators.base.RoundContext`).
    ``distances``: how distance-based rules compute squared distances
    (:data:`bflsim.aggregators.base.DISTANCE_VERSIONS`; the audit of a run passes the run's).
    Raises :class:`AggregatorError` when the rule cannot run on this many updates
    (``rule.check``) or an update does not fit the global model.
    """
    nodes = tuple(int(i) for i in nodes)
    if len(nodes) != len(updates):
        raise AggregatorError(f"{len(nodes)} node ids for {len(updates)} updates")
    rule.check(len(nodes))
    with distances_version(distances):
        selection = rule(stack_deltas(updates, global_weights), np.asarray(num_samples), context)
    selected = tuple(nodes[i] for i in selection.selected)
    rejected = tuple(nodes[i] for i in rule.rejected(selection, reject_factor))
    return RoundDecision(
        nodes=nodes,
        selection=selection,
        new_weights=apply_update(global_weights, selection.aggregate),
        selected=selected,
        rejected=rejected,
        accepted=tuple(sorted(set(nodes) - set(rejected))),
        scores_digest=scores_digest(list(selected), selection.scores),
    )
