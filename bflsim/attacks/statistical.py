"""Attacks built from the statistics of honest updates: ALIE and IPM.

- ALIE, "A Little Is Enough" (Baruch et al., NeurIPS 2019): the colluding attackers estimate
  the per-coordinate mean ``mu`` and standard deviation ``sigma`` of honest updates from their
  own honest updates and all send ``mu - z * sigma``: close enough to the honest cloud that
  distance- and rank-based rules keep it, shifted on every coordinate at once. ``z`` defaults
  to the paper's ``z_max``: with ``s = floor(n / 2 + 1) - f`` supporters needed for a
  majority, ``z_max = Phi^-1((n - s) / n)`` (n = 20, f = 4: 0.385).
- IPM, inner-product manipulation (Xie et al., "Fall of Empires", UAI 2020): omniscient
  attackers send ``-epsilon`` times the mean of the round's benign updates, so that the
  aggregate's inner product with the true update turns negative (large ``epsilon``) or
  the attackers look like the smallest, most central updates to Krum (small ``epsilon``).

Both are pure functions of the updates they are given (:class:`bflsim.attacks.AttackInput`);
every attacker of a round computes the same vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import Attack, AttackError, AttackInput, as_update, finite_number


def alie_z(num_nodes: int, num_malicious: int) -> float:
    """Baruch et al.'s ``z_max`` for ``num_malicious`` attackers among ``num_nodes``.

    ``s = floor(n / 2 + 1) - f`` honest supporters give the attackers a majority; ``z_max``
    is the standard normal quantile of ``(n - s) / n``.
    """
    n, f = int(num_nodes), int(num_malicious)
    if not 0 < f < n:
        raise AttackError(f"ALIE needs 0 < f < n attackers among n nodes; got f={f}, n={n}")
    supporters = math.floor(n / 2 + 1) - f
    share = (n - supporters) / n
    if not 0.0 < share < 1.0:
        raise AttackError(f"ALIE's z_max is undefined for f={f} of n={n} (quantile {share:g})")
    return NormalDist().inv_cdf(share)


def alie(coalition: ArrayLike, z: float) -> NDArray[np.floating]:
    """``mean - z * std`` per coordinate of the coalition's honest updates (rows); the sample
    standard deviation (ddof 1) as the reference implementations use, 0 for a lone attacker."""
    rows = as_update(coalition)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise AttackError(f"ALIE needs the coalition's updates as rows; got shape {rows.shape}")
    x = rows.astype(np.float64)
    spread = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    return (x.mean(axis=0) - z * spread).astype(rows.dtype)


def ipm(benign: ArrayLike, epsilon: float) -> NDArray[np.floating]:
    """``-epsilon`` times the mean of the benign updates (rows)."""
    rows = as_update(benign)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise AttackError(f"IPM needs at least one benign update as rows; got shape {rows.shape}")
    return (-epsilon * rows.astype(np.float64).mean(axis=0)).astype(rows.dtype)


@dataclass(frozen=True)
class Alie(Attack):
    """Send ``mu - z * sigma`` of the coalition's honest updates (``z``: the paper's ``z_max``
    for the round's cohort when unset)."""

    name: ClassVar[str] = "alie"
    label: ClassVar[str] = "ALIE"
    reference: ClassVar[str] = "Baruch et al., NeurIPS 2019"
    threat_model: ClassVar = "colluding"

    z: float | None = None

    def __post_init__(self) -> None:
        if self.z is not None and not finite_number(self.z):
            raise AttackError(f"z must be a finite number (or unset for the paper's z_max); got {self.z!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        coalition = attack_input.coalition
        if coalition is None:
            raise AttackError("ALIE needs the coalition's honest updates (threat model 'colluding')")
        z = self.z
        if z is None:
            if attack_input.num_nodes is None:
                raise AttackError("ALIE's z_max needs the cohort size; set attack.params.z")
            z = alie_z(attack_input.num_nodes, len(coalition))
        return alie(coalition, z).astype(as_update(attack_input.own_update).dtype)


@dataclass(frozen=True)
class Ipm(Attack):
    """Send ``-epsilon`` times the mean of the round's benign updates."""

    name: ClassVar[str] = "ipm"
    label: ClassVar[str] = "IPM"
    reference: ClassVar[str] = "Xie et al., UAI 2020"
    threat_model: ClassVar = "omniscient"

    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if not finite_number(self.epsilon) or self.epsilon <= 0:
            raise AttackError(f"epsilon must be a finite number > 0; got {self.epsilon!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        everyone, coalition = attack_input.honest, attack_input.coalition
        if everyone is None or coalition is None:
            raise AttackError("IPM needs every honest update of the round (threat model 'omniscient')")
        benign = len(everyone) - len(coalition)
        if benign < 1:
            raise AttackError("IPM needs at least one benign node in the round; every node of the cohort is malicious")
        # the coalition's rows are among the round's: the benign mean without telling rows apart
        total = everyone.astype(np.float64).sum(axis=0) - coalition.astype(np.float64).sum(axis=0)
        return ipm((total / benign)[None, :], self.epsilon).astype(as_update(attack_input.own_update).dtype)
