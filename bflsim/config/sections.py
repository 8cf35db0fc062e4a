"""The sections of an experiment file, one frozen dataclass per TOML table.

Each checks its own values in ``__post_init__`` with a sentence naming the key; checks
that span sections live in :mod:`bflsim.config.experiment`. Which datasets and models exist
is the business of their registries (:data:`bflsim.data.DATASETS`,
:data:`bflsim.models.MODELS`), checked by :func:`bflsim.plans.check_config` before a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from bflsim.aggregators import AGGREGATORS, AggregatorError, Rule
from bflsim.attacks import ATTACKS, THREAT_MODELS, Attack, AttackError, grants
from bflsim.config.typed import ConfigError, Params, build_record

LabelMode = Literal["multiclass", "binary"]
SplitMode = Literal["stratified", "official"]
ScalerName = Literal["minmax", "standard"]
ImputeMode = Literal["none", "median"]

MAX_SEED = 2**32 - 1  # numpy's legacy seeding, Keras' set_random_seed and scikit-learn take 32 bits


def check_seed(key: str, seed: int) -> None:
    """Refuse a seed outside 0..2**32-1, naming its key."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{key} must be an integer in 0..{MAX_SEED} (2**32 - 1); got {seed}")


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic IoT-traffic generator (tabular flows)."""

    num_samples: int = 6000
    num_numeric: int = 24
    attack_classes: tuple[str, ...] = ("DoS", "Probe", "BruteForce", "Botnet")
    normal_fraction: float = 0.5
    seed: int = 7

    def __post_init__(self) -> None:
        check_seed("data.synthetic.seed", self.seed)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how labels are grouped, and how it is split.

    ``dataset`` names a record of :data:`bflsim.data.DATASETS`. ``fractions`` are (train,
    validation, test) for the stratified split. With ``split = "official"`` (datasets that
    ship their own test set: NSL-KDD's KDDTrain+ / KDDTest+; the old name ``"kdd-test"`` is
    read as this) the model is tested on that set, and ``fractions[1]`` of the training file
    is held out for validation.

    ``data_dir`` is this experiment's data directory; a relative one in an experiment file is
    read against the file's folder. The data directory is ``--data-dir`` if given, else
    ``data.data_dir``, else ``$BFLSIM_DATA_DIR``, else ``./data``.

    Missing, NaN or infinite values in numeric columns are refused, naming the file, column,
    count and first row, unless ``impute = "median"``: then each is filled with the
    training-split median of its column and the counts are recorded in the run manifest.

    A generic CSV without a header row is read with ``header = false`` and ``columns``, the
    names of its columns in order (``label_column`` is one of them).
    """

    dataset: str = "synthetic"
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
    header: bool = True
    columns: tuple[str, ...] = ()
    impute: ImputeMode = "none"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        check_seed("data.seed", self.seed)
        if not self.header and not self.columns:
            raise ConfigError(
                "data.header = false needs data.columns: the names of the file's columns, in order"
            )
        if self.columns and self.header:
            raise ConfigError(
                "data.columns names the columns of a CSV without a header row; set data.header = false "
                "(a file with a header row names its own columns)"
            )
        if repeated := sorted({c for c in self.columns if self.columns.count(c) > 1}):
            raise ConfigError(f"data.columns names {repeated} more than once; got {list(self.columns)}")
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
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"train.learning_rate must be a finite number > 0; got {self.learning_rate}")
        check_seed("train.seed", self.seed)


@dataclass(frozen=True)
class ModelsConfig:
    """Which models an experiment trains (records of :data:`bflsim.models.MODELS`), and their sizes."""

    names: tuple[str, ...] = ("cnn_lstm",)
    cnn_lstm: CnnLstmConfig = field(default_factory=CnnLstmConfig)
    dnn: DnnConfig = field(default_factory=DnnConfig)

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("models.names is empty; name at least one model")


