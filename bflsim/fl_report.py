"""Tables and figures of federated runs (paper Table 4 and Figure 2, attacker-share sweeps).

Everything here reads federated run folders (``manifest.json`` and the per-round rows of
``metrics.csv`` that :mod:`strategies.robust` and :mod:`bflsim.fl.server` log) and writes
CSV, Markdown, PNG and PDF; nothing trains.

- :func:`table4`: one row per scenario: final accuracy, macro-F1 and FPR of the global
  model, and how often a poisoned update got through the aggregation rule.
- :func:`sweep_summary`: final accuracy per (aggregator, attacker share) over seeds.

The malicious update success rate of a run is
``sum_r poisoned_accepted_r / sum_r poisoned_received_r`` over its rounds: the share of
the poisoned updates that reached the aggregation rule and were kept by it (undefined
when none was received, e.g. without an attack).

Runs are told apart by their folder, not their ``run_id``: a sweep names each folder after
its point, so two experiments may hold runs with the same id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bflsim import plots
from bflsim.results import METRIC_COLUMNS, read_manifest

AGGREGATOR_LABELS = {
    "fedavg": "FedAvg",
    "krum": "Krum",
    "multikrum": "Multi-Krum",
    "median": "Median",
    "trimmed_mean": "Trimmed mean",
}
ATTACK_LABELS = {"none": "no attack", "gaussian": "Gaussian", "sign_flip": "sign flip", "scaling": "scaling"}
ROUND_COUNTS = ("poisoned_received", "poisoned_accepted")
NOT_AVAILABLE = "n/a"
INTERRUPTED_MARK = ".interrupted-"  # bflsim.sweep.move_aside: <point>.interrupted-<time>
# A set of runs is a sweep when one aggregator meets this many attacker shares: a Table 4
# scenario list compares "no attack" with one attack setting, a sweep draws a curve.
SWEEP_MIN_FRACTIONS = 3


# --- finding and describing runs ---------------------------------------------------------


def find_run_dirs(
    root: str | Path, kind: str | None = "federated", include_interrupted: bool = False
) -> list[Path]:
    """Run folders (folders holding ``manifest.json``) at or below ``root``.

    They come in the order they were started (ties by path): the order in which an
    experiment lists its scenarios or grid points, unless a point was run again later.
    ``kind`` keeps only runs whose config has that ``kind`` (``None`` keeps all). Runs that
    a resumed sweep moved aside (``<point>.interrupted-<time>``, see :mod:`bflsim.sweep`)
    were run again under the point's own folder, so they are skipped unless
    ``include_interrupted``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = sorted(p.parent for p in root.rglob("manifest.json"))
    if not include_interrupted:
        found = [d for d in found if not any(INTERRUPTED_MARK in part for part in d.relative_to(root).parts)]
    manifests = {d: read_manifest(d) for d in found}
    if kind is not None:
        found = [d for d in found if manifests[d].get("config", {}).get("kind") == kind]
    return sorted(found, key=lambda d: (str(manifests[d].get("started", "")), str(d)))


def count_malicious(attack: Mapping[str, Any], num_nodes: int) -> int:
    """Malicious nodes of a run, by the rule of :meth:`bflsim.config.AttackConfig.count`."""
    if attack.get("name", "none") == "none":
        return 0
    if attack.get("fraction") is not None:
        return round(attack["fraction"] * num_nodes)
    return attack.get("num_malicious") or 0


def scenario_label(aggregator: str, attack: str, num_malicious: int, num_nodes: int) -> str:
    """A label for a run that is not a named point, e.g. ``Krum, Gaussian 3/10``."""
    agg = AGGREGATOR_LABELS.get(aggregator, aggregator)
    if num_malicious == 0:
        return f"{agg}, no attack"
    return f"{agg}, {ATTACK_LABELS.get(attack, attack)} {num_malicious}/{num_nodes}"


