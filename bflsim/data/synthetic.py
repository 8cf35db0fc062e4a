"""A synthetic IoT-traffic table: flows of a normal class and a few attack classes.

Each row is a flow with two categorical columns (``protocol``, ``service``) and
``num_numeric`` numeric ones (durations, byte and packet counts, rates, TCP flag counts, ...).
It is generated as follows, deterministically from ``SyntheticConfig.seed``:

1. Latent traffic profile: every class c has a mean vector m_c over the numeric columns;
   normal is 0, each attack shifts about 40 % of the informative columns by 0.8 to 1.8 and
   jitters the rest slightly. A row draws z = m_c + s_c * L e, with e standard normal, L a
   shared correlation factor (features move together as in real flows) and s_c a per-class
   spread. The last quarter of the columns carry no class signal (noise features).
2. Each latent column becomes a traffic-like value: an amount (bytes, seconds) = b * exp(0.7 z),
   a count (packets, flags) ~ Poisson(l * exp(0.5 z)), or a ratio = logistic(z).
3. ``protocol`` and ``service`` come from class-dependent categorical distributions, broad
   for normal traffic and peaked for attacks, overlapping.
4. 3 % of the attack flows are drawn from the normal profile (stealthy flows), so no model
   reaches 100 %; class means overlap so that a good model lands in the low-to-mid 90s.

Class sizes: ``normal_fraction`` of the rows are normal, the rest split evenly over the attack
classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.config import DataConfig, SyntheticConfig
from bflsim.data.base import Dataset, LabelledTable
from bflsim.data.errors import DataError

NORMAL = "normal"
PROTOCOLS = ("tcp", "udp", "icmp")
SERVICES = ("http", "https", "mqtt", "coap", "dns", "ntp", "ssh", "telnet", "ftp", "smtp",
            "upnp", "modbus")
# (name, kind): kind picks the transform of step 2.
NUMERIC_COLUMNS = (
    ("duration", "amount"), ("fwd_packets", "count"), ("bwd_packets", "count"),
    ("fwd_bytes", "amount"), ("bwd_bytes", "amount"), ("bytes_per_s", "amount"),
    ("packets_per_s", "amount"), ("mean_packet_size", "amount"), ("packet_size_std", "amount"),
    ("iat_mean", "amount"), ("iat_std", "amount"), ("syn_count", "count"),
    ("ack_count", "count"), ("fin_count", "count"), ("rst_count", "count"),
    ("psh_count", "count"), ("down_up_ratio", "ratio"), ("active_mean", "amount"),
    ("idle_mean", "amount"), ("fwd_window", "amount"), ("payload_entropy", "ratio"),
    ("dst_port_diversity", "ratio"), ("ttl_mean", "amount"), ("urg_count", "count"),
)
STEALTH_FRACTION = 0.03
MIN_ROWS_PER_CLASS = 10


def generate_synthetic(config: SyntheticConfig) -> LabelledTable:
    """Generate the synthetic flow table described in the module docstring."""
    check_synthetic(config)
    rng = np.random.default_rng(config.seed)
    class_names = (NORMAL, *config.attack_classes)
    num_classes = len(class_names)
    sizes = _class_sizes(config.num_samples, config.normal_fraction, num_classes - 1)
    labels = np.repeat(np.arange(num_classes), sizes)

    width = config.num_numeric
    informative = width - width // 4
    means = np.zeros((num_classes, width))
    for c in range(1, num_classes):
        signal = rng.choice(informative, size=max(2, round(0.5 * informative)), replace=False)
        means[c, :informative] = rng.normal(0.0, 0.2, informative)
        means[c, signal] = rng.choice([-1.0, 1.0], signal.size) * rng.uniform(1.2, 2.4, signal.size)
    spread = np.concatenate([[1.0], rng.uniform(0.8, 1.3, num_classes - 1)])
    factor = _correlation_factor(width, rng)

    profile = labels.copy()
    attacks = np.flatnonzero(labels > 0)
    profile[rng.choice(attacks, size=round(STEALTH_FRACTION * attacks.size), replace=False)] = 0
    noise = rng.standard_normal((labels.size, width)) @ factor.T
    latent = means[profile] + spread[profile, None] * noise

    columns = {
        "protocol": _draw_categories(PROTOCOLS, profile, num_classes, rng, broad=2.0, peaked=0.7),
        "service": _draw_categories(SERVICES, profile, num_classes, rng, broad=3.0, peaked=0.4),
    }
    for j, (name, kind) in enumerate(_numeric_columns(width)):
        columns[name] = _traffic_values(latent[:, j], kind, rng)
    order = rng.permutation(labels.size)
    frame = pd.DataFrame(columns).iloc[order].reset_index(drop=True)
    return LabelledTable(
        frame,
        np.asarray(class_names, dtype=str)[labels[order]],
        {"protocol": PROTOCOLS, "service": SERVICES},
        normal_label=NORMAL,
        sources=(),
        name="synthetic",
    )


def check_synthetic(config: SyntheticConfig) -> None:
    """Raise :class:`DataError` for generator settings that cannot give a usable table."""
    names = config.attack_classes
    if not names:
        raise DataError("data.synthetic.attack_classes is empty; name at least one attack class")
    if len(set(names)) != len(names) or NORMAL in names:
        raise DataError(
            f"data.synthetic.attack_classes must be distinct and must not include {NORMAL!r}; "
            f"got {list(names)}"
        )
    if config.num_numeric < 2:
        raise DataError(f"data.synthetic.num_numeric must be >= 2; got {config.num_numeric}")
    if not 0.0 < config.normal_fraction < 1.0:
        raise DataError(
            f"data.synthetic.normal_fraction must be in (0, 1); got {config.normal_fraction}"
        )
    smallest = min(_class_sizes(config.num_samples, config.normal_fraction, len(names)))
    if smallest < MIN_ROWS_PER_CLASS:
        raise DataError(
            f"data.synthetic.num_samples = {config.num_samples} leaves a class with {smallest} "
            f"rows; raise it so every class has at least {MIN_ROWS_PER_CLASS}"
        )


def _class_sizes(num_samples: int, normal_fraction: float, num_attacks: int) -> list[int]:
    normal = round(num_samples * normal_fraction)
    base, extra = divmod(num_samples - normal, num_attacks)
    return [normal] + [base + (1 if i < extra else 0) for i in range(num_attacks)]


def _numeric_columns(width: int) -> list[tuple[str, str]]:
    named = list(NUMERIC_COLUMNS[:width])
    kinds = ("amount", "count", "ratio")
    named += [(f"aux_{i}", kinds[i % 3]) for i in range(width - len(named))]
    return named


def _correlation_factor(width: int, rng: np.random.Generator) -> np.ndarray:
    # Covariance 0.6 I + 0.4 B B^T / rank, rescaled to unit variance; returns its Cholesky factor.
    rank = 4
    loadings = rng.normal(size=(width, rank))
    covariance = 0.6 * np.eye(width) + 0.4 * loadings @ loadings.T / rank
    std = np.sqrt(np.diag(covariance))
    return np.linalg.cholesky(covariance / np.outer(std, std))


def _draw_categories(
    values: tuple[str, ...],
    profile: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    *,
    broad: float,
    peaked: float,
) -> np.ndarray:
    concentration = np.full((num_classes, len(values)), peaked)
    concentration[0] = broad
    probabilities = np.stack([rng.dirichlet(row) for row in concentration])
    cumulative = np.cumsum(probabilities, axis=1)[profile]
    picks = (rng.random((profile.size, 1)) > cumulative).sum(axis=1)
    return np.asarray(values)[np.minimum(picks, len(values) - 1)]


def _traffic_values(z: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "amount":
        return np.round(10 ** rng.uniform(1, 4) * np.exp(0.7 * z), 3)
    if kind == "count":
        return rng.poisson(rng.uniform(1, 20) * np.exp(0.5 * z)).astype(np.float64)
    return np.round(1.0 / (1.0 + np.exp(-z)), 4)


def load_generated(config: DataConfig, data_dir: Path) -> LabelledTable:
    """The table that ``data.synthetic`` describes; nothing is read from ``data_dir``."""
    return generate_synthetic(config.synthetic)


def check_settings(config: DataConfig) -> None:
    """Raise :class:`DataError` when ``data.synthetic`` cannot give a usable table."""
    check_synthetic(config.synthetic)


SYNTHETIC = Dataset(
    name="synthetic",
    label="Synthetic",
    load=load_generated,
    check=check_settings,
)