PartitionScheme = Literal["iid", "dirichlet", "shards"]


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

    ``min_node_rows``: every node must hold at least this many training rows, checked once the
    data is loaded and partitioned, before any node starts (0 turns the check off). Ten by
    default: a node with a handful of rows (Dirichlet with alpha = 0.001 gives 1-row nodes)
    sends an update that reflects those few rows and nothing else, a degenerate experiment
    that would otherwise run silently. It is an absolute count, not ``train.batch_size``:
    nodes smaller than a batch are common in IoT settings and train fine on one short batch.

    ``root_size``: rows of the training split the server holds as its own clean root set
    (FLTrust's), drawn uniformly from ``seed`` before the rest is partitioned, so no node
    holds any of them; 0 (default) leaves the partition as it always was.
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
    min_node_rows: int = 10
    root_size: int = 0

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError(f"federation.num_nodes must be >= 1; got {self.num_nodes}")
        check_seed("federation.seed", self.seed)
        if self.root_size < 0:
            raise ConfigError(f"federation.root_size must be >= 0 (0: no root set); got {self.root_size}")
        if self.min_node_rows < 0:
            raise ConfigError(f"federation.min_node_rows must be >= 0 (0 turns the check off); got {self.min_node_rows}")
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

    def sample_cohort(self, server_round: int, available: Sequence[int]) -> list[int]:
        """This round's cohort: ``cohort_size`` of the ``available`` nodes (fewer if fewer are),
        drawn reproducibly from ``(seed, server_round)``; ascending."""
        rng = np.random.default_rng([self.seed, server_round])
        size = min(self.cohort_size, len(available))
        return sorted(int(i) for i in rng.choice(sorted(available), size=size, replace=False))


def _resolved(record: object | None, *fixed: str) -> Params:
    """A record's parameters, every one (defaults too), as they went into the run."""
    if record is None:
        return Params()
    return Params({f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.init and f.name not in fixed})


THREAT_NEEDS = {"independent": "its own data and update", "colluding": "the coalition's honest updates",
                "omniscient": "every honest update of the round",
                "adaptive": "every honest update and the defence's setting"}


@dataclass(frozen=True)
class AttackConfig:
    """Which edge nodes are malicious and what they do (an :data:`bflsim.attacks.ATTACKS` record).

    ``num_malicious`` nodes, or ``fraction`` of ``federation.num_nodes`` rounded half up
    (0.25 of 10 nodes is 3), are drawn from ``seed``: once for the run, or again every round
    with ``redraw_each_round``. ``threat_model`` is what the experiment grants the attackers
    (:data:`bflsim.attacks.THREAT_MODELS`: independent, colluding, omniscient, adaptive;
    default independent, each node seeing only its own data and update); an attack that needs
    more is refused, naming both. ``params`` are the attack's own parameters
    (``[attack.params]``, e.g. Gaussian ``mode``, ``mu``, ``sigma``), completed with the
    attack's defaults once parsed; ``name = "none"`` is no attack, and has none. Old files' flat keys (``attack.sigma``) are read as ``attack.params.sigma``.

    An attack on data (``label_flip``, ``backdoor``) poisons the malicious nodes' data from
    round ``data_from_round``: 0 (default), the nodes register poisoned data and VerifyIntegrity
    cannot tell; k >= 1, they register clean data and poison it from round k, where
    VerifyIntegrity catches them (:func:`bflsim.edge_node.node_data`). Its nodes are fixed for
    the run: a node's data is its own, not redrawn each round.
    """

    name: str = "none"
    num_malicious: int | None = None
    fraction: float | None = None
    redraw_each_round: bool = False
    seed: int = 0
    threat_model: str = "independent"
    data_from_round: int = 0
    params: Params = field(default_factory=Params)

    def __post_init__(self) -> None:
        check_seed("attack.seed", self.seed)
        if self.data_from_round < 0:
            raise ConfigError(f"attack.data_from_round must be >= 0; got {self.data_from_round}")
        if self.name != "none" and self.name not in ATTACKS:
            raise ConfigError(f"attack.name = {self.name!r} is not one of {['none', *ATTACKS]}")
        if self.threat_model not in THREAT_MODELS:
            raise ConfigError(f"attack.threat_model = {self.threat_model!r} is not one of {list(THREAT_MODELS)}")
        needed = ATTACKS[self.name].threat_model if self.name != "none" else "independent"
        if not grants(self.threat_model, needed):
            raise ConfigError(
                f"attack.name = {self.name!r} needs threat model {needed!r} ({THREAT_NEEDS[needed]}); "
                f"attack.threat_model = {self.threat_model!r} does not grant it: set attack.threat_model = "
                f"{needed!r} or a stronger one ({', '.join(THREAT_MODELS[THREAT_MODELS.index(needed) + 1:]) or 'none'})"
            )
        if self.num_malicious is not None and self.fraction is not None:
            raise ConfigError("attack: give num_malicious or fraction, not both")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"attack.fraction must be in [0, 1]; got {self.fraction}")
        if self.num_malicious is not None and self.num_malicious < 0:
            raise ConfigError(f"attack.num_malicious must be >= 0; got {self.num_malicious}")
        # Every parameter, defaults included, so manifests say exactly what ran; none without an attack.
        object.__setattr__(self, "params", _resolved(self.record))
        on_data = self.record is not None and self.record.acts_on_data
        if on_data and self.redraw_each_round:
            raise ConfigError(f"attack.redraw_each_round = true with attack.name = {self.name!r}: an attack on data "
                              f"poisons the data its nodes hold and register; its nodes are fixed for the run")
        if self.data_from_round and self.record is not None and not on_data:
            raise ConfigError(f"attack.data_from_round = {self.data_from_round}: {self.name!r} does not act on "
                              f"data; the key is for attacks on data (label_flip, backdoor)")

    @cached_property
    def record(self) -> Attack | None:
        """The attack with its parameters; None without an attack."""
        if self.name == "none":
            return None
        return build_record(ATTACKS[self.name], self.params, "attack.params", AttackError)

    def count(self, num_nodes: int) -> int:
        """How many of ``num_nodes`` nodes are malicious (0 when there is no attack)."""
        if self.name == "none":
            return 0
        if self.fraction is not None:
            return math.floor(self.fraction * num_nodes + 0.5)
        return self.num_malicious if self.num_malicious is not None else 0


