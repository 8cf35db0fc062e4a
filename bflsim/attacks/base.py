"""What every poisoning attack shares: the :class:`Attack` record, its input, its errors.

An attack is one frozen dataclass holding its parameters (ByzFL's shape). It may act at two
points of a malicious node's round, each optional:

- :meth:`Attack.poison_data`: on the node's features and labels before it trains (label
  flipping, backdoor triggers);
- :meth:`Attack.poison_update`: on the update the node sends, given an :class:`AttackInput`.

What an attacker may know is its threat model (:data:`THREAT_MODELS`, each granting what the
one before it grants and more): ``"independent"`` (its own data and honest update),
``"colluding"`` (the honest updates of every malicious node of the round: ALIE),
``"omniscient"`` (every honest update of the round: IPM, Min-Max) and ``"adaptive"`` (also
the defence's name and parameters, a :class:`DefenceView` the experiment states: Fang's
attacks). An attack's ``threat_model`` is the least it needs; the experiment grants one
(``attack.threat_model``) and is refused when it grants less. Nothing is discovered by
looking at the server: the defence an adaptive attacker is told is the experiment's setting.
Updates are deltas (local - global), flat vectors; the output keeps the update's shape and
floating dtype (float64 for integers).

Data poisoning (:meth:`Attack.poison_data`) changes what the node trains on; a targeted or
backdoor attack also says how its success is measured (:meth:`Attack.success_inputs`: the
test rows as the attacker would present them and the class it wants them to get).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

ThreatModel = Literal["independent", "colluding", "omniscient", "adaptive"]
THREAT_MODELS: tuple[ThreatModel, ...] = ("independent", "colluding", "omniscient", "adaptive")
"""From least to most knowledge; each grants what the ones before it grant."""


def grants(granted: str, needed: str) -> bool:
    """Whether threat model ``granted`` gives an attacker what ``needed`` asks for."""
    return THREAT_MODELS.index(granted) >= THREAT_MODELS.index(needed)  # type: ignore[arg-type]


class AttackError(ValueError):
    """An attack name, parameter or value is not valid; the message names it."""


@dataclass(frozen=True)
class Classes:
    """The dataset's classes as a data-poisoning attack sees them: ``names`` (index = label)
    and ``normal``, the index of the benign class (None when the dataset has none)."""

    names: tuple[str, ...]
    normal: int | None

    def index(self, name: str) -> int:
        """The label of class ``name`` (case-insensitive); :class:`AttackError` naming the classes."""
        folded = [n.casefold() for n in self.names]
        if str(name).casefold() not in folded:
            raise AttackError(f"class {name!r} is not one of the dataset's classes {list(self.names)}")
        return folded.index(str(name).casefold())


@dataclass(frozen=True)
class DefenceView:
    """What an adaptive attacker is told of the defence: the experiment's aggregator setting
    (``name`` as in :data:`bflsim.aggregators.AGGREGATORS`, its resolved ``params``, and the
    number of attackers it assumes)."""

    name: str
    params: Mapping[str, Any]
    assumed_malicious: int


@dataclass(frozen=True)
class AttackInput:
    """What a malicious node may use to craft its update this round.

    ``coalition`` (rows: the round's malicious nodes, ascending, its own among them) is set
    for attacks that know at least the coalition; ``honest`` (rows: every node of the
    round's cohort, ascending, the malicious ones' honest updates among them) only for
    attacks that know the whole round; ``benign`` (rows: the cohort's non-malicious nodes,
    ascending; none when every node is malicious) with ``honest``, the updates the server
    receives from honest nodes. ``num_nodes``: the size of the round's cohort (a protocol
    parameter every node knows), set with ``coalition``.
    """

    own_update: NDArray[np.floating]
    rng: np.random.Generator
    coalition: NDArray[np.floating] | None = None
    honest: NDArray[np.floating] | None = None
    benign: NDArray[np.floating] | None = None
    num_nodes: int | None = None
    defence: DefenceView | None = None


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
    threat_model: ClassVar[ThreatModel] = "independent"

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

    @property
    def targeted(self) -> bool:
        """Whether the attack has a success rate (:meth:`success_inputs`)."""
        return type(self).success_inputs is not Attack.success_inputs

    def check_setting(self, cohort_size: int, defence: DefenceView | None) -> None:
        """Raise :class:`AttackError` if the attack cannot run in a round of ``cohort_size``
        against ``defence`` (set for adaptive attacks); checked before a run starts."""

    def poison_data(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The features and labels the node trains on instead of its own (copies)."""
        return features, labels

    def success_inputs(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes
    ) -> tuple[NDArray[np.float32], int] | None:
        """The test rows on which the attack's success is measured, as the attacker would
        present them (a backdoor's trigger applied), and the class index it wants them to
        get; the attack success rate is the share of those rows the model puts in that
        class. None: the attack has no target (untargeted attacks)."""
        return None

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
