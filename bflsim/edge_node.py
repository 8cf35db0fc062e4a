"""What one edge node does in a round, without Flower: hold its data, register it, train, attack.

An edge node reads its own share of the training split (the same deterministic preparation
and partition on every process, so no data crosses the network), trains the global model
locally, and returns its new weights. Which nodes are malicious is drawn from the attack
seed (:meth:`bflsim.config.ExperimentConfig.malicious_nodes`), so server and nodes agree
without being told. A malicious node runs its attack record (:mod:`bflsim.attacks`):

- ``poison_data`` changes the data it holds (data poisoning): :func:`node_data` returns the
  poisoned features and labels from round ``attack.data_from_round`` on, and the node registers,
  verifies and trains on what :func:`node_data` returns. The poisoning is drawn from
  ``(attack.seed, node)`` alone, so the poisoned data is the same in every round. With
  ``data_from_round = 0`` (default) the node registers its poisoned data: VerifyIntegrity
  checks the data against the digest the node itself registered, so it cannot catch a node
  that was poisoned before registration. With ``data_from_round = k >= 1`` the node registers
  clean data and poisons it from round k: VerifyIntegrity catches it in round k (the node
  refuses the round and is excluded), so it never trains on the poisoned data under a
  ledger; without one nothing checks, and it trains on it from round k;
- ``poison_update`` changes what it sends: ``global + attack(delta)``, where ``delta = local -
  global`` is the honest update it would have sent. An attack that knows the coalition gets
  the honest updates of every malicious node of the cohort, one that knows the round those of
  every cohort node: training is deterministic from the seeds, so the node computes them
  itself (one local training per node it knows) and no message reveals them. An attack that
  does not need the honest update (Gaussian ``replace``) skips training.

Faults are part of the experiment: ``federation.crash_nodes`` raise :class:`NodeCrash`
instead of training, and ``federation.slow_nodes`` stall first (see
:class:`bflsim.config.FederationConfig`), so failure handling is tested like the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from bflsim.attacks import Attack, AttackError, AttackInput, Classes, grants
from bflsim.config import ConfigError, DataConfig, ExperimentConfig, FederationConfig, LoopConfig
from bflsim.data import PreparedData, partition, prepare_data
from bflsim.hashing import data_digest, weights_digest
from bflsim.ledger.identity import (
    NodeIdentity,
    TxContext,
    node_identities,
    sign_alert_tx,
    sign_data_tx,
    sign_data_typed,
    sign_update_tx,
    sign_update_typed,
)
from bflsim.models import configure_tensorflow, train_weights
from bflsim.traffic import (
    Device,
    EdgeOutcome,
    Flows,
    assign_devices,
    class_pools,
    device_flows,
    run_edge,
)
from bflsim.vectors import Weights, flatten, unflatten

# Entropy word of the root set's draw and of the server's root training (kept from when node ids were < 255).
_ROOT_DRAW = 0x726F6F74


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


@lru_cache(maxsize=2)
def load_data(data: DataConfig, data_dir: str | None = None) -> PreparedData:
    """The prepared dataset (cached per process: configs are frozen, hence hashable)."""
    return prepare_data(data, data_dir)


@lru_cache(maxsize=16)
def root_rows(data: DataConfig, federation: FederationConfig, data_dir: str | None = None) -> NDArray[np.int64]:
    """Row indices of the training split the server holds as its clean root set
    (``federation.root_size``, drawn uniformly from the federation seed; ascending)."""
    size = federation.root_size
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    total = len(load_data(data, data_dir).y_train)
    if size >= total:
        raise ValueError(f"federation.root_size = {size} leaves none of the {total} training rows to the nodes")
    rng = np.random.default_rng([federation.seed, _ROOT_DRAW])
    return np.sort(rng.choice(total, size=size, replace=False)).astype(np.int64)


@lru_cache(maxsize=16)
def node_partitions(
    data: DataConfig, federation: FederationConfig, data_dir: str | None = None
) -> tuple[NDArray[np.int64], ...]:
    """Row indices of the training split held by each edge node (none of the root set's)."""
    labels = load_data(data, data_dir).y_train
    kept = np.setdiff1d(np.arange(len(labels)), root_rows(data, federation, data_dir))
    parts = partition(
        labels[kept], federation.num_nodes, federation.partition,
        alpha=federation.alpha, shards_per_node=federation.shards_per_node, seed=federation.seed,
    )
    return tuple(kept[p] for p in parts)


def root_update(
    config: ExperimentConfig, server_round: int, global_weights: Weights, data_dir: str | None = None
) -> NDArray[np.float64]:
    """The server's own update on its root set (FLTrust's reference): trained from
    ``global_weights`` as a node would (``federation.local_epochs``, seeded from the round),
    returned as the flat float64 delta."""
    data = load_data(config.data, data_dir)
    rows = root_rows(config.data, config.federation, data_dir)
    local, _ = train_weights(
        config.models, config.train, global_weights, data.x_train[rows], data.y_train[rows], data.num_classes,
        epochs=config.federation.local_epochs, seed=_seed(config.train.seed, server_round, _ROOT_DRAW),
    )
    return flatten(local)[0].astype(np.float64) - flatten(global_weights)[0].astype(np.float64)


def node_data(
    config: ExperimentConfig, node: int, server_round: int, data_dir: str | None = None
) -> tuple[NDArray, NDArray]:
    """The features and labels edge node ``node`` holds in ``server_round`` (round 0: registration).

    A malicious node of an attack on data holds the data the attack's ``poison_data`` makes
    of its partition from round ``attack.data_from_round`` on, drawn from ``(attack.seed,
    node)`` only (the same poisoned data every round). A node in ``federation.tamper_nodes``
    holds a modified copy from ``tamper_round`` on: Gaussian noise (sigma 1, seeded) on the
    features of a tenth of its rows.
    """
    data = load_data(config.data, data_dir)
    rows = node_partitions(config.data, config.federation, data_dir)[node]
    x, y = data.x_train[rows], data.y_train[rows]
    attack = config.attack.record
    if attack is not None and holds_poisoned_data(config, node, server_round):
        rng = np.random.default_rng(np.random.SeedSequence([config.attack.seed, node]))
        x, y = attack.poison_data(x, y, Classes(data.class_names, data.normal_class), rng)
    fed = config.federation
    if node in fed.tamper_nodes and server_round >= fed.tamper_round:
        rng = np.random.default_rng(_seed(fed.seed, 0, node))
        picked = rng.choice(len(x), size=max(1, len(x) // 10), replace=False)
        x = x.copy()
        x[picked] += rng.normal(0.0, 1.0, size=x[picked].shape).astype(x.dtype)
    return x, y


def holds_poisoned_data(config: ExperimentConfig, node: int, server_round: int) -> bool:
    """Whether ``node`` holds data poisoned by the experiment's attack in ``server_round``:
    a malicious node of an attack on data, from round ``attack.data_from_round`` on."""
    attack = config.attack.record
    return (attack is not None and attack.acts_on_data and server_round >= config.attack.data_from_round
            and node in config.malicious_nodes(server_round))


def check_attack_data(config: ExperimentConfig, data: PreparedData) -> None:
    """Refuse, before a run, a targeted attack whose classes or columns the dataset does not
    have, or that leaves no test row to measure its success on (:class:`bflsim.config.ConfigError`
    naming ``attack.params``)."""
    try:
        aimed = success_rows(config, data)
    except AttackError as err:
        raise ConfigError(f"attack.params ({config.attack.name!r} on {data.dataset}): {err}") from err
    if aimed is not None and len(aimed[0]) == 0:
        raise ConfigError(f"attack {config.attack.name!r}: the test split of {data.dataset} holds no row to "
                          f"measure its success on; check attack.params")


def success_rows(config: ExperimentConfig, data: PreparedData) -> tuple[NDArray, int] | None:
    """The test rows on which a targeted attack's success is measured, as the attacker would
    present them, and the class it wants for them (None without a targeted attack)."""
    attack = config.attack.record
    if attack is None or not attack.targeted:
        return None
    return attack.success_inputs(data.x_test, data.y_test, Classes(data.class_names, data.normal_class))


def register_data(
    config: ExperimentConfig, node: int, ctx: TxContext, timestamp: int, data_dir: str | None = None,
    identity: NodeIdentity | None = None,
) -> tuple[bytes, bytes]:
    """The node's data digest ``sha256([X, y] || timestamp || node)`` and its signed ``registerData``
    (digest, timestamp and the number of rows: the weight its updates will claim); in the
    ledger's batched mode, its EIP-712 ``Data`` signature of the same instead.

    The node signs with ``identity`` (a key it holds itself, e.g. a SuperNode's chain key
    file) or, without one, with its key from ``ledger.key_source``."""
    x, y = node_data(config, node, 0, data_dir)
    digest = data_digest(x, y, timestamp, node)
    key = identity or node_identities(config)[node]
    if config.ledger.mode == "batched":  # an EIP-712 Data signature for the round-0 Merkle tree
        return digest, sign_data_typed(key, ctx, digest, timestamp, len(y))
    return digest, sign_data_tx(key, ctx, digest, timestamp, len(y))


def verify_integrity(
    config: ExperimentConfig, node: int, server_round: int, registered: bytes, timestamp: int,
    data_dir: str | None = None,
) -> bytes:
    """VerifyIntegrity: recompute the node's data digest; it must be the one on chain.

    Returns the digest; raises :class:`DataIntegrityError` naming both digests otherwise.
    """
    digest = data_digest(*node_data(config, node, server_round, data_dir), timestamp, node)
    if digest != registered:
        raise DataIntegrityError(
            f"edge node {node}, round {server_round}: data digest 0x{digest.hex()} differs from "
            f"0x{registered.hex()} registered on chain at timestamp {timestamp}; refusing to train"
        )
    return digest


def sign_update(
    config: ExperimentConfig, node: int, ctx: TxContext, server_round: int, weights: Weights, num_examples: int,
    identity: NodeIdentity | None = None,
) -> tuple[bytes, bytes]:
    """The digest of the weights the node returns and its signed ``submitUpdate`` for them
    (with ``identity``, else its key from ``ledger.key_source``, as :func:`register_data`); in
    the ledger's batched mode, its EIP-712 ``Update`` signature instead."""
    digest = weights_digest(weights)
    key = identity or node_identities(config)[node]
    if config.ledger.mode == "batched":  # an EIP-712 Update signature for the round's Merkle tree
        return digest, sign_update_typed(key, ctx, server_round, digest, num_examples)
    return digest, sign_update_tx(key, ctx, server_round, digest, num_examples)


def inject_faults(federation: FederationConfig, node: int, server_round: int) -> None:
    """Stall or crash as ``federation`` sets for this node and round; otherwise do nothing."""
    if node in federation.slow_nodes and (not federation.slow_rounds or server_round in federation.slow_rounds):
        time.sleep(federation.delay_seconds)
    if node in federation.crash_nodes and (not federation.crash_rounds or server_round in federation.crash_rounds):
        raise NodeCrash(f"edge node {node} crashed in round {server_round} (federation.crash_nodes)")


def train_locally(
    config: ExperimentConfig, node: int, server_round: int, global_weights: Weights, data_dir: str | None = None,
    cohort: Sequence[int] = (),
) -> NodeResult:
    """Run edge node ``node`` for one round starting from ``global_weights``.

    ``cohort`` (the round's nodes) matters only to attacks that know the coalition or the
    round. Raises :class:`NodeCrash` when the node is set to crash in this round.
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
    rows = node_partitions(config.data, config.federation, data_dir)[node]
    attack = config.attack.record
    malicious = attack is not None and node in config.malicious_nodes(server_round)
    train_loss = None
    if malicious and not attack.trains:
        local = global_weights
    else:
        local, train_loss = fit(config, node, server_round, global_weights, data_dir)
    # an attack on data that also acts on the update (a boosted backdoor) starts with its data
    if malicious and attack.acts_on_update and (not attack.acts_on_data
                                                or holds_poisoned_data(config, node, server_round)):
        local = poison(config, attack, node, server_round, global_weights, local, cohort, data_dir)
    return NodeResult(node, local, len(rows), malicious, train_loss)


def fit(
    config: ExperimentConfig, node: int, server_round: int, global_weights: Weights, data_dir: str | None = None,
) -> tuple[Weights, float]:
    """Node ``node``'s local training from ``global_weights`` on the data it holds this round
    (:func:`node_data`: poisoned, for a malicious node of an attack on data): its new weights
    and last loss. Deterministic from ``(train.seed, server_round, node)``.
    """
    attack = config.attack.record
    key = None
    if attack is not None and grants(attack.threat_model, "colluding"):
        # Attackers that know others' updates train them too: each process trains a node's
        # round once, whether for the node itself or for an attacker that knows it.
        key = (config.data, config.models, config.train, config.federation, config.attack, node, server_round,
               weights_digest(global_weights), data_dir)
        if key in _FITS:
            return _FITS[key]
    data = load_data(config.data, data_dir)
    features, labels = node_data(config, node, server_round, data_dir)
    result = train_weights(
        config.models, config.train, global_weights, features, labels, data.num_classes,
        epochs=config.federation.local_epochs, seed=_seed(config.train.seed, server_round, node),
    )
    if key is not None:
        _FITS[key] = result
        while len(_FITS) > 2 * config.federation.num_nodes:  # this round's and the last one's
            _FITS.pop(next(iter(_FITS)))
    return result


_FITS: dict[tuple, tuple[Weights, float]] = {}  # training results shared with colluding attackers


def poison(
    config: ExperimentConfig, attack: Attack, node: int, server_round: int, global_weights: Weights,
    local: Weights, cohort: Sequence[int] = (), data_dir: str | None = None,
) -> Weights:
    """``global + attack(local - global)``, on the flattened update, with what the attack knows."""
    flat_global, shapes = flatten(global_weights)
    own = flatten(local)[0] - flat_global

    coalition = everyone = benign = None
    if grants(attack.threat_model, "colluding"):
        omniscient = grants(attack.threat_model, "omniscient")
        bad = set(config.malicious_nodes(server_round).tolist()) | {node}
        known = sorted(set(cohort if omniscient else bad & set(cohort)) | {node})
        deltas = {
            other: own if other == node
            else flatten(fit(config, other, server_round, global_weights, data_dir)[0])[0] - flat_global
            for other in known
        }
        coalition = np.stack([deltas[i] for i in known if i in bad])
        everyone = np.stack([deltas[i] for i in known]) if omniscient else None
        if omniscient:
            rows = [deltas[i] for i in known if i not in bad]
            benign = np.stack(rows) if rows else np.empty((0, own.size), own.dtype)
    defence = config.defence_view() if attack.threat_model == "adaptive" else None
    rng = np.random.default_rng(_seed(config.attack.seed, server_round, node))
    attacked = attack.poison_update(AttackInput(own, rng, coalition=coalition, honest=everyone, benign=benign,
                                                num_nodes=len(cohort) if coalition is not None else None,
                                                defence=defence))
    return unflatten((flat_global + attacked).astype(np.float32), shapes)


def _seed(base: int, server_round: int, node: int) -> int:
    return int(np.random.SeedSequence([base, server_round, node]).generate_state(1)[0])


# --- the closed loop (issue 14): the IoT devices behind the edge nodes and their traffic ------

_LOOP_DRAW = 0x6C6F6F70  # entropy word of the loop's draws ("loop")


def _loop(config: ExperimentConfig) -> LoopConfig:
    if config.loop is None:
        raise ConfigError("the experiment has no [loop] section")
    return config.loop


def loop_attack_class(config: ExperimentConfig, data: PreparedData) -> int:
    """The class index of the compromised devices' attack flows: ``loop.attack_class`` by
    name, or the most frequent attack class of the held-out (validation) rows. A name the
    dataset does not have, or a class without held-out rows, is refused naming the key."""
    loop = _loop(config)
    counts = np.bincount(data.y_val, minlength=data.num_classes)
    attacks = [c for c in range(data.num_classes) if c != data.normal_class]
    if not loop.attack_class:
        if not attacks or counts[attacks].max() == 0:
            raise ConfigError(f"[loop]: {data.dataset}'s validation split holds no attack flows to send")
        return max(attacks, key=lambda c: counts[c])
    names = list(data.class_names)
    if loop.attack_class not in names or names.index(loop.attack_class) == data.normal_class:
        raise ConfigError(f"loop.attack_class = {loop.attack_class!r} is not an attack class of {data.dataset}; "
                          f"expected one of {[names[c] for c in attacks]}")
    index = names.index(loop.attack_class)
    if counts[index] == 0:
        raise ConfigError(f"loop.attack_class = {loop.attack_class!r}: {data.dataset}'s validation split holds "
                          f"no rows of it to send")
    return index


@lru_cache(maxsize=4)
def loop_devices(config: ExperimentConfig, data_dir: str | None = None) -> tuple[Device, ...]:
    """Every device of the loop, device ``d`` behind edge node ``d // loop.devices_per_node``;
    the compromised ones drawn from ``loop.seed`` (the same on every process)."""
    loop = _loop(config)
    attack_class = loop_attack_class(config, load_data(config.data, data_dir))
    rng = np.random.default_rng([loop.seed, _LOOP_DRAW])
    return tuple(assign_devices(config.federation.num_nodes, loop.devices_per_node, loop.compromised, attack_class,
                                loop.attack_rate, loop.start_seconds, rng))


@lru_cache(maxsize=16)
def node_traffic(config: ExperimentConfig, node: int, data_dir: str | None = None) -> Flows:
    """The flows of the devices behind edge node ``node`` over ``loop.duration_seconds``, in
    time order: rows of the validation split, each device's drawn from ``(loop.seed,
    device)`` alone, so the server, the node and an auditor draw the same traffic."""
    loop = _loop(config)
    data = load_data(config.data, data_dir)
    pools = class_pools(data.y_val)
    normal = 0 if data.normal_class is None else data.normal_class
    return Flows.concat([
        device_flows(d, pools, normal, loop.flows_per_second, loop.duration_seconds,
                     np.random.default_rng([loop.seed, _LOOP_DRAW, d.index]))
        for d in loop_devices(config, data_dir) if d.edge_node == node
    ])


@dataclass(frozen=True)
class Detection:
    """An edge node's answer to one slice of its devices' traffic."""

    outcome: EdgeOutcome
    signed: list[bytes]  # one signed alert transaction per alert, in order


def attack_verdicts(config: ExperimentConfig, weights: Weights, data_dir: str | None = None):
    """The edge's detector on held-out rows: the global model ``weights`` says "attack" (its
    most probable class is not the normal one) for each validation row id given."""
    from bflsim.models import detector

    data = load_data(config.data, data_dir)
    classify = detector(config.models, config.train, weights, data.num_features, data.num_classes)
    normal = 0 if data.normal_class is None else data.normal_class

    def verdicts(rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.argmax(classify(data.x_val[rows]), axis=1) != normal

    return verdicts


def detect(
    config: ExperimentConfig, node: int, weights: Weights, start: float, end: float, windows: dict,
    quarantined: Sequence[int], ctx: TxContext | None, data_dir: str | None = None,
    identity: NodeIdentity | None = None, alerted: dict[int, int] | None = None,
) -> Detection:
    """Score the flows of ``node``'s devices in ``[start, end)`` seconds with the global model
    ``weights``, carrying on from ``windows``; drop those of ``quarantined`` devices; sign an
    ``alert`` for every window that crossed ``loop.threshold`` (the k-th with ``ctx``'s
    nonce + k).

    ``alerted``: the alerts the registry has counted per device so far. Once a device has
    the ``loop.alerts_to_quarantine`` alerts that quarantine it (counting this slice's), the
    node stops scoring it for the rest of the slice: a further alert could only revert.
    """
    loop = _loop(config)
    traffic = node_traffic(config, node, data_dir)
    part = traffic.take((traffic.time >= start) & (traffic.time < end))
    counts = dict(alerted or {})

    def enough(alert) -> list[int]:
        counts[alert.device] = counts.get(alert.device, 0) + 1
        return [alert.device] if counts[alert.device] >= loop.alerts_to_quarantine else []

    verdicts = attack_verdicts(config, weights, data_dir)
    if node in loop.false_alert_nodes:  # a compromised edge node: every flow "is an attack"
        def verdicts(rows: NDArray[np.int64]) -> NDArray[np.bool_]:
            return np.ones(len(rows), dtype=bool)
    outcome = run_edge(node, part, verdicts, window=loop.window,
                       threshold=loop.threshold, micro_batch=loop.micro_batch, on_alert=enough, windows=windows,
                       quarantined=quarantined)
    signed = []
    if ctx is not None and outcome.alerts:
        key = identity or node_identities(config)[node]
        signed = [sign_alert_tx(key, replace(ctx, nonce=ctx.nonce + k), a.device, a.digest, a.attacks)
                  for k, a in enumerate(outcome.alerts)]
    return Detection(outcome, signed)
