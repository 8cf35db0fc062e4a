"""One typed configuration for every bflsim experiment.

An experiment is a TOML file under ``experiments/``. It is parsed once into frozen
dataclasses (:mod:`.sections`, :mod:`.experiment`) and validated before anything is loaded
or trained: an unknown key, a value of the wrong type or an impossible setting stops the run
with a sentence naming the key. The parameters of the aggregation rule and of the attack are
their records' own (``[aggregator.params]``, ``[attack.params]``), checked by the records.
"""

from bflsim.config.experiment import (
    LOCAL_BLOCK_GAS_LIMIT,
    ExperimentConfig,
    ExperimentKind,
    per_node_round_gas,
    validate_federated,
)
from bflsim.config.loading import (
    LEGACY_KEYS,
    apply_overrides,
    config_digest,
    from_wire,
    parse_experiment,
    parse_overrides,
    parse_recorded,
    read_toml,
    recorded_config_digest,
    set_dotted,
    to_wire,
    upgrade_legacy,
    with_overrides,
)
from bflsim.config.sections import (
    AggregatorConfig,
    AttackConfig,
    BackendConfig,
    CnnLstmConfig,
    DataConfig,
    DnnConfig,
    FederationConfig,
    LabelMode,
    LedgerBackend,
    LedgerConfig,
    LoopConfig,
    ModelsConfig,
    PartitionScheme,
    ScalerName,
    SplitMode,
    SyntheticConfig,
    TrainConfig,
)
from bflsim.config.typed import ConfigError, Params, build, build_record, to_dict

__all__ = [
    "LEGACY_KEYS",
    "LOCAL_BLOCK_GAS_LIMIT",
    "AggregatorConfig",
    "AttackConfig",
    "BackendConfig",
    "CnnLstmConfig",
    "ConfigError",
    "DataConfig",
    "DnnConfig",
    "ExperimentConfig",
    "ExperimentKind",
    "FederationConfig",
    "LabelMode",
    "LedgerBackend",
    "LedgerConfig",
    "LoopConfig",
    "ModelsConfig",
    "Params",
    "PartitionScheme",
    "ScalerName",
    "SplitMode",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "build",
    "build_record",
    "config_digest",
    "from_wire",
    "parse_experiment",
    "parse_overrides",
    "parse_recorded",
    "per_node_round_gas",
    "read_toml",
    "recorded_config_digest",
    "set_dotted",
    "to_dict",
    "to_wire",
    "upgrade_legacy",
    "validate_federated",
    "with_overrides",
]
