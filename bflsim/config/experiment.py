"""The whole experiment: its sections, the checks that span them, and the facts they imply.

Who is malicious (:meth:`ExperimentConfig.malicious_nodes`), which rule defends
(:attr:`ExperimentConfig.rule`) and every seed (:meth:`ExperimentConfig.seeds`) are
functions of the config alone, so the server, every node, the audit and the reports agree
without being told.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from bflsim.aggregators import AGGREGATORS, AggregatorError, Rule
from bflsim.attacks import AttackError, DefenceView, draw_malicious
from bflsim.config.sections import (
    AggregatorConfig,
    AttackConfig,
    BackendConfig,
    DataConfig,
    FederationConfig,
    LedgerConfig,
    LoopConfig,
    ModelsConfig,
    TrainConfig,
)
from bflsim.config.typed import ConfigError

ExperimentKind = Literal["centralized", "federated"]

# The largest transaction of a round in the registry's per-node mode (v3) is commitRound, which
# walks the cohort: measured about 120,000 gas + 13,500 per member when every submitter but one
# is rejected and revoked (contracts/README.md); openRound takes about 2,000 per member.
PER_NODE_COMMIT_GAS, PER_NODE_COMMIT_GAS_PER_MEMBER = 150_000, 15_000
LOCAL_BLOCK_GAS_LIMIT = 30_000_000  # what py-evm (embedded) and anvil start their blocks with


def per_node_round_gas(cohort_size: int) -> int:
    """An upper bound of the gas of a per-node round's largest transaction (its commit)."""
    return PER_NODE_COMMIT_GAS + PER_NODE_COMMIT_GAS_PER_MEMBER * cohort_size


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: what to load, what to train, how."""

    name: str = "experiment"
    kind: ExperimentKind = "centralized"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    loop: LoopConfig | None = field(default=None, metadata={"omit_if_none": True})

    def __post_init__(self) -> None:
        if self.kind == "federated":
            if self.aggregator.assumed_malicious is None:  # the defender's default, resolved once
                resolved = default_assumed(self.aggregator, self.federation.cohort_size)
                object.__setattr__(self, "aggregator", replace(self.aggregator, assumed_malicious=resolved))
            validate_federated(self)
        elif self.loop is not None:
            raise ConfigError(f"[loop] runs after federated training; kind = {self.kind!r}")

    @property
    def num_malicious(self) -> int:
        """Attackers among ``federation.num_nodes`` edge nodes."""
        return self.attack.count(self.federation.num_nodes)

    @property
    def assumed_malicious(self) -> int:
        """The f the aggregator assumes (``aggregator.assumed_malicious``, resolved at parse time)."""
        assumed = self.aggregator.assumed_malicious
        return 0 if assumed is None else assumed

    @cached_property
    def rule(self) -> Rule:
        """The aggregation rule, with its parameters and f."""
        return self.aggregator.rule(self.assumed_malicious)

    def defence_view(self) -> DefenceView:
        """What an adaptive attacker is told of the defence: the experiment's aggregator setting."""
        return DefenceView(self.aggregator.name, dict(self.aggregator.params), self.assumed_malicious)

    def malicious_nodes(self, server_round: int) -> NDArray[np.int64]:
        """The malicious node ids in this round (fixed for the run unless redrawn per round)."""
        return draw_malicious(
            self.federation.num_nodes,
            self.num_malicious,
            seed=self.attack.seed,
            server_round=server_round if self.attack.redraw_each_round else None,
        )

    def seeds(self) -> dict[str, int]:
        """Every seed of the experiment, one per purpose (for the manifest)."""
        seeds = {"data_seed": self.data.seed, "train_seed": self.train.seed}
        if self.kind == "federated":
            seeds |= {"federation_seed": self.federation.seed, "attack_seed": self.attack.seed}
        return seeds


