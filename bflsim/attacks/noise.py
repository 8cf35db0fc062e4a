"""The Gaussian Byzantine worker: send N(mu, sigma^2) noise instead of the update, or add it.

Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
NeurIPS 2017; Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning", USENIX Security 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import Attack, AttackError, AttackInput, as_update, finite_number

GAUSSIAN_MODES = ("replace", "add")


def gaussian(
    update: ArrayLike, *, mode: str, mu: float = 0.0, sigma: float = 1.0, rng: np.random.Generator
) -> NDArray[np.floating]:
    """``mode="replace"``: N(mu, sigma^2) noise of the update's shape; ``"add"``: update + it.

    The same ``rng`` state draws the same noise in both modes.
    """
    Gaussian(mode=mode, mu=mu, sigma=sigma)  # checks the parameters
    if not isinstance(rng, np.random.Generator):
        raise AttackError(f"rng must be a numpy.random.Generator; got {rng!r}")
    x = as_update(update)
    noise = rng.normal(mu, sigma, size=x.shape)
    return (noise if mode == "replace" else x + noise).astype(x.dtype)


@dataclass(frozen=True)
class Gaussian(Attack):
    """Replace the update by Gaussian noise (``mode = "replace"``), or add noise to it."""

    name: ClassVar[str] = "gaussian"
    label: ClassVar[str] = "Gaussian"
    reference: ClassVar[str] = "Blanchard et al., NeurIPS 2017; Fang et al., USENIX Security 2020"

    mode: Literal["replace", "add"] = "replace"
    mu: float = 0.0
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in GAUSSIAN_MODES:
            raise AttackError(f"mode must be one of {list(GAUSSIAN_MODES)}; got {self.mode!r}")
        if not finite_number(self.mu):
            raise AttackError(f"mu must be a finite number; got {self.mu!r}")
        if not finite_number(self.sigma) or self.sigma < 0:
            raise AttackError(f"sigma must be a finite number >= 0; got {self.sigma!r}")

    @property
    def trains(self) -> bool:
        return self.mode == "add"  # replacing noise does not need the honest update

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        return gaussian(attack_input.own_update, mode=self.mode, mu=self.mu, sigma=self.sigma, rng=attack_input.rng)
