"""Sweep throughput: a grid of federated runs against the arithmetic it needs (``--suite throughput``).

Measured side by side in one call, every command a fresh process as a user would run it:

(a) the compute floor: every point of the grid trained as compiled loops in one process, no
    Flower and no Ray (:mod:`bflsim.bench.plain_loop`: the same nodes, seeds, cohorts,
    local training, round decision and test scoring; TensorFlow on all cores);
(b) bflsim on one point: ``bflsim run --only POINT`` (Ray, TensorFlow and data start-up
    included), and each point's share of a whole sweep (c);
(c) the whole grid: ``bflsim sweep`` as committed (``--parallel auto``) and one point at a
    time (``--parallel 1``), in one Ray runtime each;
(d) Krum against one float64 Gram matrix and Flower's Multi-Krum (:mod:`bflsim.aggregators`
    bench, :func:`bflsim.bench.aggregators.krum_rows`);
(e) wall time against the number of edge nodes (``bflsim run`` and the floor at each size),
    and the memory (proportional set size, summed over the process tree, peak of 0.5 s
    samples) of a 1,000-node federation with a 2% cohort;
(f) Table 4's three full-size CNN-LSTM scenarios, cut to a few rounds: ``bflsim run``
    against their floor (there the arithmetic dominates).

Writes ``throughput.csv`` (the summary, :data:`bflsim.bench.BENCH_COLUMNS`),
``throughput_points.csv`` (per point: floor and sweep seconds, final accuracies),
``throughput_nodes.csv``, ``throughput_krum.csv`` and ``throughput.png``/``.pdf``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bflsim.bench import write_bench_csv
from bflsim.bench.runs import bench_env, bflsim_command, plain_loop_points
from bflsim.plans import load_plan
from bflsim.progress import Progress
from bflsim.runfolder import descendants

PACKAGES = ("flwr", "ray", "tensorflow-cpu", "keras", "numpy")


def run_throughput_bench(
    out_dir: str | Path,
    experiment: str | Path = "experiments/sweep_attackers.toml",
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    sequential: bool = True,
    nodes: Sequence[int] = (10, 20, 50, 100),
    memory_nodes: int = 1000,
    krum: bool = True,
    table4: str | Path | None = "experiments/table4_poisoning.toml",
    table4_rounds: int = 3,
) -> Path:
    """Run (a)-(f) of the module docstring; return the summary CSV."""
    progress = progress or Progress(quiet=True)
    out_dir = Path(out_dir)
    work = out_dir / "runs" / f"throughput-{dt.datetime.now():%Y%m%d-%H%M%S}"
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(data_dir)
    plan = load_plan(experiment)
    probe = plan.points[len(plan.points) // 2][0].name  # a middle point: an attack, a robust rule
    rows: list[tuple] = []

    progress.say(f"throughput: (a) compute floor, {len(plan.points)} points in one process")
    floor = plain_loop_points(experiment, env, all_points=True)
    floor_total = sum(p["loop_seconds"] for p in floor.values())
    rows += [
        ("floor", "points", len(floor), "", 1, "", "plain loop in one process"),
        ("floor", "rounds_seconds_total", floor_total, "s", 1, "", "every point's rounds: training, decision, scoring"),
        ("floor", "training_seconds_total", sum(p["train_seconds"] for p in floor.values()), "s", 1, "",
         "local training only"),
        ("floor", "seconds_per_point", floor_total / len(floor), "s", 1, "", ""),
    ]

    progress.say(f"throughput: (b) bflsim run --only {probe}")
    _, single_wall = bflsim_command(["run", str(experiment), "--only", probe, "--out", str(work / "single"),
                                     "--quiet"], env)
    rows += [("single_run", "wall_seconds", single_wall, "s", 1, "", f"fresh process, {probe}"),
             ("single_run", "wall_over_floor", single_wall / floor[probe]["loop_seconds"], "", 1, "", "")]

    sweeps = {"parallel": ["--parallel", "auto"], **({"sequential": ["--parallel", "1"]} if sequential else {})}
    per_point = pd.DataFrame({"point": list(floor), "floor_seconds": [p["loop_seconds"] for p in floor.values()],
                              "floor_accuracy": [p["final_accuracy"] for p in floor.values()]})
    for label, flags in sweeps.items():
        progress.say(f"throughput: (c) bflsim sweep {' '.join(flags)}")
        folder = work / label
        started = time.time()
        _, wall = bflsim_command(["sweep", str(experiment), "--out", str(folder), "--quiet", *flags], env)
        done = _sweep_points(folder / plan.name, started)
        per_point = per_point.merge(done.add_prefix(f"{label}_").rename(columns={f"{label}_point": "point"}),
                                    on="point", how="left")
        rows += [
            (f"sweep_{label}", "wall_seconds", wall, "s", 1, 300 if label == "parallel" else "",
             "whole grid, fresh process" + ("; target <= 300 s" if label == "parallel" else "")),
            (f"sweep_{label}", "points", len(done), "", 1, "", ""),
            (f"sweep_{label}", "seconds_per_point", wall / max(len(done), 1), "s", 1, "",
             "wall / points, start-up included"),
            (f"sweep_{label}", "wall_over_floor", wall / floor_total, "", 1, 2.0 if label == "parallel" else "",
             "target <= 2 per point"),
            (f"sweep_{label}", "max_accuracy_difference_to_floor",
             float((per_point[f"{label}_accuracy"] - per_point["floor_accuracy"]).abs().max()), "", 1, "",
             "same seeds and code: expected 0"),
        ]
    per_point.to_csv(out_dir / "throughput_points.csv", index=False, float_format="%.6g")

    nodes_table = _nodes_scan(experiment, probe, nodes, env, work, progress)
    nodes_table.to_csv(out_dir / "throughput_nodes.csv", index=False, float_format="%.6g")

    if memory_nodes:
        progress.say(f"throughput: (e) {memory_nodes} nodes, 2% cohort: memory of the process tree")
        peak, wall = _memory_run(experiment, probe, memory_nodes, env, work)
        rows += [("memory", f"peak_pss_bytes_{memory_nodes}_nodes", peak, "B", 1, 8 * 2**30,
                  "fraction_train 0.02, 3 rounds, full NSL-KDD, f = 4 per cohort; target < 8 GiB"),
                 ("memory", f"wall_seconds_{memory_nodes}_nodes", wall, "s", 1, "", "")]

    if krum:
        progress.say("throughput: (d) Krum vs a float64 Gram matrix vs Flower's Multi-Krum")
        from bflsim.bench.aggregators import krum_rows

        krum_table = pd.DataFrame(krum_rows())
        krum_table.to_csv(out_dir / "throughput_krum.csv", index=False, float_format="%.6g")
        rows += [("krum", "max_krum_over_gram", float(krum_table["krum_over_gram"].max()), "", 3, 1.5, "target <= 1.5"),
                 ("krum", "max_krum_over_flower", float(krum_table["krum_over_flower"].max()), "", 3, 1.0,
                  "target < 1 at every size")]

    if table4:
        progress.say(f"throughput: (f) {table4}, {table4_rounds} rounds: floor and bflsim run")
        rows += _table4(table4, table4_rounds, env, work)

    from bflsim.report import figures

    figures.save_figure(figures.throughput_panels(per_point, nodes_table), out_dir / "throughput")
    return write_bench_csv(out_dir, "throughput", rows, PACKAGES)


def _table4(experiment: str | Path, rounds: int, env: dict[str, str], work: Path) -> list[tuple]:
    """Table 4's scenarios (full-size CNN-LSTM, compute-bound) cut to ``rounds`` rounds: the
    floor (all scenarios in one plain process) against ``bflsim run`` (one warm runtime)."""
    sets = [f"federation.rounds={rounds}"]
    floor = plain_loop_points(experiment, env, all_points=True, sets=sets)
    floor_rounds = sum(p["loop_seconds"] for p in floor.values())
    floor_setup = max(p["setup_seconds"] for p in floor.values())
    _, wall = bflsim_command(["run", str(experiment), "--set", sets[0], "--quiet", "--out", str(work / "table4")], env)
    note = f"{len(floor)} scenarios x {rounds} rounds (the committed file has 50)"
    return [
        ("table4", "floor_rounds_seconds", floor_rounds, "s", 1, "", note + "; plain loop, rounds only"),
        ("table4", "floor_with_setup_seconds", floor_rounds + floor_setup, "s", 1, "", "plus one data load and trace"),
        ("table4", "bflsim_wall_seconds", wall, "s", 1, "", "fresh process, every scenario, start-up included"),
        ("table4", "wall_over_floor", wall / (floor_rounds + floor_setup), "", 1, 1.2, "target <= 1.2"),
    ]


def _sweep_points(root: Path, started: float) -> pd.DataFrame:
    """Each point's seconds, final accuracy and finishing time (seconds after ``started``)."""
    rows = []
    for manifest_path in sorted(root.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        finished = dt.datetime.fromisoformat(manifest["finished"]).timestamp() if manifest.get("finished") else None
        rows.append({"point": manifest_path.parent.name, "seconds": manifest.get("wall_seconds"),
                     "accuracy": manifest.get("final_accuracy"),
                     "finished_after": None if finished is None else finished - started})
    return pd.DataFrame(rows, columns=["point", "seconds", "accuracy", "finished_after"])


def _nodes_scan(experiment: str | Path, probe: str, nodes: Sequence[int], env: dict[str, str], work: Path,
                progress: Progress) -> pd.DataFrame:
    """``bflsim run`` (fresh process) and the floor of one point at each federation size."""
    rows = []
    for count in nodes:
        progress.say(f"throughput: (e) {count} edge nodes")
        sets = [f"federation.num_nodes={count}"]
        floor = plain_loop_points(experiment, env, only=[probe], sets=sets)[probe]
        folder, wall = bflsim_command(["run", str(experiment), "--only", probe, "--set", sets[0],
                                       "--out", str(work / f"nodes-{count}"), "--quiet"], env)
        manifest = json.loads((folder / "manifest.json").read_text()) if folder else {}
        rows.append({"nodes": count, "bflsim_wall_seconds": wall, "bflsim_run_seconds": manifest.get("wall_seconds"),
                     "floor_seconds": floor["loop_seconds"], "floor_setup_seconds": floor["setup_seconds"],
                     "bflsim_accuracy": manifest.get("final_accuracy"), "floor_accuracy": floor["final_accuracy"]})
    return pd.DataFrame(rows)


def _memory_run(experiment: str | Path, probe: str, count: int, env: dict[str, str], work: Path) -> tuple[int, float]:
    sets = [f"federation.num_nodes={count}", "federation.fraction_train=0.02", "federation.rounds=3",
            "data.sample_fraction=1.0", "aggregator.assumed_malicious=4"]
    command = [sys.executable, "-m", "bflsim.cli", "run", str(experiment), "--only", probe, "--quiet",
               "--out", str(work / f"memory-{count}")]
    for item in sets:
        command += ["--set", item]
    _, peak, wall = sampled_run(command, env, f"{count}-node run")
    return peak, wall


def sampled_run(command: list[str], env: dict[str, str], what: str) -> tuple[str, int, float]:
    """Run ``command``, sampling its process tree's PSS every 0.5 s: (stdout, peak PSS in
    bytes, wall seconds). A failed command raises, naming ``what``, with the end of its stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            peak[0] = max(peak[0], tree_pss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {process.returncode}):\n{stderr[-3000:]}")
    return stdout, peak[0], time.perf_counter() - started


def tree_pss(pid: int) -> int:
    """Proportional set size in bytes of ``pid`` and every descendant (shared pages counted once
    in total, split between the processes that map them), from ``/proc``."""
    total = 0
    for current in (pid, *(p["pid"] for p in descendants(pid))):
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total
