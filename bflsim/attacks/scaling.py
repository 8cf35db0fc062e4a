"""Attacks that rescale the honest update: sign flip and boosting.

- sign flip: send ``-scale * update`` (Li et al., "RSA: Byzantine-Robust Stochastic
  Aggregation Methods for Distributed Learning from Heterogeneous Datasets", AAAI 2019);
- scaling: send ``factor * update``, the boosting behind model replacement (Bagdasaryan et
  al., "How To Backdoor Federated Learning", AISTATS 2020).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import Attack, AttackError, AttackInput, as_update, finite_number


def sign_flip(update: ArrayLike, *, scale: float = 1.0) -> NDArray[np.floating]:
    """``-scale * update``, with ``scale > 0``."""
    SignFlip(scale=scale)  # checks the parameter
    x = as_update(update)
    return (-scale * x).astype(x.dtype)


def scaling(update: ArrayLike, *, factor: float) -> NDArray[np.floating]:
    """``factor * update`` (e.g. ``factor = n / server_lr`` to replace the global model)."""
    Scaling(factor=factor)
    x = as_update(update)
    return (factor * x).astype(x.dtype)


@dataclass(frozen=True)
class SignFlip(Attack):
    """Send the honest update reversed and scaled: ``-scale * update``."""

    name: ClassVar[str] = "sign_flip"
    label: ClassVar[str] = "sign flip"
    reference: ClassVar[str] = "Li et al., AAAI 2019"

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not finite_number(self.scale) or self.scale <= 0:
            raise AttackError(f"scale must be a finite number > 0; got {self.scale!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        return sign_flip(attack_input.own_update, scale=self.scale)


@dataclass(frozen=True)
class Scaling(Attack):
    """Send the honest update boosted: ``factor * update``."""

    name: ClassVar[str] = "scaling"
    label: ClassVar[str] = "scaling"
    reference: ClassVar[str] = "Bagdasaryan et al., AISTATS 2020"

    factor: float = 10.0

    def __post_init__(self) -> None:
        if not finite_number(self.factor):
            raise AttackError(f"factor must be a finite number; got {self.factor!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        return scaling(attack_input.own_update, factor=self.factor)
