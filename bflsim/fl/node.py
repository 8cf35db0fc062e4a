"""What one edge node does in a round, without Flower: load its data, train, or attack.

An edge node reads its own share of the training split (the same deterministic
preparation and partition on every process, so no data crosses the network), trains the
global model locally, and returns its new weights. A malicious node instead returns
``global + attack(update)``, where ``update = local - global`` is the honest update it
would have sent; Gaussian ``replace`` does not need the honest update, so that node skips
training. Which nodes are malicious is drawn from the attack seed
(:func:`bflsim.attacks.draw_malicious`), so server and nodes agree without being told.

Keras models are expensive to build and trace; each process keeps one compiled model per
architecture and resets its weights and optimizer state on every call.

Faults are part of the experiment: ``federation.crash_nodes`` raise :class:`NodeCrash`
instead of training, and ``federation.slow_nodes`` stall first (see
:class:`bflsim.config.FederationConfig`), so failure handling is tested like the rest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from bflsim.attacks import apply_attack, draw_malicious
from bflsim.config import (
    DataConfig,
    ExperimentConfig,
    FederationConfig,
    config_to_dict,
    parse_experiment,
)
from bflsim.data import PreparedData, partition, prepare_data
from bflsim.hashing import data_digest, weights_digest
from bflsim.ledger.identity import (
    NodeIdentity,
    TxContext,
    derive_identities,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.models import configure_tensorflow

Weights = list[NDArray[np.float32]]


class NodeCrash(RuntimeError):
    """An edge node failed its round on purpose (``federation.crash_nodes``)."""


class DataIntegrityError(RuntimeError):
    """An edge node's data no longer matches the digest it registered on chain."""


@dataclass(frozen=True)
class NodeResult:
    """One node's reply to a training round."""

    node: int
    weights: Weights
    num_examples: int
    malicious: bool
    train_loss: float | None


def experiment_to_json(config: ExperimentConfig) -> str:
    """The wire form of a config (sent to nodes inside Flower's ConfigRecord)."""
    return json.dumps(config_to_dict(config), sort_keys=True)


@lru_cache(maxsize=8)
def experiment_from_json(text: str) -> ExperimentConfig:
    return parse_experiment(json.loads(text))


def malicious_nodes(config: ExperimentConfig, server_round: int) -> NDArray[np.int64]:
    """The malicious node ids in this round (fixed for the run unless redrawn per round)."""
    attack = config.attack
    return draw_malicious(
        config.federation.num_nodes,
        config.num_malicious,
        seed=attack.seed,
        server_round=server_round if attack.redraw_each_round else None,
    )


@lru_cache(maxsize=2)
def load_data(data: DataConfig, data_dir: str | None = None) -> PreparedData:
    """The prepared dataset (cached per process: configs are frozen, hence hashable)."""
    return prepare_data(data, data_dir)


@lru_cache(maxsize=2)
def node_partitions(
    data: DataConfig, federation: FederationConfig, data_dir: str | None = None
) -> tuple[NDArray[np.int64], ...]:
    """Row indices of the training split held by each edge node."""
    labels = load_data(data, data_dir).y_train
    return tuple(
        partition(
            labels, federation.num_nodes, federation.partition,
            alpha=federation.alpha, shards_per_node=federation.shards_per_node, seed=federation.seed,
        )
    )