def federated_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: what was run (from the manifest), in the order given."""
    rows = []
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir)
        config = manifest.get("config", {})
        if config.get("kind") != "federated":
            raise ValueError(f"{run_dir}: not a federated run (config kind {config.get('kind')!r})")
        fed, attack, agg = config["federation"], config["attack"], config["aggregator"]
        seeds = manifest.get("seeds", {})
        point = manifest.get("point") or {}
        num_nodes = int(fed["num_nodes"])
        num_malicious = count_malicious(attack, num_nodes)
        rows.append(
            {
                "run_id": manifest["run_id"],
                "path": str(run_dir),
                "experiment": config.get("name"),
                "point": point.get("name", config.get("name")),
                "label": point.get("label")
                or scenario_label(agg["name"], attack["name"], num_malicious, num_nodes),
                "aggregator": agg["name"],
                "attack": attack["name"],
                "num_nodes": num_nodes,
                "num_malicious": num_malicious,
                "attacker_fraction": num_malicious / num_nodes,
                "sigma": attack.get("sigma"),
                "mode": attack.get("mode"),
                "train_seed": seeds.get("train_seed", config.get("train", {}).get("seed")),
                "federation_seed": seeds.get("federation_seed", fed.get("seed")),
                "attack_seed": seeds.get("attack_seed", attack.get("seed")),
                "rounds": int(fed["rounds"]),
                "status": manifest.get("status"),
                "wall_seconds": manifest.get("wall_seconds"),
                "ledger": config.get("ledger", {}).get("backend", "none"),
            }
        )
    return pd.DataFrame(rows)


def read_run_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """The tidy rows of every run in ``runs``, tagged with the run's ``path`` and ``label``."""
    frames = []
    for run in runs.itertuples():
        rows = pd.read_csv(Path(run.path) / "metrics.csv")
        frames.append(rows.assign(path=run.path, label=run.label))
    if not frames:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "path", "label"])
    return pd.concat(frames, ignore_index=True)


# --- per-run outcomes --------------------------------------------------------------------


