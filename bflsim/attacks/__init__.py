"""Poisoning attacks as pure records, and the draw of malicious nodes.

Every attack is one frozen dataclass (:mod:`.base` describes the contract) in a module of
its family (:mod:`.noise`, :mod:`.scaling`, ...), built from its parameters::

    attack = ATTACKS["gaussian"](mode="replace", sigma=1.0)
    sent = attack.poison_update(AttackInput(own_update=delta, rng=rng))

The plain functions (:func:`gaussian`, :func:`sign_flip`, :func:`scaling`, :func:`alie`,
:func:`ipm`, :func:`min_max`, :func:`min_sum`, :func:`mimic`, :func:`fang_krum`,
:func:`fang_trim`, :func:`flip_labels`, :func:`apply_trigger`) stay for notebooks and tests. A new attack:
one record, one line in :data:`ATTACKS`.
"""

from bflsim.attacks.agnostic import (
    PERTURBATIONS,
    Mimic,
    MinMax,
    MinSum,
    mimic,
    mimic_target,
    min_max,
    min_sum,
)
from bflsim.attacks.base import (
    THREAT_MODELS,
    Attack,
    AttackError,
    AttackInput,
    Classes,
    DefenceView,
    ThreatModel,
    grants,
)
from bflsim.attacks.data import Backdoor, LabelFlip, apply_trigger, flip_labels
from bflsim.attacks.draw import draw_malicious
from bflsim.attacks.fang import (
    FangKrum,
    FangTrim,
    fang_krum,
    fang_lambda_bound,
    fang_trim,
    fang_trim_intervals,
)
from bflsim.attacks.noise import GAUSSIAN_MODES, Gaussian, gaussian
from bflsim.attacks.scaling import Scaling, SignFlip, scaling, sign_flip
from bflsim.attacks.statistical import Alie, Ipm, alie, alie_z, ipm

ATTACKS: dict[str, type[Attack]] = {
    attack.name: attack
    for attack in (Gaussian, SignFlip, Scaling, Alie, Ipm, MinMax, MinSum, FangKrum, FangTrim, Mimic, LabelFlip, Backdoor)
}
"""Every attack by the name experiment files use (``attack.name``; ``"none"`` is no attack)."""

__all__ = [
    "ATTACKS",
    "GAUSSIAN_MODES",
    "PERTURBATIONS",
    "THREAT_MODELS",
    "Alie",
    "Attack",
    "AttackError",
    "AttackInput",
    "Backdoor",
    "Classes",
    "DefenceView",
    "FangKrum",
    "FangTrim",
    "Gaussian",
    "Ipm",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "Scaling",
    "SignFlip",
    "ThreatModel",
    "alie",
    "alie_z",
    "apply_trigger",
    "draw_malicious",
    "fang_krum",
    "fang_lambda_bound",
    "fang_trim",
    "fang_trim_intervals",
    "flip_labels",
    "gaussian",
    "grants",
    "ipm",
    "mimic",
    "mimic_target",
    "min_max",
    "min_sum",
    "scaling",
    "sign_flip",
]
