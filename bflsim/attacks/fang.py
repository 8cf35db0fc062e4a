"""Fang et al.'s full-knowledge local model poisoning attacks, in delta form.

Fang, Cao, Jia & Gong, "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning", USENIX Security 2020. The attackers know every benign update of the round and
the defence they face (threat model ``"adaptive"``; the defence is the experiment's
setting, :class:`bflsim.attacks.DefenceView`). The paper crafts local *models*
``w' = w_Re - lambda * s`` around the global model ``w_Re`` it received; with updates as
deltas (``delta = w - w_Re``) that is ``delta' = -lambda * s``. ``s`` is the sign of the
benign mean delta, per coordinate: the paper's ``s_j``, the direction in which global
parameter j would change without attack (its estimate from the before-attack local models
of the benign nodes, as the authors' and Shejwalkar & Houmansadr's code do).

- :func:`fang_krum` (attack on Krum): ``lambda`` starts at the paper's upper bound

  ``1 / ((m - 2c - 1) sqrt(d)) * min_i sum_{l in G_i} ||x_l - x_i|| + max_i ||x_i|| / sqrt(d)``

  (i over the benign deltas, ``G_i`` the ``m - 2c - 2`` benign deltas nearest to ``x_i``;
  ``||x_i||`` is the paper's ``D(w_i, w_Re)``), with ``m - c`` the benign count and ``c`` the
  f the defence assumes (:attr:`DefenceView.assumed_malicious`), and is halved until Krum
  with that f, on the benign deltas plus every attacker of the round sending ``delta'``,
  selects ``delta'`` (its Krum score strictly below every benign score, so the choice does
  not hang on row order), or until ``lambda`` falls below ``threshold`` (1e-5): that last
  ``delta'`` is then sent anyway, although Krum would not select it. Krum's scores are
  computed here (the attacks do not import the aggregators): the sum of squared distances
  to the ``n - f - 2`` nearest other rows, as :func:`bflsim.aggregators.krum_scores`.
- :func:`fang_trim` (attack on trimmed mean, used on the median too): per coordinate j,
  with ``w_max,j`` / ``w_min,j`` the largest / smallest benign delta, each attacker draws
  its own value uniformly (from its own generator) in

  * ``s_j < 0`` (the parameter would decrease; push it up): ``[w_max, b * w_max]`` when
    ``w_max > 0``, ``[w_max, w_max / b]`` when ``w_max <= 0``;
  * ``s_j >= 0`` (push it down): ``[w_min / b, w_min]`` when ``w_min > 0``,
    ``[b * w_min, w_min]`` when ``w_min <= 0``.

  So every value lies beyond the benign extreme, against the benign direction, at most a
  factor ``b`` (2) farther from 0. The paper states the rule on model parameters; here it
  acts on deltas, as the reference implementations (Shejwalkar & Houmansadr's, on FedSGD
  gradients, where the sign of ``s`` is the opposite of ours and so is the branch they
  take) do: on gradients and deltas alike the crafted values sit outside the benign range,
  on the side opposite to where the benign updates move the model. ``s_j = 0`` goes down,
  as in that code. It reads no parameter of the defence; it is ``"adaptive"`` because it is
  crafted against one rule (trimmed mean, median), as the issue groups Fang's attacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bflsim.attacks.base import (
    Attack,
    AttackError,
    AttackInput,
    DefenceView,
    as_update,
    finite_number,
)


def _benign_matrix(benign: ArrayLike, attack: str) -> NDArray[np.float64]:
    rows = as_update(benign)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise AttackError(f"{attack} needs at least one benign update as rows; got shape {rows.shape}")
    return rows.astype(np.float64)


def _pairwise_sq(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.stack([((rows - row) ** 2).sum(axis=1) for row in rows])


def _check_krum(num_rows: int, num_malicious: int) -> None:
    if num_rows <= 2 * num_malicious + 2:
        raise AttackError(f"Fang's attack on Krum simulates Krum with the defence's assumed f={num_malicious}, "
                          f"which needs n > 2f + 2 updates; the round has n={num_rows}")


def krum_scores_of(rows: NDArray[np.float64], num_malicious: int) -> NDArray[np.float64]:
    """Krum's score of each row: the sum of squared distances to its ``n - f - 2`` nearest
    other rows (Blanchard et al., 2017), which needs n > 2f + 2."""
    n, f = len(rows), num_malicious
    _check_krum(n, f)
    others = _pairwise_sq(rows)
    np.fill_diagonal(others, np.inf)
    return np.sort(others, axis=1)[:, : n - f - 2].sum(axis=1)


def fang_lambda_bound(benign: ArrayLike, num_malicious: int) -> float:
    """Fang et al.'s upper bound on ``lambda`` (module docstring), with c = ``num_malicious``;
    the first term is 0 when no benign delta has a neighbour to count."""
    x = _benign_matrix(benign, "Fang's attack on Krum")
    n_benign, d = x.shape
    neighbours = n_benign - num_malicious - 2
    spread = 0.0
    if neighbours >= 1:
        distances = np.sqrt(_pairwise_sq(x))
        np.fill_diagonal(distances, np.inf)
        closest = np.sort(distances, axis=1)[:, :neighbours].sum(axis=1).min()
        spread = closest / ((neighbours + 1) * math.sqrt(d))
    return float(spread + np.linalg.norm(x, axis=1).max() / math.sqrt(d))


def fang_krum(benign: ArrayLike, num_attackers: int, num_malicious: int, threshold: float = 1e-5) -> NDArray[np.floating]:
    """``-lambda * sign(mean(benign))`` with ``lambda`` halved from :func:`fang_lambda_bound`
    until Krum (f = ``num_malicious``) over the benign rows and ``num_attackers`` copies
    selects it, or ``lambda < threshold`` (then sent anyway)."""
    FangKrum(threshold=threshold)  # checks the parameter
    if num_attackers < 1:
        raise AttackError(f"Fang's attack on Krum needs at least one attacker; got {num_attackers}")
    x = _benign_matrix(benign, "Fang's attack on Krum")
    direction = np.sign(x.mean(axis=0))
    lam = fang_lambda_bound(x, num_malicious)
    _check_krum(len(x) + num_attackers, num_malicious)
    while lam >= threshold:
        crafted = -lam * direction
        scores = krum_scores_of(np.vstack([np.tile(crafted, (num_attackers, 1)), x]), num_malicious)
        if scores[0] < scores[num_attackers:].min():
            break
        lam /= 2
    return (-lam * direction).astype(as_update(benign).dtype)


def fang_trim_intervals(benign: ArrayLike, b: float = 2.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per coordinate, the ``(low, high)`` bounds an attacker draws from (module docstring)."""
    FangTrim(b=b)  # checks the parameter
    x = _benign_matrix(benign, "Fang's attack on trimmed mean")
    up = x.mean(axis=0) < 0  # s_j = -1: push above the benign maximum
    top, bottom = x.max(axis=0), x.min(axis=0)
    above = (top, np.where(top > 0, b * top, top / b))
    below = (np.where(bottom > 0, bottom / b, b * bottom), bottom)
    return np.where(up, above[0], below[0]), np.where(up, above[1], below[1])


