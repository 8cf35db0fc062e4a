"""Blockchain micro-benchmarks (the paper's Table 6): ``bflsim bench --suite chain``.

Four groups, each a plain function testable on small inputs, joined by
:func:`run_chain_bench`:

- **registration**: what an edge node spends to register its data batch (canonical sha256
  digest + an offline-signed ``registerData`` transaction; paper: 0.15 s per batch) and a
  model update (``weights_digest`` of the CNN-LSTM's weights + a signed ``submitUpdate``):
  :func:`time_data_registration`, :func:`time_update_registration`;
- **finality**: ``submitUpdate`` from send to receipt on three chains: the in-process py-evm
  chain, anvil mining one block per transaction, and anvil mining every 2 s, which emulates
  the paper's PoA chain (paper: 3.8 s): :func:`time_finality`, :func:`time_block_finality`;
- **aggregation**: Krum on a (10, d) matrix, d the CNN-LSTM's parameter count on NSL-KDD
  (paper: 1.5 s), beside Multi-Krum and FedAvg: :func:`time_aggregation`;
- **gas**: the registry's gas per operation on the py-evm chain (every function: deploy,
  setAggregator, registerNodes, registerData, openRound, submitUpdate against its 60,000
  budget, commitRound, the two-step ownership transfer): :func:`measure_gas`.

Timings are medians; they are never asserted in tests (the machines are shared).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bflsim.aggregators import AGGREGATORS, Rule
from bflsim.bench import write_bench_csv
from bflsim.config import CnnLstmConfig, DataConfig
from bflsim.hashing import data_digest, weights_digest
from bflsim.ledger import (
    NodeIdentity,
    TxContext,
    TxRecord,
    derive_identities,
    sign_data_tx,
    sign_update_tx,
)
from bflsim.ledger.anvil import find_anvil
from bflsim.progress import Progress

if TYPE_CHECKING:
    from bflsim.ledger import Ledger
    from bflsim.ledger.web3_ledger import Web3Ledger

__all__ = [
    "PAPER",
    "AnvilNotFound",
    "chain_rows",
    "cnn_lstm_shapes",
    "cnn_lstm_weights",
    "enroll_federation",
    "measure_gas",
    "run_chain_bench",
    "time_aggregation",
    "time_block_finality",
    "time_data_registration",
    "time_finality",
    "time_update_registration",
]

PAPER = {
    "hash_and_sign_seconds_per_batch": 0.15,
    "finality_seconds": 3.8,
    "krum_seconds": 1.5,
}
PACKAGES = ("web3", "eth-tester", "py-evm", "eth-account", "numpy")
GAS_BUDGET_SUBMIT_UPDATE = 60_000
MAX_REJECTIONS = 2  # the commit with 2 rejections then rejects, but does not revoke
NUM_MALICIOUS = 2
GLOBAL_DIGEST = b"\x10" * 32  # every round opens from it and commits it (rounds chain on chain)
SCORES_DIGEST = b"\x5c" * 32
EVALUATION_DIGEST = b"\xe7" * 32
RUN_DIGEST = hashlib.sha256(b"bflsim/bench/run").digest()
NUM_SAMPLES = 1000
NODE_SEED = 0
FUND_WEI = 10**18

# Nodes sign offline: chain, contract and fees only change the signed bytes, not the work.
_OFFLINE_CONTEXT = TxContext(
    chain_id=31337,
    contract_address="0x" + "42" * 20,
    nonce=0,
    max_fee_per_gas=2 * 10**9,
    max_priority_fee_per_gas=10**9,
    run_digest=RUN_DIGEST,
)


class AnvilNotFound(FileNotFoundError):
    """The anvil rows were asked for, and no anvil binary is installed."""


# ---- registration: hash + sign on the edge node ----------------------------------------


def _time_steps(
    steps: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Run the steps in order ``repeats`` times (after one untimed warm-up); seconds per step
    and for all steps together, keyed by step name and ``"total"``."""
    for step in steps.values():
        step()
    seconds: dict[str, list[float]] = {name: [] for name in [*steps, "total"]}
    for _ in range(repeats):
        total = 0.0
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            elapsed = time.perf_counter() - t0
            seconds[name].append(elapsed)
            total += elapsed
        seconds["total"].append(total)
    return seconds