@dataclass(frozen=True)
class AggregatorConfig:
    """The aggregation rule (an :data:`bflsim.aggregators.AGGREGATORS` record) and its assumptions.

    ``assumed_malicious`` is the f the rule assumes (Krum's n - f - 2 neighbours; old name
    ``aggregator.num_malicious``), the defender's own setting: it never reads the number of
    attackers drawn. Unset, it is ``assumed_fraction`` (default 0.2) of the planned cohort,
    rounded down, and at most the most the rule tolerates at that size
    (:meth:`bflsim.aggregators.Rule.max_tolerated`): 2 of 10 nodes, 4 of 20. The run's config
    (its manifest) holds the resolved number.
    ``params`` are the rule's own parameters (``[aggregator.params]``: Multi-Krum's
    ``num_selected``, the trimmed mean's ``trim_fraction``; old files' flat keys are read as
    these), completed with the rule's defaults once parsed. With a ledger, the rule's outliers (:meth:`bflsim.aggregators.Rule.rejected`;
    Krum: those of the f top scores above ``reject_factor`` times the median score) get a
    rejection on chain, which counts towards the node's revocation. ``seed``: the rule's own
    randomness (FLAME's noise, DnC's subsampling), drawn afresh each round from
    ``(seed, round)``, so the audit replays it.
    """

    name: str = "fedavg"
    assumed_malicious: int | None = None
    assumed_fraction: float = 0.2
    reject_factor: float = 3.0
    seed: int = 0
    params: Params = field(default_factory=Params)

    def __post_init__(self) -> None:
        if self.name not in AGGREGATORS:
            raise ConfigError(f"aggregator.name = {self.name!r} is not one of {list(AGGREGATORS)}")
        if self.assumed_malicious is not None and self.assumed_malicious < 0:
            raise ConfigError(f"aggregator.assumed_malicious must be >= 0; got {self.assumed_malicious}")
        check_seed("aggregator.seed", self.seed)
        if not 0.0 <= self.assumed_fraction < 1.0:
            raise ConfigError(f"aggregator.assumed_fraction must be in [0, 1); got {self.assumed_fraction}")
        if not self.reject_factor >= 1.0:
            raise ConfigError(f"aggregator.reject_factor must be >= 1; got {self.reject_factor}")
        object.__setattr__(self, "params", _resolved(self.rule(0), "num_malicious"))  # defaults included

    def rule(self, num_malicious: int) -> Rule:
        """The rule with its parameters, assuming ``num_malicious`` attackers."""
        return build_record(
            AGGREGATORS[self.name], self.params, "aggregator.params", AggregatorError, num_malicious=num_malicious
        )


