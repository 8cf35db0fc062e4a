"""Speed benchmarks, written as CSV (never asserted in tests: the machines are shared).

Centralized CNN-LSTM costs on one edge node's share of NSL-KDD: the training split of the
stratified 70/15/15 protocol, dealt IID over 10 nodes, and node 0's tenth trained with the
paper's model. It reports training seconds per epoch (the first epoch, which includes
graph tracing, apart from the later ones) and inference seconds per sample, batched and
one sample at a time, beside the paper's 4.2 s per epoch and 8 ms per sample.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from bflsim.config import DataConfig, ModelsConfig, TrainConfig
from bflsim.data import partition, prepare_data
from bflsim.models import make_classifier
from bflsim.progress import Progress
from bflsim.results import package_versions, utc_now

PAPER = {"train_seconds_per_epoch": 4.2, "inference_seconds_per_sample": 0.008}
BENCH_COLUMNS = ("benchmark", "quantity", "value", "unit", "repeats", "paper_value", "note")


def write_bench_csv(out_dir: str | Path, name: str, rows: list[tuple], packages: tuple[str, ...]) -> Path:
    """``<out_dir>/<name>.csv`` in :data:`BENCH_COLUMNS`, and when and with what it was measured."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(BENCH_COLUMNS)
        for row in rows:
            writer.writerow([row[0], row[1], f"{row[2]:.6g}", *row[3:]])
    (out_dir / f"{name}.meta.txt").write_text(
        f"measured {utc_now()} on {os.cpu_count()} cores with {package_versions(packages)}\n"
    )
    return path


def run_centralized_bench(
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    repeats: int = 3,
    num_nodes: int = 10,
    epochs: int = 5,
    progress: Progress | None = None,
) -> Path:
    """Time CNN-LSTM training and inference on one node's tenth of NSL-KDD; return the CSV."""
    progress = progress or Progress(quiet=True)
    data = prepare_data(DataConfig(dataset="nsl-kdd"), data_dir)
    node = partition(data.y_train, num_nodes, "iid", seed=0)[0]
    x, y = data.x_train[node], data.y_train[node]
    train = TrainConfig(epochs=1, batch_size=256, learning_rate=1e-3, seed=0)
    progress.say(f"bench: CNN-LSTM on node 0 of {num_nodes}: {len(y)} rows x {data.num_features} features")

    first_epoch, later_epochs = [], []
    for _ in range(repeats):
        model = make_classifier("cnn_lstm", data.num_features, data.num_classes, ModelsConfig(), train)
        keras_model = model.model
        t0 = time.perf_counter()
        keras_model.fit(x, y, epochs=1, batch_size=train.batch_size, verbose=0)
        first_epoch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        keras_model.fit(x, y, epochs=epochs, batch_size=train.batch_size, verbose=0)
        later_epochs.append((time.perf_counter() - t0) / epochs)
    progress.say(f"bench: epoch {np.median(later_epochs):.2f} s (first, with tracing: {np.median(first_epoch):.2f} s)")

    x_test = data.x_test
    keras_model.predict(x_test[:1024], batch_size=1024, verbose=0)  # trace once
    keras_model.predict_on_batch(x_test[:1])
    batched, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        keras_model.predict(x_test, batch_size=1024, verbose=0)
        batched.append((time.perf_counter() - t0) / len(x_test))
        sample = x_test[:200]
        t0 = time.perf_counter()
        for row in sample:
            keras_model.predict_on_batch(row[None, :])
        single.append((time.perf_counter() - t0) / len(sample))
    progress.say(f"bench: inference {np.median(batched) * 1e6:.1f} us/sample batched, {np.median(single) * 1e3:.2f} ms one at a time")

    rows = [
        ("cnn_lstm_train", "train_seconds_per_epoch", np.median(later_epochs), "s", repeats,
         PAPER["train_seconds_per_epoch"], f"{len(y)} rows (node 0 of {num_nodes}, IID), batch 256, median of epochs 2-{epochs + 1}"),
        ("cnn_lstm_train", "first_epoch_seconds", np.median(first_epoch), "s", repeats, "",
         "first epoch of a fresh model, includes graph tracing"),
        ("cnn_lstm_inference", "inference_seconds_per_sample", np.median(batched), "s", repeats,
         PAPER["inference_seconds_per_sample"], f"model.predict over {len(x_test)} test rows, batch 1024"),
        ("cnn_lstm_inference", "single_sample_latency_seconds", np.median(single), "s", repeats, "",
         "one row per call (predict_on_batch, traced), 200 rows"),
    ]
    return write_bench_csv(out_dir, "centralized", rows, ("tensorflow-cpu", "keras", "numpy"))