def time_data_registration(
    x: NDArray, repeats: int, identity: NodeIdentity | None = None
) -> dict[str, list[float]]:
    """Seconds to register one data batch: ``data_digest`` then a signed ``registerData``.

    Returns ``{"hash": [...], "sign": [...], "total": [...]}``, one value per repeat.
    """
    identity = identity or derive_identities(NODE_SEED, 1)[0]
    timestamp = int(time.time())
    y = np.zeros(len(x), dtype=np.int64)  # labels: the digest covers them (data digest v2)
    digest = data_digest(x, y, timestamp, identity.index)
    return _time_steps(
        {
            "hash": lambda: data_digest(x, y, timestamp, identity.index),
            "sign": lambda: sign_data_tx(identity, _OFFLINE_CONTEXT, digest, timestamp, len(y)),
        },
        repeats,
    )


def time_update_registration(
    weights: Sequence[NDArray], num_samples: int, repeats: int,
    identity: NodeIdentity | None = None,
) -> dict[str, list[float]]:
    """Seconds to register one model update: ``weights_digest`` then a signed
    ``submitUpdate``; keyed like :func:`time_data_registration`."""
    identity = identity or derive_identities(NODE_SEED, 1)[0]
    digest = weights_digest(weights)
    return _time_steps(
        {
            "hash": lambda: weights_digest(weights),
            "sign": lambda: sign_update_tx(identity, _OFFLINE_CONTEXT, 1, digest, num_samples),
        },
        repeats,
    )


def cnn_lstm_shapes(
    num_features: int, num_classes: int, config: CnnLstmConfig | None = None
) -> list[tuple[int, ...]]:
    """Shapes of ``build_cnn_lstm(...).get_weights()``, without building the Keras model.

    Conv1D kernel and bias, LSTM kernel, recurrent kernel and bias (four gates), Dense
    kernel and bias; pooling shortens the sequence but adds no weights, so ``num_features``
    does not enter.
    """
    cfg = config or CnnLstmConfig()
    filters, units = cfg.conv_filters, cfg.lstm_units
    return [
        (cfg.kernel_size, 1, filters), (filters,),
        (filters, 4 * units), (units, 4 * units), (4 * units,),
        (units, num_classes), (num_classes,),
    ]


