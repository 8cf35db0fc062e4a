"""Model-poisoning attacks as pure functions: an honest update in, a malicious one out.

An attack sees only the honest update (any shape; in practice the flattened vector) and
its own parameters: no framework types, and no knowledge of the defence it will face.
The output keeps the update's shape and floating dtype (float64 for integer input).

- ``gaussian``: replace the update by N(mu, sigma^2) noise, or add that noise to it
  (the Gaussian Byzantine worker of Blanchard et al., 2017; Fang et al., 2020).
- ``sign_flip``: send ``-scale * update`` (Li et al., 2019).
- ``scaling``: send ``factor * update``, the boosting behind model replacement
  (Bagdasaryan et al., 2020).

References
----------
- Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
  Descent", NeurIPS 2017.
- Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning",
  USENIX Security 2020.
- Li et al., "RSA: Byzantine-Robust Stochastic Aggregation Methods for Distributed
  Learning from Heterogeneous Datasets", AAAI 2019.
- Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

GAUSSIAN_MODES = ("replace", "add")

# Entropy word that separates the malicious-node draw from other uses of the same seed.
_MALICIOUS_DRAW = 0x6D616C


class AttackError(ValueError):
    """An attack name, parameter or value is not valid; the message names it."""


def gaussian(
    update: ArrayLike,
    *,
    mode: str,
    mu: float = 0.0,
    sigma: float = 1.0,
    rng: np.random.Generator,
) -> NDArray[np.floating]:
    """``mode="replace"``: N(mu, sigma^2) noise of the update's shape; ``"add"``: update + it.

    The same ``rng`` state draws the same noise in both modes.
    """
    _check("gaussian", {"mode": mode, "mu": mu, "sigma": sigma})
    if not isinstance(rng, np.random.Generator):
        raise AttackError(f"attack 'gaussian': rng must be a numpy.random.Generator; got {rng!r}")
    x = _as_update(update)
    noise = rng.normal(mu, sigma, size=x.shape)
    return (noise if mode == "replace" else x + noise).astype(x.dtype)


def sign_flip(update: ArrayLike, *, scale: float = 1.0) -> NDArray[np.floating]:
    """``-scale * update``, with ``scale > 0``."""
    _check("sign_flip", {"scale": scale})
    x = _as_update(update)
    return (-scale * x).astype(x.dtype)


def scaling(update: ArrayLike, *, factor: float) -> NDArray[np.floating]:
    """``factor * update`` (e.g. ``factor = n / server_lr`` to replace the global model)."""
    _check("scaling", {"factor": factor})
    x = _as_update(update)
    return (factor * x).astype(x.dtype)


ATTACKS: dict[str, Callable[..., NDArray[np.floating]]] = {
    "gaussian": gaussian,
    "sign_flip": sign_flip,
    "scaling": scaling,
}


def _is_number(value: Any) -> bool:
    real = isinstance(value, int | float | np.integer | np.floating)
    return real and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> str | None:
    return None if _is_number(value) else "a finite number"


def _non_negative(value: Any) -> str | None:
    return None if _is_number(value) and value >= 0 else "a finite number >= 0"


def _positive(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a finite number > 0"


def _gaussian_mode(value: Any) -> str | None:
    return None if value in GAUSSIAN_MODES else f"one of {list(GAUSSIAN_MODES)}"


# Per attack: each parameter and the check on its value (None: fine; else what is expected).
_PARAMETERS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "gaussian": {"mode": _gaussian_mode, "mu": _number, "sigma": _non_negative},
    "sign_flip": {"scale": _positive},
    "scaling": {"factor": _number},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "gaussian": ("mode",),
    "sign_flip": (),
    "scaling": ("factor",),
}
_TAKES_RNG = frozenset({"gaussian"})


def validate_attack(name: str, params: Mapping[str, Any]) -> None:
    """Raise :class:`AttackError` for an unknown attack, unknown or missing parameter, or bad value.

    ``params`` are the attack's settings as in the experiment file (no ``rng``).
    """
    if name not in ATTACKS:
        raise AttackError(f"unknown attack {name!r}; expected one of {list(ATTACKS)}")
    expected = list(_PARAMETERS[name])
    for key in params:
        if key not in _PARAMETERS[name]:
            raise AttackError(
                f"attack {name!r} has no parameter {key!r}; expected some of {expected}"
            )
    for key in _REQUIRED[name]:
        if key not in params:
            raise AttackError(f"attack {name!r} needs parameter {key!r}")
    _check(name, params)


def apply_attack(
    name: str,
    update: ArrayLike,
    params: Mapping[str, Any],
    *,
    rng: np.random.Generator | None = None,
) -> NDArray[np.floating]:
    """Validate ``params`` and run the attack ``name``; ``rng`` goes to the randomised ones."""
    validate_attack(name, params)
    extra = {"rng": rng} if name in _TAKES_RNG else {}
    return ATTACKS[name](update, **params, **extra)


def draw_malicious(
    num_clients: int, num_malicious: int, *, seed: int, server_round: int | None = None
) -> NDArray[np.int64]:
    """Sorted ids in ``range(num_clients)`` of the malicious nodes.

    With ``server_round=None`` the set is fixed for the run; with a round number it is
    re-drawn each round, reproducibly from ``(seed, server_round)``. For a given seed (and
    round) the sets are nested: the f malicious nodes are among the f + 1, so sweeps over
    the attacker fraction differ only by the added attackers.
    """
    num_clients = _require_count("num_clients", num_clients)
    num_malicious = _require_count("num_malicious", num_malicious)
    seed = _require_count("seed", seed)
    if num_malicious > num_clients:
        raise AttackError(
            f"cannot draw num_malicious={num_malicious} malicious nodes from "
            f"num_clients={num_clients}; it needs 0 <= num_malicious <= num_clients"
        )
    if server_round is None:
        entropy = [seed, _MALICIOUS_DRAW, 0]
    else:
        entropy = [seed, _MALICIOUS_DRAW, 1, _require_count("server_round", server_round)]
    order = np.random.default_rng(entropy).permutation(num_clients)
    return np.sort(order[:num_malicious]).astype(np.int64)


def _check(name: str, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        expected = _PARAMETERS[name][key](value)
        if expected is not None:
            raise AttackError(f"attack {name!r}: {key} must be {expected}; got {value!r}")


def _require_count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise AttackError(f"{key} must be an integer >= 0; got {value!r}")
    return int(value)


def _as_update(update: ArrayLike) -> NDArray[np.floating]:
    x = np.asarray(update)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.astype(np.float64)
    if not np.issubdtype(x.dtype, np.floating):
        raise AttackError(f"an update must hold real numbers; got dtype {x.dtype}")
    return x