def fang_trim(benign: ArrayLike, rng: np.random.Generator, b: float = 2.0) -> NDArray[np.floating]:
    """One attacker's values: uniform in :func:`fang_trim_intervals`, from ``rng``."""
    low, high = fang_trim_intervals(benign, b)
    return (low + rng.uniform(size=low.shape) * (high - low)).astype(as_update(benign).dtype)


def _benign_of(attack_input: AttackInput, label: str) -> NDArray[np.floating]:
    if attack_input.benign is None:
        raise AttackError(f"{label} needs the honest updates of the round's benign nodes (threat model 'adaptive')")
    if len(attack_input.benign) == 0:
        raise AttackError(f"{label} needs at least one benign node in the round; every node of the cohort is malicious")
    return attack_input.benign


@dataclass(frozen=True)
class FangKrum(Attack):
    """Send ``-lambda * sign(benign mean)``, ``lambda`` the largest of Fang et al.'s halving
    search that Krum (with the defence's assumed f) selects."""

    name: ClassVar[str] = "fang_krum"
    label: ClassVar[str] = "Fang (Krum)"
    reference: ClassVar[str] = "Fang et al., USENIX Security 2020"
    threat_model: ClassVar = "adaptive"

    threshold: float = 1e-5

    def __post_init__(self) -> None:
        if not finite_number(self.threshold) or self.threshold <= 0:
            raise AttackError(f"threshold must be a finite number > 0; got {self.threshold!r}")

    def check_setting(self, cohort_size: int, defence: DefenceView | None) -> None:
        if defence is not None:
            _check_krum(cohort_size, defence.assumed_malicious)

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        benign = _benign_of(attack_input, self.label)
        if attack_input.defence is None or attack_input.coalition is None:
            raise AttackError(f"{self.label} needs the defence's assumed f and the coalition (threat model 'adaptive')")
        sent = fang_krum(benign, len(attack_input.coalition), attack_input.defence.assumed_malicious, self.threshold)
        return sent.astype(as_update(attack_input.own_update).dtype)


@dataclass(frozen=True)
class FangTrim(Attack):
    """Send, per coordinate, a value drawn beyond the benign extreme against the benign
    direction, at most ``b`` times farther from 0 (Fang et al.'s attack on trimmed mean)."""

    name: ClassVar[str] = "fang_trim"
    label: ClassVar[str] = "Fang (trimmed mean)"
    reference: ClassVar[str] = "Fang et al., USENIX Security 2020"
    threat_model: ClassVar = "adaptive"

    b: float = 2.0

    def __post_init__(self) -> None:
        if not finite_number(self.b) or self.b <= 1:
            raise AttackError(f"b must be a finite number > 1; got {self.b!r}")

    def poison_update(self, attack_input: AttackInput) -> NDArray[np.floating]:
        benign = _benign_of(attack_input, self.label)
        return fang_trim(benign, attack_input.rng, self.b).astype(as_update(attack_input.own_update).dtype)