def cnn_lstm_weights(num_features: int, num_classes: int, seed: int = 0) -> list[NDArray]:
    """float32 arrays of the CNN-LSTM's weight shapes (standard normal values)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32)
            for shape in cnn_lstm_shapes(num_features, num_classes)]


# ---- the chain: setup, finality, gas ---------------------------------------------------


def _update_digest(server_round: int, index: int) -> bytes:
    """A stand-in update digest: the same bytes (so the same calldata gas) on every chain."""
    return hashlib.sha256(f"bflsim/bench/update/{server_round}/{index}".encode()).digest()


def _sign_updates(
    ledger: Ledger, identities: Sequence[NodeIdentity], server_round: int, num_samples: int
) -> list[bytes]:
    contexts = ledger.tx_contexts({n.index: n.address for n in identities})
    return [
        sign_update_tx(n, contexts[n.index], server_round, _update_digest(server_round, n.index),
                       num_samples)
        for n in identities
    ]


def enroll_federation(
    ledger: Ledger, num_nodes: int, *, set_balance: bool = False, num_samples: int = NUM_SAMPLES
) -> list[NodeIdentity]:
    """Deploy a fresh registry, fund and register nodes 0..num_nodes-1, and have each register
    a data batch of ``num_samples`` rows (the count its updates must claim).

    ``set_balance`` funds the nodes with anvil's ``anvil_setBalance`` instead of one transfer
    each (with 2 s blocks, ten transfers would take 20 s of setup).
    """
    ledger.deploy(max_rejections=MAX_REJECTIONS, run_digest=RUN_DIGEST)
    identities = derive_identities(NODE_SEED, num_nodes)
    if set_balance:
        w3 = ledger.w3  # type: ignore[attr-defined]
        for node in identities:
            w3.provider.make_request("anvil_setBalance", [node.address, hex(FUND_WEI)])
    ledger.enroll(identities, fund_wei=FUND_WEI)
    contexts = ledger.tx_contexts({n.index: n.address for n in identities})
    x = np.arange(10 * num_samples, dtype=np.float32).reshape(num_samples, 10)
    y = np.zeros(num_samples, np.int64)
    raws = [sign_data_tx(n, contexts[n.index], data_digest(x, y, 1_700_000_000, n.index), 1_700_000_000,
                         num_samples) for n in identities]
    ledger.send_raw_many(raws, kind="register_data")
    return identities


def time_finality(
    ledger: Ledger, num_nodes: int, rounds: int, num_samples: int = NUM_SAMPLES
) -> list[TxRecord]:
    """``submitUpdate`` latency, send to receipt, one transaction at a time.

    Deploys a registry, enrolls ``num_nodes`` nodes, then for each of ``rounds`` rounds
    opens it with every node in the cohort, relays each node's signed update and waits for
    its receipt before sending the next, and commits the round. Returns the submit records,
    round by round in node order.
    """
    identities = enroll_federation(ledger, num_nodes, num_samples=num_samples)
    records = []
    for server_round in range(1, rounds + 1):
        ledger.open_round(server_round, GLOBAL_DIGEST, range(num_nodes))
        for raw in _sign_updates(ledger, identities, server_round, num_samples):
            records.append(ledger.send_raw(raw, kind="submit_update"))
        ledger.commit_round(server_round, GLOBAL_DIGEST, range(num_nodes), SCORES_DIGEST, EVALUATION_DIGEST)
    return records


def time_block_finality(
    ledger: Web3Ledger,
    num_nodes: int,
    singles: int,
    block_time: float,
    num_samples: int = NUM_SAMPLES,
    seed: int = 0,
) -> tuple[list[TxRecord], list[TxRecord]]:
    """``submitUpdate`` latency on a chain that mines every ``block_time`` seconds (anvil).

    Round 1: every node's update relayed together (``send_raw_many``: one block). Round 2:
    ``singles`` nodes' updates one at a time, each awaited. Before each send the caller
    waits a uniform random fraction of a block, so a transaction meets the block clock at a
    random phase, as a node finishing local training would (sent right after a receipt, it
    would wait almost a whole block every time). Returns (single records, round-1 records).
    """
    rng = np.random.default_rng(seed)
    identities = enroll_federation(ledger, num_nodes, set_balance=True, num_samples=num_samples)

    ledger.open_round(1, GLOBAL_DIGEST, range(num_nodes))
    raws = _sign_updates(ledger, identities, 1, num_samples)
    time.sleep(rng.uniform(0, block_time))
    together = ledger.send_raw_many(raws, kind="submit_update")
    ledger.commit_round(1, GLOBAL_DIGEST, range(num_nodes), SCORES_DIGEST, EVALUATION_DIGEST)

    ledger.open_round(2, GLOBAL_DIGEST, range(num_nodes))
    single = []
    for node in identities[:singles]:
        (raw,) = _sign_updates(ledger, [node], 2, num_samples)
        time.sleep(rng.uniform(0, block_time))
        single.append(ledger.send_raw(raw, kind="submit_update"))
    return single, together


def measure_gas(ledger: Ledger, num_nodes: int, num_samples: int = NUM_SAMPLES) -> dict[str, list[int]]:
    """Gas used by each registry operation, from the ledger's transaction records.

    On a fresh ledger: deploy (and, where the ledger has a separate aggregator key, fund it
    and ``setAggregator``); enroll ``num_nodes`` nodes (one ``registerNodes``); every node
    registers its data (node 0's is the first write of its digest), node 0 once more
    (overwriting); round 1 with every node submitting, committed with all accepted; round 2
    likewise, committed with the last two rejected (their first rejection: counters go
    0 -> 1); then a two-step ownership transfer to node 0's key (``transferOwnership``,
    ``acceptOwnership`` signed by it). Returns operation -> gas values (one per transaction;
    ``submit_update`` has round 1's ``num_nodes`` submissions in node order).
    """
    if num_nodes < 3:
        raise ValueError(
            f"measure_gas needs num_nodes >= 3 (two rejected, one accepted); got {num_nodes}"
        )
    identities = enroll_federation(ledger, num_nodes, num_samples=num_samples)
    node = identities[0]
    x = np.arange(1000, dtype=np.float32).reshape(100, 10)
    raw = sign_data_tx(node, ledger.tx_context(node.address),
                       data_digest(x, np.zeros(len(x), np.int64), 1_700_000_060, node.index), 1_700_000_060,
                       num_samples)
    ledger.send_raw(raw, kind="register_data_again")

    everyone = range(num_nodes)
    for server_round, accepted in ((1, everyone), (2, range(num_nodes - 2))):
        ledger.open_round(server_round, GLOBAL_DIGEST, everyone)
        for raw in _sign_updates(ledger, identities, server_round, num_samples):
            ledger.send_raw(raw, kind=f"submit_update_{server_round}")
        ledger.commit_round(server_round, GLOBAL_DIGEST, accepted, SCORES_DIGEST, EVALUATION_DIGEST)
    ledger.transfer_ownership(node.address)  # type: ignore[attr-defined]
    ledger.send_raw(ledger.sign_call(node, "acceptOwnership"), kind="accept_ownership")  # type: ignore[attr-defined]

    failed = [r for r in ledger.records if r.status != 1]
    if failed:
        raise RuntimeError(f"gas measurement: transactions failed: {failed}")
    gas: dict[str, list[int]] = {}
    for record in ledger.records:
        gas.setdefault(record.kind, []).append(record.gas_used)
    return {
        "deploy": gas["deploy"],
        **({"set_aggregator": gas["set_aggregator"]} if "set_aggregator" in gas else {}),
        "register_nodes": gas["register_nodes"],
        "register_data_first": gas["register_data"][:1],
        "register_data_second": gas["register_data_again"],
        "open_round": gas["open_round"][:1],
        "submit_update": gas["submit_update_1"],
        "commit_round_all_accepted": gas["commit_round"][:1],
        "commit_round_2_rejected": gas["commit_round"][1:],
        "transfer_ownership": gas["transfer_ownership"],
        "accept_ownership": gas["accept_ownership"],
    }


# ---- aggregation -----------------------------------------------------------------------


def time_aggregation(
    num_nodes: int, dim: int, repeats: int, num_malicious: int = NUM_MALICIOUS, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of krum, multikrum (m = n - f) and fedavg on a (num_nodes, dim)
    float32 matrix of standard normal values (one untimed warm-up each)."""
    rng = np.random.default_rng(seed)
    updates = rng.standard_normal((num_nodes, dim), dtype=np.float32)
    num_samples = np.full(num_nodes, 1000)
    seconds: dict[str, list[float]] = {}
    for rule in ("krum", "multikrum", "fedavg"):
        def run(rule: type[Rule] = AGGREGATORS[rule]) -> object:
            return rule(num_malicious=num_malicious)(updates, num_samples)

        seconds[rule] = _time_steps({rule: run}, repeats)[rule]
    return seconds


# ---- rows and the CSV ------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


def _registration_rows(
    benchmark: str, unit_name: str, seconds: dict[str, list[float]], repeats: int,
    paper: float | str, what: str,
) -> list[tuple]:
    return [
        (benchmark, f"hash_and_sign_seconds_per_{unit_name}", _median(seconds["total"]), "s",
         repeats, paper, f"{what}; median of {repeats} after one untimed warm-up"),
        (benchmark, f"hash_seconds_per_{unit_name}", _median(seconds["hash"]), "s", repeats, "",
         f"the hashing alone; median of {repeats}"),
        (benchmark, f"sign_seconds_per_{unit_name}", _median(seconds["sign"]), "s", repeats, "",
         f"the signing alone (eth-account, offline); median of {repeats}"),
    ]


def _finality_row(
    chain: str, records: Sequence[TxRecord], paper: float | str, what: str,
    quantity: str = "seconds_per_update_tx",
) -> tuple:
    seconds = [r.seconds for r in records]
    note = (f"{what}; median of {len(records)} "
            f"(min {min(seconds):.3g} s, max {max(seconds):.3g} s)")
    return (f"finality_{chain}", quantity, _median(seconds), "s", len(records), paper, note)


def _gas_rows(
    gas: dict[str, list[int]], num_nodes: int, anvil_submit: list[int] | None
) -> list[tuple]:
    def one(name: str, note: str) -> tuple:
        return ("gas", name, gas[name][0], "gas", 1, "", note)

    submit = gas["submit_update"]
    if anvil_submit is None:
        cross_check = "anvil not run"
    elif anvil_submit == submit:
        cross_check = "anvil automine: identical for every node"
    else:
        cross_check = f"anvil automine DIFFERS: {anvil_submit}"
    register_nodes = gas["register_nodes"][0]
    submit_note = (f"submitUpdate relayed for each of {num_nodes} nodes, max (min {min(submit)}); "
                   f"target <= {GAS_BUDGET_SUBMIT_UPDATE:,}; {cross_check}")
    return [
        one("deploy", f"FederatedRegistry creation (max_rejections={MAX_REJECTIONS})"),
        one("register_nodes", f"registerNodes of {num_nodes} nodes in one transaction"),
        ("gas", "register_nodes_per_node", register_nodes / num_nodes, "gas", 1, "",
         f"registerNodes of {num_nodes} nodes / {num_nodes} (base cost shared)"),
        one("register_data_first", "registerData, a node's first digest (zero -> nonzero slot)"),
        one("register_data_second", "registerData, the same node again (overwrites its digest)"),
        one("open_round", f"openRound with all {num_nodes} nodes in the cohort"),
        ("gas", "submit_update", max(submit), "gas", len(submit), GAS_BUDGET_SUBMIT_UPDATE,
         submit_note),
        one("commit_round_all_accepted", f"commitRound, {num_nodes} submitted, all accepted"),
        one("commit_round_2_rejected",
            f"commitRound, {num_nodes} submitted, 2 rejected "
            f"(first rejection each, no revocation)"),
        *([one("set_aggregator", "setAggregator (the separate aggregator key, at deploy)")]
          if "set_aggregator" in gas else []),
        one("transfer_ownership", "transferOwnership (step one of two)"),
        one("accept_ownership", "acceptOwnership by the new owner (step two)"),
    ]


def _require_anvil() -> None:
    if find_anvil() is None:
        raise AnvilNotFound(
            "anvil not found (the finality rows need it): run "
            "`npm ci --prefix contracts --ignore-scripts`, or set $BFLSIM_ANVIL, or skip the "
            "anvil rows (anvil=False, --no-anvil)"
        )


def chain_rows(
    x_node: NDArray,
    num_classes: int,
    *,
    repeats: int = 5,
    num_nodes: int = 10,
    anvil: bool = True,
    block_time: float = 2.0,
    data_note: str = "",
    progress: Progress | None = None,
) -> list[tuple]:
    """Every benchmark on one node's data batch ``x_node``; rows for :func:`write_bench_csv`.

    The model update is the CNN-LSTM's weights for ``x_node.shape[1]`` features and
    ``num_classes`` classes. With ``anvil`` the finality rows include anvil mining one block
    per transaction and anvil mining every ``block_time`` seconds.
    """
    from bflsim.ledger import AnvilNode, EmbeddedLedger, RpcLedger

    progress = progress or Progress(quiet=True)
    if anvil:
        _require_anvil()
    num_rows, num_features = x_node.shape
    rows: list[tuple] = []

    progress.say(f"chain bench: hash + sign a data batch of {num_rows} x {num_features}")
    seconds = time_data_registration(x_node, repeats)
    megabytes = x_node.nbytes / 1e6
    rows += _registration_rows(
        "data_registration", "batch", seconds, repeats, PAPER["hash_and_sign_seconds_per_batch"],
        f"data_digest (sha256, canonical form) of {num_rows} rows x {num_features} "
        f"{x_node.dtype} ({megabytes:.2f} MB){data_note} + signing a registerData transaction",
    )

    weights = cnn_lstm_weights(num_features, num_classes)
    num_params = sum(w.size for w in weights)
    seconds = time_update_registration(weights, num_rows, repeats)
    rows += _registration_rows(
        "update_registration", "update", seconds, repeats, "",
        f"weights_digest of the CNN-LSTM's {len(weights)} float32 arrays ({num_params} "
        f"parameters: {num_features} features, {num_classes} classes) + signing a "
        f"submitUpdate transaction",
    )

    progress.say(f"chain bench: finality on embedded py-evm, {num_nodes} nodes x {repeats} rounds")
    one_at_a_time = (f"submitUpdate of each of {num_nodes} nodes x {repeats} rounds, sent one "
                     f"at a time, send to receipt")
    records = time_finality(EmbeddedLedger(), num_nodes, repeats)
    rows.append(_finality_row("embedded", records, "",
                              f"embedded py-evm (in process, one block per tx): {one_at_a_time}"))

    anvil_submit = None
    if anvil:
        progress.say("chain bench: finality on anvil, automine")
        with AnvilNode() as node:
            records = time_finality(RpcLedger(node.url), num_nodes, repeats)
        anvil_submit = [r.gas_used for r in records[:num_nodes]]
        rows.append(_finality_row("anvil_automine", records, "",
                                  f"anvil over HTTP, automine (one block per tx): {one_at_a_time}"))

        singles = min(repeats, num_nodes)  # each costs one block interval of wall time
        progress.say(f"chain bench: finality on anvil, a block every {block_time:g} s")
        with AnvilNode(block_time=block_time) as node:
            single, together = time_block_finality(RpcLedger(node.url), num_nodes, singles,
                                                   block_time)
        chain = f"anvil_block_time_{block_time:g}s"
        blocks = len({r.block for r in together})
        rows.append(_finality_row(
            chain, together, PAPER["finality_seconds"],
            f"anvil --block-time {block_time:g} (PoA-like): one round's {num_nodes} submitUpdate "
            f"relayed together (send_raw_many; mined in {blocks} block(s)) at one random phase "
            f"of the block interval, send to receipt",
        ))
        rows.append(_finality_row(
            chain, single, PAPER["finality_seconds"],
            f"anvil --block-time {block_time:g}: {singles} single submitUpdate, each sent alone "
            f"at a random phase of the block interval and awaited",
            quantity="single_tx_seconds",
        ))

    num_malicious = min(NUM_MALICIOUS, max(0, (num_nodes - 3) // 2))  # Krum: n > 2f + 2
    progress.say(f"chain bench: aggregation of {num_nodes} x {num_params}")
    seconds = time_aggregation(num_nodes, num_params, repeats, num_malicious)
    for rule, paper, what in (
        ("krum", PAPER["krum_seconds"], f"f={num_malicious}"),
        ("multikrum", "", f"f={num_malicious}, m=n-f={num_nodes - num_malicious}"),
        ("fedavg", "", "sample-weighted mean"),
    ):
        note = (f"{AGGREGATORS[rule].label} on a ({num_nodes}, {num_params}) float32 matrix (the "
                f"CNN-LSTM's parameter count), {what}; median of {repeats}")
        rows.append(("aggregation", f"{rule}_seconds", _median(seconds[rule]), "s", repeats,
                     paper, note))

    progress.say("chain bench: gas per operation on embedded py-evm")
    gas = measure_gas(EmbeddedLedger(), num_nodes)
    rows += _gas_rows(gas, num_nodes, anvil_submit)
    return rows


def run_chain_bench(
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    repeats: int = 5,
    num_nodes: int = 10,
    progress: Progress | None = None,
    anvil: bool = True,
) -> Path:
    """The chain benchmarks on node 0's IID share of NSL-KDD; return ``<out_dir>/chain.csv``.

    The data batch is node 0's share of ``num_nodes`` (IID, seed 0) of NSL-KDD's training
    split (stratified 70/15/15); ``data_dir`` defaults to ``$BFLSIM_DATA_DIR``.
    ``anvil=False`` leaves out the anvil finality rows; with ``anvil=True`` a missing anvil
    raises :class:`AnvilNotFound` before anything runs.
    """
    from bflsim.data import partition, prepare_data

    progress = progress or Progress(quiet=True)
    if anvil:
        _require_anvil()  # before minutes of work, not after
    data = prepare_data(DataConfig(dataset="nsl-kdd"), data_dir)
    node = partition(data.y_train, num_nodes, "iid", seed=0)[0]
    rows = chain_rows(
        data.x_train[node], data.num_classes, repeats=repeats, num_nodes=num_nodes, anvil=anvil,
        data_note=f" (NSL-KDD, node 0 of {num_nodes}, IID)", progress=progress,
    )
    return write_bench_csv(out_dir, "chain", rows, PACKAGES)
