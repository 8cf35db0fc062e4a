"""Which edge nodes are malicious: drawn from the attack seed, so every process agrees untold."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bflsim.attacks.base import AttackError

# Entropy word that separates the malicious-node draw from other uses of the same seed.
_MALICIOUS_DRAW = 0x6D616C


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


def _require_count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise AttackError(f"{key} must be an integer >= 0; got {value!r}")
    return int(value)


