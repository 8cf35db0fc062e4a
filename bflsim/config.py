"""One typed configuration for every bflsim experiment.

An experiment is a TOML file under ``experiments/``. It is parsed once into frozen
dataclasses and validated before anything is loaded or trained: an unknown key, a value
of the wrong type or an impossible setting stops the run with a sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A configuration value is missing, unknown or impossible; the message names the key."""


DatasetName = Literal["synthetic", "nsl-kdd", "cic-ids2017", "csv"]
LabelMode = Literal["multiclass", "binary"]
SplitMode = Literal["stratified", "kdd-test"]
ScalerName = Literal["minmax", "standard"]


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic IoT-traffic generator (tabular flows)."""

    num_samples: int = 6000
    num_numeric: int = 24
    attack_classes: tuple[str, ...] = ("DoS", "Probe", "BruteForce", "Botnet")
    normal_fraction: float = 0.5
    seed: int = 7


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how labels are grouped, and how it is split.

    ``fractions`` are (train, validation, test) for the stratified split. With
    ``split = "kdd-test"`` (NSL-KDD only) the model trains on KDDTrain+ and is tested on
    KDDTest+; ``fractions[1]`` of KDDTrain+ is held out for validation.
    """

    dataset: DatasetName = "synthetic"
    label_mode: LabelMode = "multiclass"
    split: SplitMode = "stratified"
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    scaler: ScalerName = "minmax"
    seed: int = 42
    # Keep at most this fraction of the rows (stratified), for quick looks at big files.
    sample_fraction: float = 1.0
    data_dir: str | None = None
    # Generic labelled CSV (dataset = "csv").
    path: str | None = None
    label_column: str | None = None
    categorical_columns: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    normal_label: str | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(not 0.0 <= f < 1.0 for f in self.fractions):
            raise ConfigError(
                f"data.fractions must be three numbers in [0, 1) (train, validation, test); "
                f"got {list(self.fractions)}"
            )
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"data.fractions must sum to 1; got {list(self.fractions)}")
        if self.fractions[0] == 0.0 or (self.split == "stratified" and self.fractions[2] == 0.0):
            raise ConfigError(f"data.fractions leaves the train or test split empty: {list(self.fractions)}")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ConfigError(f"data.sample_fraction must be in (0, 1]; got {self.sample_fraction}")
        if self.split == "kdd-test" and self.dataset != "nsl-kdd":
            raise ConfigError(
                f"data.split = 'kdd-test' is the NSL-KDD protocol (KDDTrain+ / KDDTest+); "
                f"dataset is {self.dataset!r}"
            )
        if self.dataset == "csv" and (not self.path or not self.label_column):
            raise ConfigError("data.dataset = 'csv' needs data.path and data.label_column")


@dataclass(frozen=True)
class CnnLstmConfig:
    """The paper's hybrid: Conv1D (ReLU) -> MaxPool -> LSTM -> Dense softmax."""

    conv_filters: int = 64
    kernel_size: int = 3
    pool_size: int = 2
    lstm_units: int = 64
    dropout: float = 0.0


