"""Attacks that need no knowledge of the defence: Min-Max, Min-Sum and Mimic.

- Min-Max and Min-Sum (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing
  Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, the
  AGR-agnostic attacks): every attacker sends ``mean(benign) + gamma * p``, with ``p`` a
  perturbation direction (``"unit_vec"``: ``-mean / ||mean||``, ``"std"``: ``-std``,
  ``"sign"``: ``-sign(mean)``) and ``gamma`` the largest that keeps the malicious update
  inside the benign cloud:

  * Min-Max: ``max_i ||m - x_i|| <= max_{i,j} ||x_i - x_j||`` (no farther from any benign
    update than the two farthest benign updates are from each other);
  * Min-Sum: ``sum_i ||m - x_i||^2 <= max_i sum_j ||x_i - x_j||^2`` (its sum of squared
    distances to the benign updates no larger than the largest such sum of a benign one).

  ``gamma`` is found by the paper's search (the authors' code, ``our_attack_dist`` and
  ``our_attack_score``): start at ``gamma_init`` (10), step ``gamma_init``; each try halves
  the step and moves up after a success, down after a failure; stop when the last success
  and the current try differ by at most ``tolerance`` (1e-5); the last success is sent (0
  when none). The search never goes beyond ``2 * gamma_init``: with large updates raise
  ``gamma_init``. The paper's Min-Sum bound is the *largest* benign sum, as here; the
  authors' released notebooks compare with the smallest one, a stricter variant not
  followed.

  The benign set is the round's benign updates (:attr:`AttackInput.benign`), as in the
  authors' code, where the malicious clients compute no gradient of their own: the
  condition is about the cloud the server actually receives, and the attackers' own honest
  updates are never sent, so counting them would let the malicious update sit farther out
  than any received update is (their mean and spread would be from a different set than the
  one the defence compares with).
- Mimic (Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
  Bucketing", ICLR 2022): every attacker sends a copy of one benign node's update, so that
  the defence over-weights that node and, on heterogeneous data, under-represents the
  others. ``target`` names the benign row (index among the round's benign rows, ascending by
  node id); unset, the paper's heuristic picks, each round, the benign row with the largest
  ``|projection|`` on the top principal direction of the centred benign rows (the one most
  off the mean along the direction the benign updates disagree on most). The authors' code
  estimates that direction by power iteration across a warm-up of rounds and then keeps one
  node; a record here is stateless, so the direction is the exact one of the round (SVD).

Every attacker of a round computes the same vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import Attack, AttackError, AttackInput, as_update, finite_number

PERTURBATIONS = ("unit_vec", "std", "sign")
"""Min-Max / Min-Sum perturbation directions, as the authors' code names them."""


def benign_rows(benign: ArrayLike, attack: str) -> NDArray[np.float64]:
    """The benign updates as a float64 matrix with at least one row, or :class:`AttackError`."""
    rows = as_update(benign)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise AttackError(f"{attack} needs at least one benign update as rows; got shape {rows.shape}")
    return rows.astype(np.float64)


def perturbation(benign: ArrayLike, kind: str) -> NDArray[np.float64]:
    """The direction ``p`` of Min-Max / Min-Sum: ``"unit_vec"`` ``-mean / ||mean||`` (0 for a
    zero mean), ``"std"`` ``-std`` (per coordinate, ddof 1 as the authors' ``torch.std``; 0
    for one row), ``"sign"`` ``-sign(mean)``."""
    if kind not in PERTURBATIONS:
        raise AttackError(f"perturbation must be one of {list(PERTURBATIONS)}; got {kind!r}")
    x = benign_rows(benign, "the perturbation")
    mean = x.mean(axis=0)
    if kind == "unit_vec":
        norm = float(np.linalg.norm(mean))
        return -mean / norm if norm > 0 else np.zeros_like(mean)
    if kind == "std":
        return -x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros_like(mean)
    return -np.sign(mean)


def search_gamma(accepts: Callable[[float], bool], gamma_init: float = 10.0, tolerance: float = 1e-5) -> float:
    """The largest ``gamma`` that ``accepts``, by the authors' halving search (module docstring);
    0.0 when no tried value is accepted."""
    gamma, step, success = float(gamma_init), float(gamma_init), 0.0
    while abs(success - gamma) > tolerance:
        if accepts(gamma):
            success = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return success


def _sq_distances_to(rows: NDArray[np.float64], point: NDArray[np.float64]) -> NDArray[np.float64]:
    return ((rows - point) ** 2).sum(axis=1)


