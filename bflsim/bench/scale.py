"""Federation size against the ledger's modes (``--suite scale``).

For every number of edge nodes and every ledger (none, the registry in per-node mode, in
batched mode) one ``bflsim run`` of the scale experiment (default
experiments/scale_batched.toml: NSL-KDD, the DNN, Krum) as a fresh process, as a user runs it,
then ``bflsim audit`` of its folder (ledger runs). The cohort is 1% of the federation, at
least 10 nodes, so a round's training work is the same up to 1,000 nodes and set-up, chain and
memory costs show what the federation's size adds. Measured per point:

- ``setup_seconds``: server start to round 1 (nodes say who they are, the registry is deployed
  and the federation and data registered, round 0 is scored): ``elapsed_seconds`` of round 1
  less its ``round_seconds``;
- ``round_seconds``: the median over rounds 2..N (round 1 builds Ray's actors);
- ``peak_pss_bytes``: the process tree's proportional set size, peak of 0.5 s samples
  (:func:`bflsim.bench.throughput.tree_pss`);
- ``gas_per_round``: the median of the rounds' ``gas_used`` (every transaction of the round,
  the nodes' included);
- ``audit_seconds`` and the audit's exit status (0 = PASS).

Writes ``scale.csv`` (:data:`bflsim.bench.BENCH_COLUMNS`), ``scale_points.csv`` (one row per
point, with when and from which commit its run was made) and ``scale.png``/``.pdf``. With
``merge`` the points already in ``scale_points.csv`` are kept except those measured again, so
the long points (10,000 nodes) can be measured in a call of their own.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bflsim.bench import write_bench_csv
from bflsim.bench.runs import bench_env
from bflsim.bench.throughput import sampled_run
from bflsim.progress import Progress
from bflsim.report import figures
from bflsim.runfolder.folder import read_manifest

PACKAGES = ("flwr", "ray", "tensorflow-cpu", "web3", "py-evm")
LEDGERS = {
    "none": ("ledger.backend=none",),
    "per-node": ("ledger.backend=embedded", "ledger.mode=per-node"),
    "batched": ("ledger.backend=embedded", "ledger.mode=batched"),
}


def cohort_fraction(nodes: int, share: float = 0.01, minimum: int = 10) -> float:
    """``federation.fraction_train`` for a cohort of ``share`` of ``nodes``, at least ``minimum``."""
    return min(1.0, max(share, minimum / nodes))


def run_scale_bench(
    out_dir: str | Path,
    experiment: str | Path = "experiments/scale_batched.toml",
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    nodes: Sequence[int] = (10, 100, 1000, 10000),
    ledgers: Sequence[str] = ("none", "per-node", "batched"),
    rounds: int = 3,
    merge: bool = False,
) -> Path:
    """Run every (nodes, ledger) point; return the summary CSV (with ``merge``, of old and new points)."""
    progress = progress or Progress(quiet=True)
    out_dir = Path(out_dir)
    work = out_dir / "runs" / f"scale-{dt.datetime.now():%Y%m%d-%H%M%S}"
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(data_dir)
    kept = _kept_points(out_dir / "scale_points.csv", {(n, ledger) for n in nodes for ledger in ledgers}) if merge else []
    points = []
    for count in nodes:
        for ledger in ledgers:
            progress.say(f"scale: {count} nodes, ledger {ledger}")
            points.append(measure_point(experiment, count, ledger, rounds, env, work))
            _table(kept + points).to_csv(out_dir / "scale_points.csv", index=False)  # written as measured
    table = _table(kept + points)
    rows = [
        ("scale", f"{quantity}_{p['ledger']}_{p['nodes']}", p[quantity], unit, 1, "",
         f"cohort {p['cohort']}, {p['rounds']} rounds")
        for p in table.to_dict("records")
        for quantity, unit in (("setup_seconds", "s"), ("round_seconds", "s"), ("peak_pss_bytes", "B"),
                               ("gas_per_round", "gas"), ("audit_seconds", "s"))
        if pd.notna(p[quantity])
    ]
    figures.save_figure(figures.scale_panels(table, tuple(LEDGERS)), out_dir / "scale")
    return write_bench_csv(out_dir, "scale", rows, PACKAGES)


def _kept_points(path: Path, remeasured: set[tuple[int, str]]) -> list[dict[str, object]]:
    """The points of an earlier ``scale_points.csv`` that are not measured again."""
    if not path.exists():
        return []
    earlier = pd.read_csv(path).to_dict("records")
    return [p for p in earlier if (int(p["nodes"]), str(p["ledger"])) not in remeasured]


def _table(points: list[dict[str, object]]) -> pd.DataFrame:
    """Points in (nodes, ledger) order."""
    order = {name: i for i, name in enumerate(LEDGERS)}
    table = pd.DataFrame(points)
    return table.sort_values(["nodes", "ledger"], key=lambda c: c.map(order) if c.name == "ledger" else c,
                             kind="stable").reset_index(drop=True)


def measure_point(experiment: str | Path, count: int, ledger: str, rounds: int, env: dict[str, str],
                  work: Path) -> dict[str, object]:
    """One ``bflsim run`` (and ``bflsim audit``) of ``count`` nodes with ``ledger``."""
    sets = [f"federation.num_nodes={count}", f"federation.fraction_train={cohort_fraction(count)}",
            f"federation.rounds={rounds}", *LEDGERS[ledger]]
    command = [sys.executable, "-m", "bflsim.cli", "run", str(experiment), "--quiet",
               "--out", str(work / f"{ledger}-{count}")]
    for item in sets:
        command += ["--set", item]
    run_dir, peak, wall = _sampled(command, env)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    manifest = read_manifest(run_dir)
    test = metrics[metrics["split"] == "test"]
    elapsed = test[(test["metric"] == "elapsed_seconds") & (test["round"] == 1)]["value"].iloc[0]
    first = test[(test["metric"] == "round_seconds") & (test["round"] == 1)]["value"].iloc[0]
    later = test[(test["metric"] == "round_seconds") & (test["round"] >= 2)]["value"]
    gas = metrics[(metrics["split"] == "round") & (metrics["metric"] == "gas_used")]["value"]
    audit_seconds, audit_status = float("nan"), None
    if ledger != "none":
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bflsim.cli", "audit", str(run_dir)], env=env,
                              capture_output=True, text=True, check=False)
        audit_seconds, audit_status = time.perf_counter() - started, done.returncode
    cohort = max(1, int(cohort_fraction(count) * count))
    return {
        "nodes": count, "ledger": ledger, "cohort": cohort, "rounds": rounds,
        "setup_seconds": float(elapsed - first), "round_seconds": float(later.median() if len(later) else first),
        "peak_pss_bytes": peak, "wall_seconds": wall,
        "gas_per_round": float(gas.median()) if len(gas) else float("nan"),
        "audit_seconds": audit_seconds, "audit_exit": audit_status,
        "final_accuracy": float(test[(test["metric"] == "accuracy") & (test["round"] == rounds)]["value"].iloc[0]),
        "run_dir": str(run_dir), "started": manifest.get("started"), "git_commit": manifest.get("git_commit"),
    }


def _sampled(command: list[str], env: dict[str, str]) -> tuple[Path, int, float]:
    """Run ``command`` (:func:`bflsim.bench.throughput.sampled_run`): (run folder, peak PSS, wall)."""
    stdout, peak, wall = sampled_run(command, env, " ".join(command[3:]))
    folders = [line.removeprefix("run folder: ") for line in stdout.splitlines() if line.startswith("run folder: ")]
    return Path(folders[-1]), peak, wall