def default_assumed(aggregator: AggregatorConfig, cohort_size: int) -> int:
    """The defender's f when the experiment does not set one: ``assumed_fraction`` of the
    cohort, rounded down, capped at what the rule tolerates at that size. Never the truth."""
    wanted = math.floor(aggregator.assumed_fraction * cohort_size + 1e-9)
    return max(0, min(wanted, AGGREGATORS[aggregator.name].max_tolerated(cohort_size)))


def validate_federated(config: ExperimentConfig) -> None:
    """Cross-section checks of a federated experiment, before anything starts."""
    fed = config.federation
    per_node = config.ledger.enabled and config.ledger.mode == "per-node"
    if per_node and config.ledger.backend != "rpc":  # rpc: checked against the endpoint's blocks
        gas = per_node_round_gas(fed.cohort_size)
        if gas > LOCAL_BLOCK_GAS_LIMIT:
            raise ConfigError(
                f"federation: a cohort of {fed.cohort_size} nodes (num_nodes = {fed.num_nodes} x fraction_train = "
                f"{fed.fraction_train}) needs up to {gas:,} gas to commit a round on the registry, more than one "
                f"{config.ledger.backend} block holds ({LOCAL_BLOCK_GAS_LIMIT:,}); use a cohort of at most "
                f"{(LOCAL_BLOCK_GAS_LIMIT - PER_NODE_COMMIT_GAS) // PER_NODE_COMMIT_GAS_PER_MEMBER} nodes, or "
                "ledger.mode = 'batched' (constant gas per round)"
            )
    if config.num_malicious > fed.num_nodes:
        raise ConfigError(
            f"attack: {config.num_malicious} malicious nodes but federation.num_nodes = {fed.num_nodes}"
        )
    if "reference" in config.rule.needs and fed.root_size < 1:
        raise ConfigError(
            f"aggregator.name = {config.aggregator.name!r} needs the server's clean root set: set "
            f"federation.root_size (rows of the training split the server holds; Cao et al. use 100)"
        )
    attack = config.attack.record
    if attack is not None:
        try:
            attack.check_setting(fed.cohort_size, config.defence_view() if attack.threat_model == "adaptive" else None)
        except AttackError as err:
            raise ConfigError(
                f"attack.name = {config.attack.name!r} against aggregator.assumed_malicious = "
                f"{config.assumed_malicious} with a cohort of {fed.cohort_size} nodes: {err}"
            ) from err
    try:
        config.rule.check_cohort(fed.cohort_size)
    except AggregatorError as err:
        raise ConfigError(
            f"aggregator.name = {config.aggregator.name!r} with a cohort of {fed.cohort_size} nodes "
            f"(federation.num_nodes x fraction_train) and f = {config.assumed_malicious}: {err}"
        ) from err
    if config.loop is not None:
        validate_loop(config, config.loop)


def validate_loop(config: ExperimentConfig, loop: LoopConfig) -> None:
    """The closed loop against the rest of the experiment."""
    if not config.ledger.enabled or config.ledger.mode != "per-node":
        raise ConfigError(f"[loop] needs the registry's devices and alerts: ledger.backend = {config.ledger.backend!r}, "
                          f"ledger.mode = {config.ledger.mode!r}; use a backend other than 'none' and mode 'per-node'")
    devices = config.federation.num_nodes * loop.devices_per_node
    if loop.compromised > devices:
        raise ConfigError(f"loop.compromised = {loop.compromised} is more than the {devices} devices "
                          f"(federation.num_nodes x loop.devices_per_node)")
    if any(n >= config.federation.num_nodes for n in loop.false_alert_nodes):
        raise ConfigError(f"loop.false_alert_nodes = {list(loop.false_alert_nodes)}: the edge nodes are "
                          f"0-{config.federation.num_nodes - 1}")
    if loop.model_round is not None and loop.model_round > config.federation.rounds:
        raise ConfigError(f"loop.model_round = {loop.model_round}: the run commits rounds 0-{config.federation.rounds}")