@dataclass(frozen=True)
class BackendConfig:
    """Ray simulation backend: resources per virtual client, and where Ray runs.

    By default a local Ray instance is started on 127.0.0.1 with ``num_cpus`` CPUs (all
    cores when unset) and stopped at the end. ``ray_address`` joins a Ray cluster started
    by hand instead (one or many machines; see the README): ``"host:port"``, the head's
    address that ``ray start --head`` prints; ``"auto"``, the cluster last started on this
    machine (or ``$RAY_ADDRESS``); ``"ray://host:port"``, a Ray Client server. bflsim (the
    driver, with the ServerApp and an embedded chain) runs on a node of that cluster; the
    ClientApp actors run on any node with ``client_num_cpus`` CPUs free. ``num_cpus`` sizes
    the local instance only (a cluster's nodes have the CPUs ``ray start --num-cpus`` gave them).
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
        if self.ray_address is not None:
            host, sep, port = self.ray_address.removeprefix("ray://").rpartition(":")
            if self.ray_address != "auto" and not (sep and host and port.isdigit() and 0 < int(port) < 65536):
                raise ConfigError(f"backend.ray_address must be host:port (the head's address that `ray start "
                                  f"--head` prints), ray://host:port or auto; got {self.ray_address!r}")


LedgerBackend = Literal["embedded", "anvil", "rpc", "none"]
KeySource = Literal["seed", "env", "keystore"]
LedgerMode = Literal["per-node", "batched"]


@dataclass(frozen=True)
class LedgerConfig:
    """Where the run's audit trail is registered (``bflsim.ledger``).

    ``embedded``: an in-process py-evm chain, nothing to set up (the default). ``anvil``: a
    local anvil node started for the run on 127.0.0.1 (``block_time`` seconds per block,
    automine when unset; from ``npm ci --prefix contracts``) and stopped after it. ``rpc``:
    any EVM JSON-RPC endpoint at ``rpc_url``; the operator's key is read from the environment
    variable named by ``operator_key_env`` (keys never go in experiment files), else the
    node's first unlocked account sends. ``none``: Standard FL, nothing is registered.

    ``chain_id`` is the chain id of the anvil node started for the run (default 31337), or the
    one the ``rpc`` endpoint must serve (checked before the run starts). The embedded chain
    sets its own chain id, so ``chain_id`` is refused there rather than ignored.

    Every edge node signs with its own key (:func:`bflsim.ledger.identity.node_identities`);
    ``key_source`` says where it comes from. ``seed``: derived from ``key_seed`` (default
    ``federation.seed``), which the manifest records, so anyone holding the run folder can
    re-sign a run. ``env``: the same derivation mixed with a secret read from the
    environment variable named by ``key_secret_env`` (never written to the run folder).
    ``keystore``: one key file per node in the folder ``keystore`` (created there, mode
    0600, when missing). The contract revokes a node after ``max_rejections`` rejections by
    the aggregator (0 = never).

    ``mode`` (contracts/README.md): ``per-node`` registers every node, data batch and update
    on chain, each node sending its own transactions (gas grows with the cohort);
    ``batched`` commits Merkle roots of the nodes' EIP-712 signatures, one ``openBatch`` and
    one ``commitBatch`` per round whatever the cohort, and moves the checks of signatures,
    cohorts and rejections (``max_rejections`` is kept by the server) to ``bflsim audit``.
    """

    backend: LedgerBackend = "embedded"
    mode: LedgerMode = "per-node"
    rpc_url: str | None = None
    chain_id: int | None = None
    operator_key_env: str = "BFLSIM_OPERATOR_KEY"
    block_time: float | None = None
    max_rejections: int = 3
    key_seed: int | None = None
    key_source: KeySource = "seed"
    key_secret_env: str = "BFLSIM_NODE_KEY_SECRET"
    keystore: str | None = None
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
            raise ConfigError(f"ledger.key_seed must be an integer in 0..2**64 - 1; got {self.key_seed}")
        if self.chain_id is not None and self.backend in ("embedded", "none"):
            raise ConfigError(
                f"ledger.chain_id = {self.chain_id} cannot apply to ledger.backend = {self.backend!r}"
                + (": the embedded py-evm chain sets its own chain id (recorded in trail/chain.json). Remove ledger.chain_id, or use "
                   "ledger.backend = 'anvil' (which starts a node with that chain id) or 'rpc'"
                   if self.backend == "embedded" else ": nothing is registered. Remove ledger.chain_id")
            )
        if self.chain_id is not None and not 0 < self.chain_id < 2**64:
            raise ConfigError(f"ledger.chain_id must be an integer in 1..2**64 - 1; got {self.chain_id}")
        if not self.receipt_timeout > 0:
            raise ConfigError(f"ledger.receipt_timeout must be > 0 seconds; got {self.receipt_timeout}")
        if self.key_source == "keystore" and not self.keystore:
            raise ConfigError("ledger.key_source = 'keystore' needs ledger.keystore, the folder of the nodes' key files")
        if self.keystore and self.key_source != "keystore":
            raise ConfigError(f"ledger.keystore applies to ledger.key_source = 'keystore'; got {self.key_source!r}")
        if self.keystore:  # every process (Ray workers too) reads the same folder, whatever its cwd
            object.__setattr__(self, "keystore", os.path.abspath(os.path.expanduser(self.keystore)))
        if not self.key_secret_env:
            raise ConfigError("ledger.key_secret_env must name an environment variable")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


@dataclass(frozen=True)
class LoopConfig:
    """The closed loop (issue 14): IoT devices behind the edge nodes, their traffic scored at
    the edge with a committed global model, alerts and quarantine in the registry.

    After training, each edge node fronts ``devices_per_node`` devices; ``compromised`` of all
    devices, drawn with ``seed``, send attack flows of class ``attack_class`` (a class name of
    the dataset; empty: the most frequent attack class of the held-out rows) at a share of
    ``attack_rate`` of their flows from ``start_seconds`` on, and normal flows otherwise. Every
    device sends ``flows_per_second`` flows (Poisson) for ``duration_seconds`` of simulated
    traffic, drawn from the validation split, which federated training never reads.

    The edge nodes score their devices' flows with the global model of round ``model_round``
    (0: the initial model; unset: the final one) in micro-batches of ``micro_batch`` flows,
    and keep per device a window of its last ``window`` verdicts: ``threshold`` attack
    verdicts in it raise an alert, signed by the edge node (``bflsim.traffic``). The registry
    quarantines a device after ``alerts_to_quarantine`` alerts from its edge node; its later
    flows are dropped. Traffic is processed in slices of ``slice_seconds`` (one Flower
    message round each): a quarantine takes effect from the next slice.

    Edge nodes listed in ``false_alert_nodes`` are compromised themselves: they call every
    flow an attack, so they raise false alerts about benign devices. The server re-scores
    each alert's window and disputes a false one, which counts as one of the node's
    rejections (revoked at ``ledger.max_rejections``).

    The loop is off unless the experiment file has a ``[loop]`` table; it needs the
    per-node registry (``ledger.mode = "per-node"``, a backend other than ``none``).
    """

    model_round: int | None = None
    devices_per_node: int = 10
    compromised: int = 5
    attack_class: str = ""
    attack_rate: float = 0.5
    start_seconds: float = 60.0
    flows_per_second: float = 1.0
    duration_seconds: float = 600.0
    slice_seconds: float = 10.0
    micro_batch: int = 64
    window: int = 20
    threshold: int = 10
    alerts_to_quarantine: int = 1
    false_alert_nodes: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed("loop.seed", self.seed)
        if any(n < 0 for n in self.false_alert_nodes) or len(set(self.false_alert_nodes)) != len(self.false_alert_nodes):
            raise ConfigError(f"loop.false_alert_nodes must be distinct node indices >= 0; got {list(self.false_alert_nodes)}")
        if self.model_round is not None and self.model_round < 0:
            raise ConfigError(f"loop.model_round must be >= 0 (0: the initial model); got {self.model_round}")
        for key in ("devices_per_node", "micro_batch", "window", "threshold", "alerts_to_quarantine"):
            if getattr(self, key) < 1:
                raise ConfigError(f"loop.{key} must be >= 1; got {getattr(self, key)}")
        if self.threshold > self.window:
            raise ConfigError(f"loop.threshold = {self.threshold} attack verdicts can never be reached in a window "
                              f"of loop.window = {self.window} flows; use a threshold <= the window")
        if self.compromised < 0:
            raise ConfigError(f"loop.compromised must be >= 0; got {self.compromised}")
        if not 0.0 < self.attack_rate <= 1.0:
            raise ConfigError(f"loop.attack_rate must be in (0, 1]; got {self.attack_rate}")
        if not self.flows_per_second > 0:
            raise ConfigError(f"loop.flows_per_second must be > 0: a device without traffic cannot be scored; "
                              f"got {self.flows_per_second}")
        if not self.duration_seconds > 0 or not 0 < self.slice_seconds <= self.duration_seconds:
            raise ConfigError(f"loop.slice_seconds must be in (0, loop.duration_seconds = {self.duration_seconds}]; "
                              f"got {self.slice_seconds}")
        if not 0 <= self.start_seconds < self.duration_seconds:
            raise ConfigError(f"loop.start_seconds must be in [0, loop.duration_seconds = {self.duration_seconds}): "
                              f"a compromise that starts after the traffic ends is never seen; got {self.start_seconds}")