def _pairwise_sq(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, n) squared distances, one row at a time (n is a cohort, d may be large)."""
    return np.stack([_sq_distances_to(rows, row) for row in rows])


def min_max(
    benign: ArrayLike, perturbation_kind: str = "unit_vec", gamma_init: float = 10.0, tolerance: float = 1e-5
) -> NDArray[np.floating]:
    """Min-Max: ``mean + gamma * p`` with the largest ``gamma`` whose largest distance to a
    benign row is at most the largest distance between two benign rows."""
    _check_search(perturbation_kind, gamma_init, tolerance)
    x = benign_rows(benign, "Min-Max")
    mean, direction = x.mean(axis=0), perturbation(x, perturbation_kind)
    bound = _pairwise_sq(x).max()
    gamma = search_gamma(lambda g: _sq_distances_to(x, mean + g * direction).max() <= bound, gamma_init, tolerance)
    return (mean + gamma * direction).astype(as_update(benign).dtype)


def min_sum(
    benign: ArrayLike, perturbation_kind: str = "unit_vec", gamma_init: float = 10.0, tolerance: float = 1e-5
) -> NDArray[np.floating]:
    """Min-Sum: ``mean + gamma * p`` with the largest ``gamma`` whose sum of squared distances
    to the benign rows is at most the largest such sum of a benign row."""
    _check_search(perturbation_kind, gamma_init, tolerance)
    x = benign_rows(benign, "Min-Sum")
    mean, direction = x.mean(axis=0), perturbation(x, perturbation_kind)
    bound = _pairwise_sq(x).sum(axis=1).max()
    gamma = search_gamma(lambda g: _sq_distances_to(x, mean + g * direction).sum() <= bound, gamma_init, tolerance)
    return (mean + gamma * direction).astype(as_update(benign).dtype)


def mimic_target(benign: ArrayLike) -> int:
    """The paper's heuristic: the benign row with the largest ``|projection|`` on the top
    principal direction of the centred rows (ties and a cloud of equal rows: the first)."""
    x = benign_rows(benign, "Mimic")
    centred = x - x.mean(axis=0)
    if len(x) == 1 or not np.any(centred):
        return 0
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    return int(np.argmax(np.abs(centred @ direction)))


def mimic(benign: ArrayLike, target: int | None = None) -> NDArray[np.floating]:
    """A copy of benign row ``target`` (:func:`mimic_target` when None)."""
    Mimic(target=target)  # checks the parameter
    rows = as_update(benign)
    x = benign_rows(rows, "Mimic")
    chosen = mimic_target(x) if target is None else target
    if not 0 <= chosen < len(x):
        raise AttackError(f"target must index one of the round's {len(x)} benign updates (0..{len(x) - 1}); got {chosen}")
    return rows[chosen].copy()


def _benign_of(attack_input: AttackInput, label: str, threat_model: str) -> NDArray[np.floating]:
    if attack_input.benign is None:
        raise AttackError(f"{label} needs the honest updates of the round's benign nodes (threat model {threat_model!r})")
    if len(attack_input.benign) == 0:
        raise AttackError(f"{label} needs at least one benign node in the round; every node of the cohort is malicious")
    return attack_input.benign


def _check_search(perturbation_kind: str, gamma_init: object, tolerance: object) -> None:
    if perturbation_kind not in PERTURBATIONS:
        raise AttackError(f"perturbation must be one of {list(PERTURBATIONS)}; got {perturbation_kind!r}")
    if not finite_number(gamma_init) or gamma_init <= 0:
        raise AttackError(f"gamma_init must be a finite number > 0; got {gamma_init!r}")
    if not finite_number(tolerance) or tolerance <= 0:
        raise AttackError(f"tolerance must be a finite number > 0; got {tolerance!r}")


@dataclass(frozen=True)
class _AgrAgnostic(Attack):
    """Min-Max and Min-Sum: ``mean(benign) + gamma * p``, gamma the largest that keeps the
    attack's condition (its ``search``), found by the authors' halving search."""

    reference: ClassVar[str] = "Shejwalkar & Houmansadr, NDSS 2021"
    threat_model: ClassVar = "omniscient"
    search: ClassVar[Callable[..., NDArray[np.floating]]]

    perturbation: str = "unit_vec"
    gamma_init: float = 10.0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        _check_search(self.perturbation, self.gamma_init, self.tolerance)

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        benign = _benign_of(attack_input, self.label, self.threat_model)
        sent = type(self).search(benign, self.perturbation, self.gamma_init, self.tolerance)
        return sent.astype(as_update(attack_input.own_update).dtype)


@dataclass(frozen=True)
class MinMax(_AgrAgnostic):
    """Send ``mean(benign) + gamma * p``, no farther from any benign update than the benign
    updates are from each other."""

    name: ClassVar[str] = "min_max"
    label: ClassVar[str] = "Min-Max"
    search: ClassVar = staticmethod(min_max)


@dataclass(frozen=True)
class MinSum(_AgrAgnostic):
    """Send ``mean(benign) + gamma * p``, its sum of squared distances to the benign updates
    no larger than a benign update's."""

    name: ClassVar[str] = "min_sum"
    label: ClassVar[str] = "Min-Sum"
    search: ClassVar = staticmethod(min_sum)


@dataclass(frozen=True)
class Mimic(Attack):
    """Send a copy of one benign node's update (``target``: index among the round's benign
    rows; unset: the paper's per-round heuristic)."""

    name: ClassVar[str] = "mimic"
    label: ClassVar[str] = "Mimic"
    reference: ClassVar[str] = "Karimireddy, He & Jaggi, ICLR 2022"
    threat_model: ClassVar = "omniscient"

    target: int | None = None

    def __post_init__(self) -> None:
        if self.target is not None and (
            isinstance(self.target, bool) or not isinstance(self.target, int | np.integer) or self.target < 0
        ):
            raise AttackError(f"target must be an integer >= 0 (or unset for the paper's heuristic); got {self.target!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        benign = _benign_of(attack_input, self.label, self.threat_model)
        return mimic(benign, self.target).astype(as_update(attack_input.own_update).dtype)
