"""Real-time detection at the edge (``bflsim bench --suite realtime``; issue 14, paper Table 6).

How fast one edge node scores its devices' flows with the federated CNN-LSTM, beside the
paper's 8 ms per sample:

- **latency**: one call of the detector (:func:`bflsim.models.detector`) on a micro-batch of
  1, 8, 64 or 512 held-out flows, p50 and p99 over many calls, and the flows per second it
  implies (:func:`time_detection`);
- **pipeline**: the whole edge loop (:func:`bflsim.traffic.run_edge`: micro-batches, the
  per-device windows, alerts) over a stream of devices' flows, in flows per second
  (:func:`time_pipeline`);
- **alert finality**: an edge node's ``alert`` transaction from signing to receipt, on the
  in-process py-evm chain, anvil mining one block per transaction, and anvil mining every
  2 s (the paper's PoA-like chain) (:func:`time_alert_finality`).

Timings are never asserted in tests (the machines are shared).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bflsim.bench import write_bench_csv
from bflsim.progress import Progress

if TYPE_CHECKING:
    from bflsim.ledger.web3_ledger import Web3Ledger

PAPER = {"inference_seconds_per_sample": 0.008}
PACKAGES = ("tensorflow-cpu", "keras", "numpy", "web3", "py-evm")
BATCHES = (1, 8, 64, 512)
RUN_DIGEST = b"\x52" * 32
NEVER = 2**32 - 1  # alerts per node of a rule no benchmark alert reaches: nothing is quarantined


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def time_detection(classify: Callable[[NDArray[np.float32]], NDArray], rows: NDArray[np.float32], batch: int,
                   calls: int, rng: np.random.Generator) -> list[float]:
    """Seconds of each of ``calls`` detector calls on ``batch`` flows drawn from ``rows``
    (after two untimed calls that trace the shape)."""
    for _ in range(2):
        classify(rows[:batch])
    seconds = []
    for _ in range(calls):
        sample = rows[rng.integers(0, len(rows), size=batch)]
        started = time.perf_counter()
        classify(sample)
        seconds.append(time.perf_counter() - started)
    return seconds


def time_pipeline(verdicts_of: Callable[[NDArray[np.int64]], NDArray[np.bool_]], labels: NDArray[np.integer],
                  normal_class: int, *, nodes_devices: int, duration: float, rate: float, batch: int,
                  window: int, threshold: int, seed: int = 0) -> tuple[float, int, int]:
    """One edge node's whole loop over ``nodes_devices`` devices (a fifth compromised, half
    their flows attacks from the start): (seconds, flows scored, alerts)."""
    from bflsim.traffic import Flows, assign_devices, class_pools, device_flows, run_edge

    rng = np.random.default_rng(seed)
    pools = class_pools(labels)
    attack_class = max((c for c in pools if c != normal_class), key=lambda c: len(pools[c]))
    devices = assign_devices(1, nodes_devices, max(1, nodes_devices // 5), attack_class, 0.5, 0.0, rng)
    flows = Flows.concat([device_flows(d, pools, normal_class, rate, duration, rng) for d in devices])
    started = time.perf_counter()
    outcome = run_edge(0, flows, verdicts_of, window=window, threshold=threshold, micro_batch=batch)
    return time.perf_counter() - started, outcome.scored, len(outcome.alerts)


def time_alert_finality(ledger: Web3Ledger, alerts: int, *, block_time: float | None = None,
                        seed: int = 0) -> list[float]:
    """Seconds from signing an edge node's ``alert`` to its receipt, one alert at a time, on
    a fresh registry (one node, one device, a rule no alert reaches). With ``block_time``
    each alert waits a uniform random part of a block first, so it meets the block clock at
    a random phase, as an alert raised by traffic would."""
    from bflsim.ledger import derive_identities, sign_alert_tx
    from bflsim.traffic import window_digest

    rng = np.random.default_rng(seed)
    ledger.deploy(max_rejections=0, run_digest=RUN_DIGEST)
    [node] = derive_identities(seed=1, num_nodes=1)
    ledger.enroll([node], fund_wei=10**18)
    ledger.set_quarantine_rule(NEVER, 1)
    ledger.register_devices([(0, 0)])
    seconds = []
    for k in range(alerts):
        if block_time:
            time.sleep(rng.uniform(0, block_time))
        started = time.perf_counter()
        raw = sign_alert_tx(node, ledger.tx_context(node.address), 0, window_digest(0, [k], [True]), 1)
        record = ledger.send_raw(raw, kind="alert")
        seconds.append(time.perf_counter() - started)
        if record.status != 1:
            raise RuntimeError(f"benchmark alert {k} reverted: {record.error}")
    return seconds


def realtime_rows(
    x: NDArray[np.float32], y: NDArray[np.integer], normal_class: int, classify: Callable, *, calls: int,
    batches: Sequence[int] = BATCHES, alerts: int = 20, anvil: bool = True, block_time: float = 2.0,
    data_note: str = "", progress: Progress | None = None,
) -> list[tuple]:
    """Every real-time benchmark on held-out flows ``(x, y)``; rows for :func:`write_bench_csv`."""
    from bflsim.ledger import AnvilNode, EmbeddedLedger, RpcLedger

    progress = progress or Progress(quiet=True)
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    for batch in batches:
        n = max(20, calls // max(1, batch // 8))
        seconds = time_detection(classify, x, batch, n, rng)
        p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
        progress.say(f"realtime bench: micro-batch {batch}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms per call")
        note = f"one detector call on {batch} held-out flow(s){data_note}, {n} calls"
        rows += [
            ("detection", f"batch_{batch}_p50_seconds", p50, "s", n, PAPER["inference_seconds_per_sample"] if batch == 1 else "", note),
            ("detection", f"batch_{batch}_p99_seconds", p99, "s", n, "", note),
            ("detection", f"batch_{batch}_flows_per_second", batch * n / sum(seconds), "flows/s", n, "",
             f"{batch} flows per call / mean call time"),
        ]

    def verdicts_of(rows_: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.argmax(classify(x[rows_]), axis=1) != normal_class

    for batch in (1, 64):
        seconds, scored, raised = time_pipeline(verdicts_of, y, normal_class, nodes_devices=10, duration=300.0,
                                                rate=2.0, batch=batch, window=20, threshold=10)
        progress.say(f"realtime bench: edge loop, micro-batch {batch}: {scored / seconds:,.0f} flows/s")
        note = (f"run_edge over 10 devices x 300 s x 2 flows/s ({scored} flows, {raised} alerts), "
                f"windows of 20, threshold 10, micro-batch {batch}")
        rows.append(("edge_loop", f"batch_{batch}_flows_per_second", scored / seconds, "flows/s", 1, "", note))

    chains: list[tuple[str, Callable[[], Web3Ledger] | None, float | None, str]] = [
        ("embedded", EmbeddedLedger, None, "embedded py-evm (in process, one block per tx)")]
    if anvil:
        chains += [("anvil_automine", None, None, "anvil over HTTP, automine (one block per tx)"),
                   (f"anvil_block_time_{block_time:g}s", None, block_time,
                    f"anvil --block-time {block_time:g} (PoA-like), sent at a random phase of the block")]
    for name, make, block, what in chains:
        progress.say(f"realtime bench: alert finality on {name}")
        if make is not None:
            seconds = time_alert_finality(make(), alerts)
        else:
            with AnvilNode(block_time=block) as node:
                seconds = time_alert_finality(RpcLedger(node.url), max(5, alerts // 4) if block else alerts,
                                              block_time=block)
        note = f"{what}: an edge node's alert, signed to receipt, {len(seconds)} alerts one at a time"
        rows += [("alert_finality", f"{name}_p50_seconds", percentile(seconds, 50), "s", len(seconds), "", note),
                 ("alert_finality", f"{name}_p99_seconds", percentile(seconds, 99), "s", len(seconds), "", note)]
    return rows


def run_realtime_bench(
    out_dir: str | Path, data_dir: str | Path | None = None, calls: int = 400, alerts: int = 20,
    anvil: bool = True, progress: Progress | None = None,
) -> Path:
    """The real-time benchmarks with the CNN-LSTM trained for two epochs on NSL-KDD's
    training split (stratified 70/15/15; 0.97 accuracy on the validation split), scoring
    flows of the validation split (held out); ``realtime.csv``."""
    from bflsim.bench.chain import _require_anvil
    from bflsim.config import DataConfig, ModelsConfig, TrainConfig
    from bflsim.data import prepare_data
    from bflsim.models import detector, import_tensorflow_quietly, initial_weights, train_weights

    progress = progress or Progress(quiet=True)
    if anvil:
        _require_anvil()  # before minutes of work, not after
    import_tensorflow_quietly()
    data = prepare_data(DataConfig(dataset="nsl-kdd"), data_dir)
    models, train = ModelsConfig(names=("cnn_lstm",)), TrainConfig(batch_size=256, learning_rate=1e-3, seed=0)
    weights = initial_weights(models, train, data.num_features, data.num_classes)
    weights, _ = train_weights(models, train, weights, data.x_train, data.y_train, data.num_classes, epochs=2, seed=0)
    classify = detector(models, train, weights, data.num_features, data.num_classes)
    accuracy = float(np.mean(np.argmax(classify(data.x_val), axis=1) == data.y_val))
    progress.say(f"realtime bench: CNN-LSTM after two epochs on the training split: accuracy {accuracy:.4f} "
                 f"on the {len(data.y_val)} held-out flows it scores")
    rows = realtime_rows(data.x_val, data.y_val, int(data.normal_class or 0), classify, calls=calls, alerts=alerts,
                         anvil=anvil, data_note=" (NSL-KDD validation split)", progress=progress)
    return write_bench_csv(out_dir, "realtime", rows, PACKAGES)
