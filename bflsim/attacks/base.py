"""What every poisoning attack shares: the :class:`Attack` record, its input, its errors.

An attack is one frozen dataclass holding its parameters (ByzFL's shape). It may act at two
points of a malicious node's round, each optional:

- :meth:`Attack.poison_data`: on the node's features and labels before it trains (label
  flipping, backdoor triggers);
- :meth:`Attack.poison_update`: on the update the node sends, given an :class:`AttackInput`.

What an attacker may know is the attack's ``knows``: ``"own"`` (its own honest update),
``"coalition"`` (the honest updates of every malicious node of the round: colluding
attacks such as ALIE or IPM) or ``"round"`` (every honest update of the round: omniscient).
An attack never sees the defence it faces. Updates are deltas (local - global), flat
vectors; the output keeps the update's shape and floating dtype (float64 for integers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Knowledge = Literal["own", "coalition", "round"]


class AttackError(ValueError):
    """An attack name, parameter or value is not valid; the message names it."""


@dataclass(frozen=True)
class AttackInput:
    """What a malicious node may use to craft its update this round.

    ``coalition`` (rows: the round's malicious nodes, ascending, its own among them) is set
    for attacks that know at least the coalition; ``honest`` (rows: every node of the
    round's cohort, ascending, the malicious ones' honest updates among them) only for
    attacks that know the whole round. ``num_nodes``: the size of the round's cohort (a
    protocol parameter every node knows), set with ``coalition``.
    """

    own_update: NDArray[np.floating]
    rng: np.random.Generator
    coalition: NDArray[np.floating] | None = None
    honest: NDArray[np.floating] | None = None
    num_nodes: int | None = None


@dataclass(frozen=True)
class Attack:
    """Base of every attack record: by default it changes nothing.

    Subclasses set the class variables, add their parameters as fields with defaults, check
    them in ``__post_init__`` (messages start with the parameter's name, so the config can
    name the key ``attack.params.<name>``), and override what they poison.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    reference: ClassVar[str] = ""
    knows: ClassVar[Knowledge] = "own"

    @property
    def trains(self) -> bool:
        """Whether the node needs its honest update (else it skips local training)."""
        return True

    @property
    def acts_on_data(self) -> bool:
        return type(self).poison_data is not Attack.poison_data

    @property
    def acts_on_update(self) -> bool:
        return type(self).poison_update is not Attack.poison_update

    def poison_data(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], num_classes: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The features and labels the node trains on instead of its own (copies)."""
        return features, labels

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        """The update the node sends instead of its honest one."""
        return attack_input.own_update


def finite_number(value: Any) -> bool:
    """A finite real number that is not a bool."""
    real = isinstance(value, int | float | np.integer | np.floating)
    return real and not isinstance(value, bool) and math.isfinite(value)


def as_update(update: ArrayLike) -> NDArray[np.floating]:
    """A real-valued array; integers become float64."""
    x = np.asarray(update)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.astype(np.float64)
    if not np.issubdtype(x.dtype, np.floating):
        raise AttackError(f"an update must hold real numbers; got dtype {x.dtype}")
    return x
