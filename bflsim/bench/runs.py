"""Benchmarks that run whole experiments as fresh processes, side by side in one call.

- :func:`run_federated_bench`: the same federated experiment on Flower + Ray and as the plain
  single-process loop (:mod:`bflsim.bench.plain_loop`);
- :func:`run_ledger_bench`: the same experiment without and with its ledger, in ABBA order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.bench import write_bench_csv
from bflsim.plans import load_plan
from bflsim.progress import Progress


def bench_env(data_dir: str | Path | None) -> dict[str, str]:
    """This process's environment for a benchmarked command, with ``$BFLSIM_DATA_DIR`` set
    from ``data_dir`` when given and Flower's telemetry off."""
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0")
    if data_dir:
        env["BFLSIM_DATA_DIR"] = str(data_dir)
    return env


def bflsim_command(args: list[str], env: dict[str, str]) -> tuple[Path | None, float]:
    """``bflsim ARGS...`` as a fresh process: the last run folder it printed (None if none)
    and its wall seconds. A failed command raises with the end of its stderr."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bflsim.cli", *args], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"bflsim {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    folders = [line.removeprefix("run folder: ") for line in done.stdout.splitlines() if line.startswith("run folder: ")]
    return (Path(folders[-1]) if folders else None), wall


def _bflsim_run(experiment: str | Path, out_dir: Path, env: dict[str, str], *sets: str) -> tuple[Path, float]:
    """``bflsim run EXPERIMENT`` (``--set`` each of ``sets``): its run folder and wall seconds."""
    args = ["run", str(experiment), "--out", str(out_dir / "runs"), "--quiet"]
    for item in sets:
        args += ["--set", item]
    run_dir, wall = bflsim_command(args, env)
    if run_dir is None:
        raise RuntimeError(f"bflsim {' '.join(args)} printed no run folder")
    return run_dir, wall


def plain_loop_points(experiment: str | Path, env: dict[str, str], *, all_points: bool = False,
                  only: Sequence[str] = (), sets: Sequence[str] = ()) -> dict[str, dict]:
    """``python -m bflsim.bench.plain_loop`` as a fresh process (every point, or the first;
    ``--only`` / ``--set`` each given): its JSON result per point name."""
    command = [sys.executable, "-m", "bflsim.bench.plain_loop", str(experiment)]
    command += ["--all-points"] if all_points else []
    for name in only:
        command += ["--only", name]
    for item in sets:
        command += ["--set", item]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"plain loop failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["point"]: r for r in results}


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
    progress = progress or Progress(quiet=True)
    cores = os.cpu_count() or 1
    env = bench_env(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    progress.say(f"bench: plain Keras loop on {experiment} ({cores} TensorFlow threads)")
    t0 = time.perf_counter()
    [plain_stats] = plain_loop_points(experiment, env, sets=[f"backend.threads_per_client={cores}"]).values()
    plain_wall = time.perf_counter() - t0
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
    progress = progress or Progress(quiet=True)
    backend = load_plan(experiment).points[0][1].ledger.backend
    env = bench_env(data_dir)
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