def run_outcomes(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with what each run reached: final and best accuracy, poisoning counts.

    ``final_*`` are the global model's test metrics after the last logged round;
    ``best_accuracy`` is the best over rounds 1..R (round 0 is the initial model).
    """
    test = metrics[(metrics["split"] == "test") & metrics["round"].notna() & metrics["node"].isna()]
    last_round = test.groupby("path")["round"].max().rename("rounds_done")
    final = (
        test.merge(last_round, left_on=["path", "round"], right_on=["path", "rounds_done"])
        .pivot_table(index="path", columns="metric", values="value", aggfunc="last")
        .reindex(columns=["accuracy", "f1_macro", "fpr", "elapsed_seconds"])
        .add_prefix("final_")
    )
    trained = test[(test["metric"] == "accuracy") & (test["round"] >= 1)]
    best = trained.groupby("path")["value"].max().rename("best_accuracy")
    per_round = metrics[metrics["split"] == "round"]
    counts = (
        per_round[per_round["metric"].isin(ROUND_COUNTS)]
        .pivot_table(index="path", columns="metric", values="value", aggfunc="sum")
        .reindex(columns=list(ROUND_COUNTS))
    )
    weight = per_round[per_round["metric"] == "poisoned_weight"].groupby("path")["value"].mean()
    gas = per_round[per_round["metric"] == "gas_used"].groupby("path")["value"].mean()
    active = per_round[per_round["metric"] == "active_nodes"].sort_values("round").groupby("path")["value"].last()
    out = (
        runs.set_index("path")
        .join(last_round)
        .join(final)
        .join(best)
        .join(counts)
        .join(weight.rename("mean_poisoned_weight"))
        .join(gas.rename("gas_per_round"))
        .join(active.rename("active_nodes"))
        .reset_index()
    )
    out["revoked"] = out["num_nodes"] - out["active_nodes"]
    out[list(ROUND_COUNTS)] = out[list(ROUND_COUNTS)].fillna(0.0)
    out["success_rate"] = success_rate(out["poisoned_accepted"], out["poisoned_received"])
    # A run still going (or stopped) has no wall time yet; its clock so far stands in.
    out["wall_seconds"] = out["wall_seconds"].astype(float).fillna(out["final_elapsed_seconds"])
    return out.drop(columns="final_elapsed_seconds")


def success_rate(accepted: pd.Series, received: pd.Series) -> pd.Series:
    """accepted / received, NaN where nothing poisoned was received."""
    received = received.astype(float)
    return accepted.astype(float) / received.where(received > 0)


# --- Table 4 -----------------------------------------------------------------------------


TABLE4_COLUMNS = {
    "label": "scenario",
    "aggregator": "aggregator",
    "attack": "attack",
    "num_malicious": "malicious nodes",
    "num_nodes": "nodes",
    "n_runs": "runs",
    "final_accuracy": "accuracy",
    "final_f1_macro": "F1 (macro)",
    "final_fpr": "FPR",
    "success_rate": "malicious update success rate",
    "mean_poisoned_weight": "mean poisoned weight",
    "best_accuracy": "best accuracy",
    "rounds_done": "rounds",
    "ledger": "ledger",
    "gas_per_round": "gas per round",
    "revoked": "nodes revoked",
    "wall_seconds": "wall time (s)",
    "status": "status",
}


def table4(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per scenario label, in the order the runs were given.

    Where several runs (seeds) share a label, metrics are their means and the success rate
    pools their counts: sum(poisoned_accepted) / sum(poisoned_received) over all rounds of
    all its runs (NaN where no poisoned update was received).
    """
    runs = federated_runs(run_dirs)
    outcomes = run_outcomes(runs, read_run_metrics(runs))
    # One scenario on several chains: a row per chain, named after it.
    chains = outcomes.groupby("label", sort=False)["ledger"].transform("nunique")
    outcomes.loc[chains > 1, "label"] = outcomes["label"] + " (" + outcomes["ledger"] + ")"
    grouped = outcomes.groupby("label", sort=False)
    table = grouped.agg(
        aggregator=("aggregator", "first"),
        attack=("attack", "first"),
        num_malicious=("num_malicious", "first"),
        num_nodes=("num_nodes", "first"),
        n_runs=("path", "size"),
        final_accuracy=("final_accuracy", "mean"),
        final_f1_macro=("final_f1_macro", "mean"),
        final_fpr=("final_fpr", "mean"),
        poisoned_accepted=("poisoned_accepted", "sum"),
        poisoned_received=("poisoned_received", "sum"),
        mean_poisoned_weight=("mean_poisoned_weight", "mean"),
        best_accuracy=("best_accuracy", "mean"),
        rounds_done=("rounds_done", "max"),
        ledger=("ledger", "first"),
        gas_per_round=("gas_per_round", "mean"),
        revoked=("revoked", "mean"),
        wall_seconds=("wall_seconds", "mean"),
        status=("status", lambda s: ", ".join(dict.fromkeys(map(str, s)))),
    ).reset_index()
    table["success_rate"] = success_rate(table["poisoned_accepted"], table["poisoned_received"])
    table["rounds_done"] = table["rounds_done"].astype("Int64")
    return table[list(TABLE4_COLUMNS)]


def table4_markdown(table: pd.DataFrame) -> str:
    """Table 4 for the README: readable headers, rates in percent, ``n/a`` for no attack."""
    shown = table.rename(columns=TABLE4_COLUMNS)
    shown["aggregator"] = shown["aggregator"].map(lambda a: AGGREGATOR_LABELS.get(a, a))
    shown["attack"] = shown["attack"].map(lambda a: ATTACK_LABELS.get(a, a))
    return to_markdown(
        shown,
        {
            "accuracy": "{:.4f}", "F1 (macro)": "{:.4f}", "FPR": "{:.4f}", "best accuracy": "{:.4f}",
            "malicious update success rate": "{:.1%}", "mean poisoned weight": "{:.3f}",
            "wall time (s)": "{:.0f}", "gas per round": "{:,.0f}", "nodes revoked": "{:.0f}",
        },
    )


# --- attacker-share sweeps ---------------------------------------------------------------


def sweep_summary(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Final accuracy per (aggregator, attacker_fraction) over the complete runs.

    Columns: ``n_seeds`` (complete runs), ``n_incomplete`` (runs of that cell left out:
    running, stopped or failed), mean / std / min / max of the final test accuracy, and
    the mean over runs of the malicious update success rate. ``attrs["incomplete"]``
    lists the paths of the runs left out.
    """
    runs = federated_runs(run_dirs)
    outcomes = run_outcomes(runs, read_run_metrics(runs))
    complete = outcomes["status"] == "complete"
    keys = ["aggregator", "attacker_fraction"]
    cells = outcomes.groupby(keys, sort=False).agg(
        attack=("attack", lambda s: "/".join(sorted(set(s)))),
        num_malicious=("num_malicious", "first"),
        num_nodes=("num_nodes", "first"),
    )
    stats = (
        outcomes[complete]
        .groupby(keys)
        .agg(
            n_seeds=("path", "size"),
            accuracy_mean=("final_accuracy", "mean"),
            accuracy_std=("final_accuracy", "std"),
            accuracy_min=("final_accuracy", "min"),
            accuracy_max=("final_accuracy", "max"),
            success_rate_mean=("success_rate", "mean"),
        )
    )
    incomplete = outcomes[~complete].groupby(keys).size().rename("n_incomplete")
    summary = cells.join(stats).join(incomplete).reset_index()
    summary["n_seeds"] = summary["n_seeds"].fillna(0).astype(int)
    summary["n_incomplete"] = summary["n_incomplete"].fillna(0).astype(int)
    order = {name: i for i, name in enumerate(dict.fromkeys(outcomes["aggregator"]))}
    summary = summary.sort_values(keys, key=lambda c: c.map(order) if c.name == "aggregator" else c)
    summary = summary[
        [*keys, "attack", "num_malicious", "num_nodes", "n_seeds", "n_incomplete", "accuracy_mean",
         "accuracy_std", "accuracy_min", "accuracy_max", "success_rate_mean"]
    ].reset_index(drop=True)
    summary.attrs["incomplete"] = outcomes.loc[~complete, "path"].tolist()
    return summary


SWEEP_COLUMNS = {
    "aggregator": "aggregator",
    "attackers": "attackers (%)",
    "attack": "attack",
    "num_malicious": "malicious nodes",
    "num_nodes": "nodes",
    "n_seeds": "seeds",
    "n_incomplete": "incomplete (left out)",
    "accuracy_mean": "accuracy mean",
    "accuracy_std": "accuracy std",
    "accuracy_min": "accuracy min",
    "accuracy_max": "accuracy max",
    "success_rate_mean": "malicious update success rate (mean)",
}


def sweep_markdown(summary: pd.DataFrame) -> str:
    """The sweep summary for the README, with a note on the runs left out."""
    shown = summary.assign(
        aggregator=summary["aggregator"].map(lambda a: AGGREGATOR_LABELS.get(a, a)),
        attackers=100 * summary["attacker_fraction"],
    )
    number = "{:.4f}"
    text = to_markdown(
        shown[list(SWEEP_COLUMNS)].rename(columns=SWEEP_COLUMNS),
        {
            "attackers (%)": "{:.0f}", "accuracy mean": number, "accuracy std": number, "accuracy min": number,
            "accuracy max": number, "malicious update success rate (mean)": "{:.1%}", "malicious nodes": "{:.0f}",
        },
    )
    left_out = summary.attrs.get("incomplete", [])
    if left_out:
        text += f"\n{len(left_out)} incomplete run(s) left out: " + ", ".join(map(str, left_out)) + "\n"
    return text


def is_sweep(runs: pd.DataFrame) -> bool:
    """Whether some aggregator was run at :data:`SWEEP_MIN_FRACTIONS` or more attacker shares."""
    if runs.empty:
        return False
    return bool(runs.groupby("aggregator")["attacker_fraction"].nunique().max() >= SWEEP_MIN_FRACTIONS)


# --- Markdown and the whole report -------------------------------------------------------


def to_markdown(table: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``formats`` maps columns to format strings.

    Missing values print as ``n/a``; numeric columns are right-aligned.
    """
    formats = formats or {}
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + "|"
    lines = [header, rule]
    for row in table.itertuples(index=False):
        cells = []
        for column, value in zip(table.columns, row):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                cells.append(NOT_AVAILABLE)
            elif column in formats:
                cells.append(formats[column].format(value))
            elif isinstance(value, (float, np.floating)):
                cells.append(f"{value:.4g}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_federated_report(
    run_dirs: Iterable[str | Path],
    out_dir: str | Path,
    layout: Literal["auto", "scenarios", "sweep"] = "auto",
) -> list[Path]:
    """Write the tables and figures of federated runs; return what was written.

    Always ``runs.csv``. Scenarios: ``table4.csv`` / ``.md`` and ``figure2.png`` / ``.pdf``
    (accuracy per round). Sweeps: ``sweep_summary.csv`` / ``.md`` and
    ``figure_sweep.png`` / ``.pdf``. With ``layout="auto"`` the runs are a sweep when
    :func:`is_sweep` says so.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no run folders given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = federated_runs(run_dirs)
    written: list[Path] = []

    runs.to_csv(out_dir / "runs.csv", index=False)
    written.append(out_dir / "runs.csv")
    sweep = is_sweep(runs) if layout == "auto" else layout == "sweep"
    experiments = ", ".join(dict.fromkeys(runs["experiment"].astype(str)))

    if not sweep:
        t4 = table4(run_dirs)
        t4.to_csv(out_dir / "table4.csv", index=False)
        (out_dir / "table4.md").write_text(table4_markdown(t4))
        written += [out_dir / "table4.csv", out_dir / "table4.md"]
        fig = plots.accuracy_per_round(read_run_metrics(runs), title=f"Global test accuracy per round: {experiments}")
        written += plots.save_figure(fig, out_dir / "figure2")
        return written

    summary = sweep_summary(run_dirs)
    summary.to_csv(out_dir / "sweep_summary.csv", index=False)
    (out_dir / "sweep_summary.md").write_text(sweep_markdown(summary))
    written += [out_dir / "sweep_summary.csv", out_dir / "sweep_summary.md"]
    if summary["n_seeds"].sum() > 0:
        fig = plots.accuracy_vs_attackers(
            summary, title=f"Final accuracy against attackers: {experiments}", labels=AGGREGATOR_LABELS
        )
        written += plots.save_figure(fig, out_dir / "figure_sweep")
    return written
