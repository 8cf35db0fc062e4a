"""What the server carries from round to round for rules that need more than the updates.

A rule's ``needs`` (:class:`bflsim.aggregators.base.RoundContext`) name it; :class:`DefenceState`
builds each round's context from what the run has already decided, so the strategy, the
audit (which rebuilds it from the chain's models and updates) and a resumed run compute the
same one:

- ``previous``: the previous round's change of the global model, ``G[r-1] - G[r-2]`` (the
  float32 models, differenced in float64; None in round 1). It is the aggregate of round
  r - 1 up to float32 rounding, and anyone holding the committed models recomputes it bit for
  bit (centered clipping starts from it).
- ``history``: per row, the sum of that node's updates (its returned weights minus the round's
  global model) over this and every earlier round it was aggregated in (FoolsGold).
- ``reference``: the server's own update on its clean root set, from a callable the server
  gives (FLTrust); the state only passes it on.
- ``seed``: the rule's randomness, the aggregator's seed, drawn per round by
  :meth:`RoundContext.rng`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from bflsim.aggregators.base import RoundContext, Rule
from bflsim.vectors import Weights, flatten

ReferenceFn = Callable[[int, Weights], NDArray[np.floating]]


class DefenceState:
    """The carried state of one run for ``rule`` (nothing is kept for rules that need nothing)."""

    def __init__(self, rule: Rule, seed: int = 0, reference: ReferenceFn | None = None) -> None:
        self.needs = frozenset(rule.needs)
        self.seed = int(seed)
        self.reference = reference
        self.before: NDArray[np.float64] | None = None  # the global model of the previous round, flat
        self.history: dict[int, NDArray[np.float64]] = {}

    def context(
        self, server_round: int, nodes: Sequence[int], updates: Sequence[Weights], global_weights: Weights
    ) -> RoundContext:
        """The round's context for ``updates`` (in ``nodes`` order) opened from ``global_weights``."""
        flat = _flat(global_weights)
        previous = history = reference = None
        if "previous" in self.needs and self.before is not None:
            previous = flat - self.before
        if "history" in self.needs:
            past = [self.history.get(int(node)) for node in nodes]
            history = np.stack([(_flat(u) - flat) + (0.0 if h is None else h) for u, h in zip(updates, past, strict=True)]) \
                if len(updates) else np.empty((0, flat.size))
        if "reference" in self.needs:
            if self.reference is None:
                raise ValueError("the rule needs the server's reference update and none was given")
            reference = np.asarray(self.reference(server_round, global_weights), dtype=np.float64)
        return RoundContext(server_round, self.seed, reference=reference, previous=previous, history=history)

    def advance(self, nodes: Sequence[int], updates: Sequence[Weights], global_weights: Weights) -> None:
        """After a round opened from ``global_weights`` aggregated ``updates`` of ``nodes``."""
        flat = _flat(global_weights)
        if "previous" in self.needs:
            self.before = flat
        if "history" in self.needs:
            for node, update in zip(nodes, updates, strict=True):
                delta = _flat(update) - flat
                self.history[int(node)] = self.history.get(int(node), 0.0) + delta

    # --- checkpoint -------------------------------------------------------------------------

    def arrays(self) -> list[np.ndarray]:
        """The state as arrays for a checkpoint: [nodes, history rows, before] (empty when unused)."""
        nodes = np.array(sorted(self.history), dtype=np.int64)
        rows = np.stack([self.history[int(n)] for n in nodes]) if len(nodes) else np.empty((0, 0))
        before = self.before if self.before is not None else np.empty(0)
        return [nodes, rows, before]

    def restore(self, arrays: Sequence[np.ndarray]) -> None:
        """Carry on from :meth:`arrays`."""
        nodes, rows, before = arrays
        self.history = {int(n): np.asarray(r, dtype=np.float64) for n, r in zip(nodes, rows, strict=True)}
        self.before = np.asarray(before, dtype=np.float64) if np.size(before) else None


def _flat(weights: Weights) -> NDArray[np.float64]:
    return flatten(weights)[0].astype(np.float64)