def node_features(config: ExperimentConfig, node: int, server_round: int, data_dir: str | None = None) -> NDArray:
    """The features edge node ``node`` holds in ``server_round`` (round 0: registration).

    A node in ``federation.tamper_nodes`` holds a modified copy from ``tamper_round`` on:
    Gaussian noise (sigma 1, seeded) on the features of a tenth of its rows.
    """
    x = load_data(config.data, data_dir).x_train[node_partitions(config.data, config.federation, data_dir)[node]]
    fed = config.federation
    if node in fed.tamper_nodes and server_round >= fed.tamper_round:
        rng = np.random.default_rng(_seed(fed.seed, 0, node))
        rows = rng.choice(len(x), size=max(1, len(x) // 10), replace=False)
        x = x.copy()
        x[rows] += rng.normal(0.0, 1.0, size=x[rows].shape).astype(x.dtype)
    return x


@lru_cache(maxsize=4)
def _identities(seed: int, num_nodes: int) -> tuple[NodeIdentity, ...]:
    return tuple(derive_identities(seed, num_nodes))


def node_identities(config: ExperimentConfig) -> tuple[NodeIdentity, ...]:
    """Every edge node's key pair, from ``ledger.key_seed`` (default ``federation.seed``).

    In a simulation one seed yields all keys; on real devices each node keeps its own.
    """
    seed = config.ledger.key_seed if config.ledger.key_seed is not None else config.federation.seed
    return _identities(seed, config.federation.num_nodes)


def register_data(
    config: ExperimentConfig, node: int, ctx: TxContext, timestamp: int, data_dir: str | None = None
) -> tuple[bytes, bytes]:
    """The node's data digest ``sha256(X || timestamp || node)`` and its signed ``registerData``."""
    digest = data_digest(node_features(config, node, 0, data_dir), timestamp, node)
    return digest, sign_data_tx(node_identities(config)[node], ctx, digest, timestamp)


def verify_integrity(
    config: ExperimentConfig, node: int, server_round: int, registered: bytes, timestamp: int,
    data_dir: str | None = None,
) -> bytes:
    """VerifyIntegrity: recompute the node's data digest; it must be the one on chain.

    Returns the digest; raises :class:`DataIntegrityError` naming both digests otherwise.
    """
    digest = data_digest(node_features(config, node, server_round, data_dir), timestamp, node)
    if digest != registered:
        raise DataIntegrityError(
            f"edge node {node}, round {server_round}: data digest 0x{digest.hex()} differs from "
            f"0x{registered.hex()} registered on chain at timestamp {timestamp}; refusing to train"
        )
    return digest


def sign_update(
    config: ExperimentConfig, node: int, ctx: TxContext, server_round: int, weights: Weights, num_examples: int
) -> tuple[bytes, bytes]:
    """The digest of the weights the node returns and its signed ``submitUpdate`` for them."""
    digest = weights_digest(weights)
    return digest, sign_update_tx(node_identities(config)[node], ctx, server_round, digest, num_examples)


_MODELS: dict[str, tuple[object, list[np.ndarray]]] = {}


def cached_model(config: ExperimentConfig, num_features: int, num_classes: int):
    """A compiled Keras model for this architecture, built once per process."""
    return _cached(config, num_features, num_classes)[0]


def _cached(config: ExperimentConfig, num_features: int, num_classes: int):
    key = json.dumps(
        [config.models.names[0], config_to_dict(config.models), num_features, num_classes,
         config.train.learning_rate],
        sort_keys=True,
    )
    if key not in _MODELS:
        configure_tensorflow()
        from bflsim.models import KERAS_BUILDERS

        model = KERAS_BUILDERS[config.models.names[0]](
            num_features, num_classes, config.models, config.train.learning_rate, seed=config.train.seed
        )
        model.optimizer.build(model.trainable_variables)
        fresh_state = [np.array(v.numpy()) for v in model.optimizer.variables]
        _MODELS[key] = (model, fresh_state)
    return _MODELS[key]


def initial_weights(config: ExperimentConfig, num_features: int, num_classes: int) -> Weights:
    """The global model before round 1: a function of ``train.seed`` alone."""
    configure_tensorflow()
    from bflsim.models import KERAS_BUILDERS

    fresh = KERAS_BUILDERS[config.models.names[0]](
        num_features, num_classes, config.models, config.train.learning_rate, seed=config.train.seed
    )
    return [np.asarray(w, dtype=np.float32) for w in fresh.get_weights()]


def reset_optimizer(config: ExperimentConfig, num_features: int, num_classes: int) -> None:
    """Restore the optimizer's fresh state (step count, moments): each round starts afresh."""
    model, fresh_state = _cached(config, num_features, num_classes)
    for variable, value in zip(model.optimizer.variables, fresh_state, strict=True):
        variable.assign(value)


def inject_faults(federation: FederationConfig, node: int, server_round: int) -> None:
    """Stall or crash as ``federation`` sets for this node and round; otherwise do nothing."""
    if node in federation.slow_nodes and (not federation.slow_rounds or server_round in federation.slow_rounds):
        time.sleep(federation.delay_seconds)
    if node in federation.crash_nodes and (not federation.crash_rounds or server_round in federation.crash_rounds):
        raise NodeCrash(f"edge node {node} crashed in round {server_round} (federation.crash_nodes)")


def train_locally(
    config: ExperimentConfig, node: int, server_round: int, global_weights: Weights, data_dir: str | None = None
) -> NodeResult:
    """Run edge node ``node`` for one round starting from ``global_weights``.

    Raises :class:`NodeCrash` when the node is set to crash in this round.
    """
    num_nodes = config.federation.num_nodes
    if not 0 <= node < num_nodes:
        raise ValueError(
            f"edge node {node} does not exist: federation.num_nodes = {num_nodes}; "
            f"the federation must have exactly that many SuperNodes (num-supernodes)"
        )
    inject_faults(config.federation, node, server_round)
    # An edge node's process sizes TensorFlow's pools before its first import of it
    # (a Ray actor: 1 thread, so two actors train in parallel on two cores); the server
    # process leaves them at TensorFlow's default, all cores, for evaluation.
    threads = config.backend.threads_per_client
    configure_tensorflow(intra_op_threads=threads, inter_op_threads=threads)
    data = load_data(config.data, data_dir)
    rows = node_partitions(config.data, config.federation, data_dir)[node]
    malicious = bool(np.isin(node, malicious_nodes(config, server_round)))
    attack = config.attack
    skip_training = malicious and attack.name == "gaussian" and attack.mode == "replace"

    train_loss = None
    if skip_training:
        local = global_weights
    else:
        import keras

        model = cached_model(config, data.num_features, data.num_classes)
        model.set_weights(global_weights)
        reset_optimizer(config, data.num_features, data.num_classes)
        keras.utils.set_random_seed(_seed(config.train.seed, server_round, node))
        history = model.fit(
            node_features(config, node, server_round, data_dir), data.y_train[rows],
            epochs=config.federation.local_epochs, batch_size=config.train.batch_size,
            shuffle=True, verbose=0,
        )
        train_loss = float(history.history["loss"][-1])
        local = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]

    if malicious:
        local = poison(config, node, server_round, global_weights, local)
    return NodeResult(node, local, len(rows), malicious, train_loss)


def poison(config: ExperimentConfig, node: int, server_round: int, global_weights: Weights, local: Weights) -> Weights:
    """``global + attack(local - global)``, computed on the flattened update."""
    from bflsim.vectors import flatten, unflatten

    flat_global, shapes = flatten(global_weights)
    flat_local, _ = flatten(local)
    rng = np.random.default_rng(_seed(config.attack.seed, server_round, node))
    attacked = apply_attack(config.attack.name, flat_local - flat_global, config.attack.params(), rng=rng)
    return unflatten((flat_global + attacked).astype(np.float32), shapes)


def _seed(base: int, server_round: int, node: int) -> int:
    return int(np.random.SeedSequence([base, server_round, node]).generate_state(1)[0])