@dataclass(frozen=True)
class DnnConfig:
    """Multi-layer perceptron baseline."""

    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by the Keras models."""

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1; got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1; got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0; got {self.learning_rate}")


MODEL_NAMES = ("decision_tree", "random_forest", "linear_svm", "dnn", "cnn_lstm")


@dataclass(frozen=True)
class ModelsConfig:
    """Which models a centralized experiment trains, and their sizes."""

    names: tuple[str, ...] = ("cnn_lstm",)
    cnn_lstm: CnnLstmConfig = field(default_factory=CnnLstmConfig)
    dnn: DnnConfig = field(default_factory=DnnConfig)

    def __post_init__(self) -> None:
        for name in self.names:
            if name not in MODEL_NAMES:
                raise ConfigError(
                    f"models.names: unknown model {name!r}; expected one of {list(MODEL_NAMES)}"
                )
        if not self.names:
            raise ConfigError("models.names is empty; name at least one model")


PartitionScheme = Literal["iid", "dirichlet", "shards"]
AggregatorName = Literal["fedavg", "krum", "multikrum", "median", "trimmed_mean"]
AttackName = Literal["none", "gaussian", "sign_flip", "scaling"]


@dataclass(frozen=True)
class FederationConfig:
    """The edge nodes, the rounds, and what each node does in a round.

    ``fraction_train`` of the nodes (at least one) form each round's cohort, sampled
    reproducibly from ``seed``. Local training uses ``train.batch_size`` and
    ``train.learning_rate`` for ``local_epochs`` epochs.

    Data tampering, to exercise VerifyIntegrity: from round ``tamper_round`` on, each of
    ``tamper_nodes`` trains on a modified copy of its partition (Gaussian noise on the
    features of a tenth of its rows), so its data no longer matches the digest it registered.

    Faults, to exercise failure handling: ``crash_nodes`` raise instead of training in
    ``crash_rounds`` (every round when empty); ``slow_nodes`` sleep ``delay_seconds``
    before training in ``slow_rounds`` (every round when empty), so that with a small
    ``client_timeout`` the server stops waiting for them. Either way the node counts as a
    failure of that round.
    """

    num_nodes: int = 10
    rounds: int = 5
    fraction_train: float = 1.0
    local_epochs: int = 1
    partition: PartitionScheme = "iid"
    alpha: float = 0.5
    shards_per_node: int = 2
    seed: int = 42
    client_timeout: float = 900.0
    crash_nodes: tuple[int, ...] = ()
    crash_rounds: tuple[int, ...] = ()
    slow_nodes: tuple[int, ...] = ()
    slow_rounds: tuple[int, ...] = ()
    delay_seconds: float = 0.0
    tamper_nodes: tuple[int, ...] = ()
    tamper_round: int = 1

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError(f"federation.num_nodes must be >= 1; got {self.num_nodes}")
        if self.rounds < 1:
            raise ConfigError(f"federation.rounds must be >= 1; got {self.rounds}")
        if not self.client_timeout > 0:
            raise ConfigError(f"federation.client_timeout must be > 0 seconds; got {self.client_timeout}")
        for key in ("crash_nodes", "slow_nodes", "tamper_nodes"):
            if bad := [i for i in getattr(self, key) if not 0 <= i < self.num_nodes]:
                raise ConfigError(
                    f"federation.{key} names nodes outside 0..{self.num_nodes - 1} "
                    f"(federation.num_nodes = {self.num_nodes}): {bad}"
                )
        for key in ("crash_rounds", "slow_rounds"):
            if bad := [r for r in getattr(self, key) if not 1 <= r <= self.rounds]:
                raise ConfigError(
                    f"federation.{key} names rounds outside 1..{self.rounds} "
                    f"(federation.rounds = {self.rounds}): {bad}"
                )
        if not 1 <= self.tamper_round <= self.rounds:
            raise ConfigError(
                f"federation.tamper_round must be in 1..{self.rounds} (federation.rounds); "
                f"got {self.tamper_round}"
            )
        if self.delay_seconds < 0:
            raise ConfigError(f"federation.delay_seconds must be >= 0; got {self.delay_seconds}")
        if self.slow_nodes and self.delay_seconds == 0:
            raise ConfigError("federation.slow_nodes needs federation.delay_seconds > 0")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ConfigError(f"federation.fraction_train must be in (0, 1]; got {self.fraction_train}")
        if self.local_epochs < 1:
            raise ConfigError(f"federation.local_epochs must be >= 1; got {self.local_epochs}")
        if not self.alpha > 0:
            raise ConfigError(f"federation.alpha must be > 0; got {self.alpha}")

    @property
    def cohort_size(self) -> int:
        return max(1, int(self.fraction_train * self.num_nodes))


@dataclass(frozen=True)
class AttackConfig:
    """Which edge nodes are malicious and what they send instead of an honest update.

    ``num_malicious`` nodes (or ``fraction`` of ``federation.num_nodes``, rounded) are drawn
    from ``seed``: once for the run, or again every round with ``redraw_each_round``.
    Gaussian: the update is replaced by, or added to, N(mu, sigma^2) noise (``mode``).
    """

    name: AttackName = "none"
    num_malicious: int | None = None
    fraction: float | None = None
    mode: Literal["replace", "add"] = "replace"
    mu: float = 0.0
    sigma: float = 1.0
    scale: float = 1.0
    factor: float = 10.0
    redraw_each_round: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_malicious is not None and self.fraction is not None:
            raise ConfigError("attack: give num_malicious or fraction, not both")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"attack.fraction must be in [0, 1]; got {self.fraction}")
        if self.num_malicious is not None and self.num_malicious < 0:
            raise ConfigError(f"attack.num_malicious must be >= 0; got {self.num_malicious}")
        if self.sigma < 0:
            raise ConfigError(f"attack.sigma must be >= 0; got {self.sigma}")
        if self.scale <= 0:
            raise ConfigError(f"attack.scale must be > 0; got {self.scale}")

    def count(self, num_nodes: int) -> int:
        """How many of ``num_nodes`` nodes are malicious (0 when there is no attack)."""
        if self.name == "none":
            return 0
        if self.fraction is not None:
            return round(self.fraction * num_nodes)
        return self.num_malicious if self.num_malicious is not None else 0

    def params(self) -> dict[str, Any]:
        """The keyword arguments of the attack function in :mod:`bflsim.attacks`."""
        return {
            "none": {},
            "gaussian": {"mode": self.mode, "mu": self.mu, "sigma": self.sigma},
            "sign_flip": {"scale": self.scale},
            "scaling": {"factor": self.factor},
        }[self.name]


@dataclass(frozen=True)
class AggregatorConfig:
    """The aggregation rule and what it is told about the adversary.

    ``num_malicious`` is the f the rule assumes (Krum's n - f - 2 neighbours); by default
    the number of attackers actually drawn. ``num_selected`` is Multi-Krum's m (default
    n - f); ``trim_fraction`` is the trimmed mean's beta. With a ledger, Krum and Multi-Krum
    report as rejected those of the f top-scored updates that score above ``reject_factor``
    times the median score (:func:`bflsim.aggregators.rejected`); rejections count towards a
    node's revocation on chain.
    """

    name: AggregatorName = "fedavg"
    num_malicious: int | None = None
    num_selected: int | None = None
    trim_fraction: float = 0.1
    reject_factor: float = 3.0

    def __post_init__(self) -> None:
        if not self.reject_factor >= 1.0:
            raise ConfigError(f"aggregator.reject_factor must be >= 1; got {self.reject_factor}")


@dataclass(frozen=True)
class BackendConfig:
    """Ray simulation backend: resources per virtual client, and where Ray runs.

    ``ray_address`` joins an existing Ray cluster (e.g. ``"ray://host:10001"`` or
    ``"auto"``); by default a local Ray instance is started with ``num_cpus`` CPUs (all
    cores when unset) and stopped at the end.
    """

    client_num_cpus: float = 1.0
    num_cpus: int | None = None
    threads_per_client: int = 1
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.client_num_cpus > 0:
            raise ConfigError(f"backend.client_num_cpus must be > 0; got {self.client_num_cpus}")
        if self.threads_per_client < 1:
            raise ConfigError(f"backend.threads_per_client must be >= 1; got {self.threads_per_client}")


LedgerBackend = Literal["embedded", "anvil", "rpc", "none"]


@dataclass(frozen=True)
class LedgerConfig:
    """Where the run's audit trail is registered (``bflsim.ledger``).

    ``embedded``: an in-process py-evm chain, nothing to set up (the default). ``anvil``: a
    local anvil node started for the run on 127.0.0.1 (``block_time`` seconds per block,
    automine when unset; from ``npm ci --prefix contracts``) and stopped after it. ``rpc``:
    any EVM JSON-RPC endpoint at ``rpc_url``; the operator's key is read from the environment
    variable named by ``operator_key_env`` (keys never go in experiment files), else the
    node's first unlocked account sends. ``none``: Standard FL, nothing is registered.

    Every edge node signs with its own key, derived from ``key_seed`` (default
    ``federation.seed``); the contract revokes a node after ``max_rejections`` rejections
    by the aggregator (0 = never).
    """

    backend: LedgerBackend = "embedded"
    rpc_url: str | None = None
    chain_id: int | None = None
    operator_key_env: str = "BFLSIM_OPERATOR_KEY"
    block_time: float | None = None
    max_rejections: int = 3
    key_seed: int | None = None
    receipt_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.backend == "rpc" and not self.rpc_url:
            raise ConfigError("ledger.backend = 'rpc' needs ledger.rpc_url (e.g. 'http://127.0.0.1:8545')")
        if self.rpc_url and not self.rpc_url.startswith(("http://", "https://")):
            raise ConfigError(f"ledger.rpc_url must start with http:// or https://; got {self.rpc_url!r}")
        if self.block_time is not None and self.backend != "anvil":
            raise ConfigError(
                f"ledger.block_time applies to the anvil backend it starts; ledger.backend = {self.backend!r}"
            )
        if self.block_time is not None and not self.block_time > 0:
            raise ConfigError(f"ledger.block_time must be > 0 seconds; got {self.block_time}")
        if not 0 <= self.max_rejections < 2**32:
            raise ConfigError(f"ledger.max_rejections must be in 0..2**32-1; got {self.max_rejections}")
        if self.key_seed is not None and not 0 <= self.key_seed < 2**64:
            raise ConfigError(f"ledger.key_seed must fit in 64 bits; got {self.key_seed}")
        if not self.receipt_timeout > 0:
            raise ConfigError(f"ledger.receipt_timeout must be > 0 seconds; got {self.receipt_timeout}")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


ExperimentKind = Literal["centralized", "federated"]


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

    def __post_init__(self) -> None:
        if self.kind == "federated":
            validate_federated(self)

    @property
    def num_malicious(self) -> int:
        """Attackers among ``federation.num_nodes`` edge nodes."""
        return self.attack.count(self.federation.num_nodes)

    @property
    def declared_malicious(self) -> int:
        """The f the aggregator assumes."""
        declared = self.aggregator.num_malicious
        return self.num_malicious if declared is None else declared


def validate_federated(config: ExperimentConfig) -> None:
    """Cross-section checks of a federated experiment, before anything starts."""
    from bflsim.aggregators import AggregatorError, validate_aggregator
    from bflsim.attacks import AttackError, validate_attack

    fed, attack, agg = config.federation, config.attack, config.aggregator
    if len(config.models.names) != 1 or config.models.names[0] not in ("cnn_lstm", "dnn"):
        raise ConfigError(
            f"models.names must name one Keras model (cnn_lstm or dnn) for a federated run; "
            f"got {list(config.models.names)}"
        )
    if config.ledger.enabled and fed.num_nodes > 255:
        raise ConfigError(
            f"federation.num_nodes = {fed.num_nodes}: the on-chain registry holds nodes 0..254; "
            f"use at most 255 nodes or ledger.backend = 'none'"
        )
    if config.num_malicious > fed.num_nodes:
        raise ConfigError(
            f"attack: {config.num_malicious} malicious nodes but federation.num_nodes = {fed.num_nodes}"
        )
    if attack.name != "none":
        try:
            validate_attack(attack.name, attack.params())
        except AttackError as err:
            raise ConfigError(f"attack: {err}") from err
    try:
        validate_aggregator(
            agg.name,
            fed.cohort_size,
            config.declared_malicious,
            num_selected=agg.num_selected,
            trim_fraction=agg.trim_fraction,
        )
    except AggregatorError as err:
        raise ConfigError(
            f"aggregator.name = {agg.name!r} with a cohort of {fed.cohort_size} nodes "
            f"(federation.num_nodes x fraction_train) and f = {config.declared_malicious}: {err}"
        ) from err


# --- parsing -------------------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw table of an experiment file; a missing file or bad TOML is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read an experiment TOML file and return its validated config."""
    raw = read_toml(path)
    try:
        return parse_experiment(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def parse_experiment(raw: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a TOML-shaped dict.

    The top-level ``[experiment]`` table holds ``name``, ``kind`` and ``description``;
    every other table maps onto the field of the same name.
    """
    raw = dict(raw)
    header = raw.pop("experiment", {})
    if not isinstance(header, dict):
        raise ConfigError("[experiment] must be a table")
    return _build(ExperimentConfig, {**header, **raw}, prefix="")


def with_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return a copy with dotted keys replaced, e.g. ``{"train.epochs": 2}``; validated again."""
    tree = dataclasses.asdict(config)
    for dotted, value in overrides.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown key {dotted!r}")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"unknown key {dotted!r}")
        node[leaf] = value
    return _build(ExperimentConfig, tree, prefix="")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return dataclasses.asdict(config)


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix + unknown[0]!r}; expected one of {sorted(known)}"
        )
    values = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {list(allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        args = get_args(hint)
        item = args[0]
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    return value