def _env(data_dir: str | Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if data_dir:
        env["BFLSIM_DATA_DIR"] = str(data_dir)
    return env


def _bflsim_run(experiment: str | Path, out_dir: Path, env: dict[str, str], *sets: str) -> tuple[Path, float]:
    """``bflsim run EXPERIMENT`` as a fresh process (``--set`` each of ``sets``); its run folder
    and wall seconds. A failed run raises with the end of its stderr."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "bflsim.cli", "run", str(experiment), "--out", str(out_dir / "runs"), "--quiet"]
    for item in sets:
        command += ["--set", item]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        settings = f" with {', '.join(sets)}" if sets else ""
        raise RuntimeError(f"bflsim run{settings} failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("run folder: ")), wall


def run_federated_bench(
    out_dir: str | Path,
    experiment: str | Path = "experiments/bench_federated.toml",
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Time one federated experiment two ways, side by side; return the CSV.

    Both run as fresh processes (imports, data loading and start-up included): the plain
    loop with TensorFlow on all cores, then ``bflsim run`` on Flower + Ray.
    """
    import json
    import subprocess
    import sys

    progress = progress or Progress(quiet=True)
    cores = os.cpu_count() or 1
    env = _env(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    progress.say(f"bench: plain Keras loop on {experiment} ({cores} TensorFlow threads)")
    t0 = time.perf_counter()
    plain = subprocess.run(
        [sys.executable, "-m", "bflsim.fl.plain", str(experiment), "--set", f"backend.threads_per_client={cores}"],
        env=env, capture_output=True, text=True, check=True,
    )
    plain_wall = time.perf_counter() - t0
    plain_stats = json.loads(plain.stdout.strip().splitlines()[-1])
    progress.say(f"bench: plain loop {plain_wall:.1f} s, final accuracy {plain_stats['final_accuracy']:.4f}")

    progress.say("bench: bflsim Flower/Ray simulation")
    run_dir, flower_wall = _bflsim_run(experiment, out_dir, env)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    progress.say(f"bench: Flower/Ray {flower_wall:.1f} s, final accuracy {manifest.get('final_accuracy'):.4f}")

    rows = [
        ("federated", "plain_loop_wall_seconds", plain_wall, "s", 1, "", "fresh process: imports, data, all rounds"),
        ("federated", "plain_loop_training_seconds", plain_stats["loop_seconds"], "s", 1, "", "rounds only"),
        ("federated", "plain_loop_final_accuracy", plain_stats["final_accuracy"], "", 1, "", ""),
        ("federated", "bflsim_wall_seconds", flower_wall, "s", 1, "", "fresh process: imports, data, Ray start, all rounds"),
        ("federated", "bflsim_final_accuracy", manifest.get("final_accuracy"), "", 1, "", run_dir.name),
        ("federated", "wall_ratio_bflsim_over_plain", flower_wall / plain_wall, "", 1, 1.3, "target <= 1.3"),
    ]
    return write_bench_csv(out_dir, "federated", rows, ("flwr", "ray", "tensorflow-cpu", "keras"))


def run_ledger_bench(
    out_dir: str | Path,
    experiment: str | Path = "experiments/bench_ledger.toml",
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    pairs: int = 2,
) -> Path:
    """The ledger's share of a federated round: one experiment without and with its chain.

    Each run is a fresh ``bflsim run`` process of the same experiment, with
    ``ledger.backend`` "none" or the experiment's own, in ABBA order (none, chain, chain,
    none, ...) over ``pairs`` pairs, so a drift of the machine's speed cancels out. Compared:
    the median ``round_seconds`` over rounds 2..N of all runs of each kind (round 1 includes
    Ray actors' start-up and graph tracing), and the chain's own time per round
    (``ledger_seconds``: every chain call of the strategy, from opening to committing).
    """
    import pandas as pd

    from bflsim.config import load_experiment

    progress = progress or Progress(quiet=True)
    backend = load_experiment(experiment).ledger.backend
    env = _env(data_dir)
    out_dir = Path(out_dir)
    order = [label for i in range(pairs) for label in (("none", backend) if i % 2 == 0 else (backend, "none"))]
    rounds: dict[str, list[pd.DataFrame]] = {"none": [], backend: []}
    walls: dict[str, list[float]] = {"none": [], backend: []}
    names: dict[str, list[str]] = {"none": [], backend: []}
    for label in order:
        progress.say(f"bench: {experiment} with ledger.backend = {label}")
        run_dir, wall = _bflsim_run(experiment, out_dir, env, f"ledger.backend={label}")
        walls[label].append(wall)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        rounds[label].append(metrics[metrics["round"] >= 2])
        names[label].append(run_dir.name)
        seconds = metrics[(metrics["round"] >= 2) & (metrics["metric"] == "round_seconds")]["value"]
        progress.say(f"bench: {label}: median round {seconds.median():.2f} s, wall {walls[label][-1]:.0f} s")

    rows, medians, quartiles = [], {}, {}
    for label in ("none", backend):
        per_round = pd.concat(rounds[label])
        seconds = per_round[per_round["metric"] == "round_seconds"]["value"]
        medians[label] = float(seconds.median())
        quartiles[label] = float(seconds.quantile(0.25))
        rows += [
            ("ledger_overhead", f"round_seconds_q25_{label}", quartiles[label], "s", len(seconds), "",
             "lower quartile: a shared machine's noise only ever adds time"),
            ("ledger_overhead", f"round_seconds_median_{label}", medians[label], "s", len(seconds), "",
             f"rounds 2-{int(per_round['round'].max())} of {len(names[label])} runs: {', '.join(names[label])}"),
            ("ledger_overhead", f"wall_seconds_median_{label}", float(np.median(walls[label])), "s",
             len(walls[label]), "", "fresh process, all rounds"),
        ]
        if label != "none":
            chain = per_round.groupby("metric")["value"].median()
            rows += [
                ("ledger_overhead", "ledger_seconds_per_round_median", float(chain["ledger_seconds"]), "s",
                 len(seconds), "", "the strategy's chain calls: open round, contexts, data digests read, relay, commit"),
                ("ledger_overhead", "ledger_share_of_round", float(chain["ledger_seconds"]) / medians[label], "",
                 len(seconds), "", "ledger_seconds / round_seconds (medians)"),
                ("ledger_overhead", "gas_per_round_median", float(chain["gas_used"]), "gas", len(seconds), "",
                 "all transactions of a round"),
                ("ledger_overhead", "transactions_per_round_median", float(chain["transactions"]), "",
                 len(seconds), "", ""),
            ]
    ratio = medians[backend] / medians["none"]
    progress.say(f"bench: round time with/without the {backend} ledger: {ratio:.3f}")
    rows.append(("ledger_overhead", "round_seconds_ratio_ledger_over_none", ratio, "", 1, 1.05,
                 f"medians; target <= 1.05; runs in order {', '.join(order)}"))
    rows.append(("ledger_overhead", "round_seconds_q25_ratio_ledger_over_none",
                 quartiles[backend] / quartiles["none"], "", 1, 1.05, "lower quartiles; target <= 1.05"))
    return write_bench_csv(out_dir, "ledger", rows, ("flwr", "ray", "tensorflow-cpu", "web3", "eth-tester", "py-evm"))
