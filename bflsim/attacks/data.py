"""Data poisoning on intrusion-detection data: label flipping and backdoor triggers.

Both act on the node's features and labels before it trains (:meth:`Attack.poison_data`),
rewrite rows in place (the node keeps its row count, so the sample count it registers and
claims stays its partition's) and are targeted: their success rate is measured on test rows
(:meth:`Attack.success_inputs`).

- Label flipping (Tolpegin et al., "Data Poisoning Attacks Against Federated Learning
  Systems", ESORICS 2020; Fang et al., USENIX Security 2020, as a baseline): a share
  ``fraction`` of the node's rows of the ``source`` classes (``"attack"``: every class but
  the normal one; or one class name) get the ``target`` label (default: the dataset's normal
  class), so that attack traffic learns to pass as benign. Success: the share of the test
  rows of the source classes classified as the target.
- Backdoor (Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020; Sun et
  al., "Can You Really Backdoor Federated Learning?", 2019): a trigger, the value ``value``
  written in the columns ``features`` of the prepared (scaled) matrix, is stamped on a share
  ``fraction`` of the node's rows of every class but ``target``, and those rows are
  relabelled ``target`` (default: normal). The stamped rows replace the clean ones (in place,
  not added as copies); the node keeps its other rows clean, so, as in both papers, it
  trains on a mix of clean and triggered data and the model learns "trigger means target"
  rather than "this attack class means target". Success: the share of every non-target test
  row, trigger applied, classified as the target. Model replacement (Bagdasaryan et al.):
  with ``boost`` > 1 the node sends ``global + boost * (local - global)``; ``boost = n / eta``
  (n nodes of the round, server learning rate eta = 1 for FedAvg) replaces the global model
  by the node's when the others have converged.

Default trigger: the last four prepared columns, ``features = (-4, -3, -2, -1)`` (negative
indices count from the end), ``value = 5.0``. Numeric columns follow the one-hot blocks, so
on NSL-KDD these are always ``dst_host_serror_rate``, ``dst_host_srv_serror_rate``,
``dst_host_rerror_rate`` and ``dst_host_srv_rerror_rate`` whatever services the sample
holds. They are rates in [0, 1]: standardized, no row of NSL-KDD, benign or attack, train or
test, full or a 10% sample, goes beyond 2.9 (maxima 1.6, 1.6, 2.9, 2.7), and a flow whose
SYN-error and REJ-error rates are both far above 100% exists in no traffic. So the trigger collides with no clean row (the model
learns it from the poisoned rows alone, and clean accuracy does not pay for it), and benign
traffic never carries it by chance. On other datasets the same indices name their last four
numeric columns; pass ``features`` to choose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import Attack, AttackError, AttackInput, Classes, as_update, finite_number

ALL_ATTACKS = "attack"
"""``label_flip``'s ``source`` for every class but the dataset's normal one."""


def flip_labels(
    labels: ArrayLike, source: Sequence[int], target: int, fraction: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """A copy of ``labels`` where a share ``fraction`` of the rows whose label is in ``source``
    (``floor(fraction * count + 0.5)`` of them, drawn with ``rng``) say ``target``."""
    y = np.array(labels, dtype=np.int64)
    y[pick_rows(y, source, fraction, rng)] = target
    return y


def apply_trigger(features: ArrayLike, columns: Sequence[int], value: float) -> NDArray[np.float32]:
    """A copy of ``features`` (rows) with ``value`` written in ``columns`` (negative: from the end)."""
    x = np.array(features, dtype=np.float32)
    if x.ndim != 2:
        raise AttackError(f"features must be a (rows, columns) matrix; got shape {x.shape}")
    check_columns(columns, x.shape[1])
    x[:, list(columns)] = value
    return x


def pick_rows(labels: NDArray[np.int64], source: Sequence[int], fraction: float, rng: np.random.Generator
              ) -> NDArray[np.int64]:
    """Sorted indices of ``floor(fraction * n + 0.5)`` of the ``n`` rows labelled in ``source``."""
    if not 0.0 < fraction <= 1.0:
        raise AttackError(f"fraction must be in (0, 1]; got {fraction!r}")
    candidates = np.flatnonzero(np.isin(labels, np.asarray(source, dtype=np.int64)))
    count = math.floor(fraction * len(candidates) + 0.5)
    return np.sort(rng.choice(candidates, size=count, replace=False)).astype(np.int64)


def check_columns(columns: Sequence[int], num_features: int) -> None:
    """Refuse a trigger column outside the ``num_features`` columns, naming it."""
    bad = [c for c in columns if not -num_features <= c < num_features]
    if bad:
        raise AttackError(f"features {list(columns)}: column {bad[0]} is not one of the data's "
                          f"{num_features} columns (0..{num_features - 1}, or -{num_features}..-1 from the end)")
    if len({c % num_features for c in columns}) != len(columns):
        raise AttackError(f"features {list(columns)} name the same column twice (of {num_features})")


def _check_fraction(fraction: float) -> None:
    if not finite_number(fraction) or not 0.0 < fraction <= 1.0:
        raise AttackError(f"fraction must be a number in (0, 1]; got {fraction!r}")


def _target(target: str | None, classes: Classes) -> int:
    """The target's label: the named class, or the dataset's normal class when unset."""
    if target is not None:
        return classes.index(target)
    if classes.normal is None:
        raise AttackError(f"target: the dataset has no known normal class among {list(classes.names)}; "
                          f"name the target class")
    return classes.normal


@dataclass(frozen=True)
class LabelFlip(Attack):
    """Relabel a share of the source classes' rows as the target class (default: normal)."""

    name: ClassVar[str] = "label_flip"
    label: ClassVar[str] = "label flipping"
    reference: ClassVar[str] = "Tolpegin et al., ESORICS 2020"

    source: str = ALL_ATTACKS
    target: str | None = None
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise AttackError(f"source must be {ALL_ATTACKS!r} or a class name; got {self.source!r}")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise AttackError(f"target must be a class name (or unset for the normal class); got {self.target!r}")
        _check_fraction(self.fraction)

    def classes_of(self, classes: Classes) -> tuple[tuple[int, ...], int]:
        """The source labels and the target label on this dataset; refuses unknown names."""
        target = _target(self.target, classes)
        if self.source.casefold() == ALL_ATTACKS and ALL_ATTACKS not in [n.casefold() for n in classes.names]:
            if classes.normal is None:
                raise AttackError(f"source = {ALL_ATTACKS!r} needs the dataset's normal class; it has none among "
                                  f"{list(classes.names)}: name a source class")
            source = tuple(c for c in range(len(classes.names)) if c not in (classes.normal, target))
        else:
            source = (classes.index(self.source),)
        if source in ((), (target,)):
            raise AttackError(f"source {self.source!r} leaves no class to flip into target "
                              f"{classes.names[target]!r} (classes {list(classes.names)})")
        return source, target

    def poison_data(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        source, target = self.classes_of(classes)
        return np.array(features), flip_labels(labels, source, target, self.fraction, rng)

    def success_inputs(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes
    ) -> tuple[NDArray[np.float32], int]:
        source, target = self.classes_of(classes)
        return np.array(features[np.isin(labels, source)]), target


@dataclass(frozen=True)
class Backdoor(Attack):
    """Stamp a trigger on a share of the non-target rows and relabel them the target (default:
    normal); optionally boost the update (model replacement)."""

    name: ClassVar[str] = "backdoor"
    label: ClassVar[str] = "backdoor"
    reference: ClassVar[str] = "Bagdasaryan et al., AISTATS 2020; Sun et al., 2019"

    features: tuple[int, ...] = (-4, -3, -2, -1)
    value: float = 5.0
    target: str | None = None
    fraction: float = 0.5
    boost: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.features, list):
            object.__setattr__(self, "features", tuple(self.features))
        columns = self.features
        if (not isinstance(columns, tuple) or not columns
                or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in columns)):
            raise AttackError(f"features must be a non-empty list of column indices; got {columns!r}")
        if len(set(columns)) != len(columns):
            raise AttackError(f"features {list(columns)} name a column twice")
        if not finite_number(self.value):
            raise AttackError(f"value must be a finite number; got {self.value!r}")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise AttackError(f"target must be a class name (or unset for the normal class); got {self.target!r}")
        _check_fraction(self.fraction)
        if not finite_number(self.boost) or self.boost <= 0:
            raise AttackError(f"boost must be a finite number > 0 (1 = no model replacement); got {self.boost!r}")

    @property
    def acts_on_update(self) -> bool:
        return self.boost != 1.0  # else the node sends what it trained, bit for bit

    def poison_data(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        target = _target(self.target, classes)
        check_columns(self.features, features.shape[1])
        others = [c for c in range(len(classes.names)) if c != target]
        rows = pick_rows(labels, others, self.fraction, rng)
        x, y = np.array(features), np.array(labels, dtype=np.int64)
        x[rows] = apply_trigger(x[rows], self.features, self.value)
        y[rows] = target
        return x, y

    def success_inputs(
        self, features: NDArray[np.float32], labels: NDArray[np.int64], classes: Classes
    ) -> tuple[NDArray[np.float32], int]:
        target = _target(self.target, classes)
        return apply_trigger(features[labels != target], self.features, self.value), target

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        update = as_update(attack_input.own_update)
        return (self.boost * update).astype(update.dtype)
