"""Tables and figures of federated runs (paper Table 4 and Figure 2, attacker-share sweeps).

Everything here reads federated run folders (``manifest.json`` and the per-round rows of
``metrics.csv`` that :mod:`bflsim.runfolder.recorder` and the evaluator log) and writes
CSV, Markdown, PNG and PDF; nothing trains.

- :func:`table4`: one row per scenario: final accuracy, macro-F1 and FPR of the global
  model, and how often a poisoned update got through the aggregation rule.
- :func:`sweep_summary`: final accuracy per (aggregator, attacker share) over seeds.

A run's detection pools its rounds: precision = flagged malicious / flagged, recall =
flagged malicious / malicious received, where "flagged" are the rows the rule judged
outliers (what the chain counts against a node); undefined (NaN) when nothing was flagged /
no malicious update was received.

The malicious update success rate of a run is
``sum_r poisoned_accepted_r / sum_r poisoned_received_r`` over its rounds: the share of
the poisoned updates that reached the aggregation rule and were kept by it (undefined
when none was received, e.g. without an attack).

Runs are told apart by their folder, not their ``run_id``: a sweep names each folder after
its point, so two experiments may hold runs with the same id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from bflsim.aggregators import AGGREGATORS
from bflsim.attacks import ATTACKS
from bflsim.report import figures, paper
from bflsim.report.markdown import to_markdown
from bflsim.report.tables import over_runs, shown_with_ci, write_table
from bflsim.runfolder import METRIC_COLUMNS, Run, read_run

# A set of runs is a sweep when one aggregator meets this many attacker shares: a Table 4
# scenario list compares "no attack" with one attack setting, a sweep draws a curve.
SWEEP_MIN_FRACTIONS = 3


def aggregator_label(name: str) -> str:
    return AGGREGATORS[name].label if name in AGGREGATORS else name


def attack_label(name: str) -> str:
    return ATTACKS[name].label if name in ATTACKS else "no attack" if name == "none" else name


@dataclass(frozen=True)
class Summary:
    """How a per-round metric (``split = "round"`` rows) sums up a run, and a table's runs.

    ``over_rounds``: ``sum``, ``mean`` or ``last`` over a run's rounds, into ``column``;
    ``over_runs``: ``sum`` or ``mean`` over the runs of one table row. ``shown`` puts the
    column in Table 4, headed ``label`` and formatted with ``fmt``.
    """

    column: str
    over_rounds: Literal["sum", "mean", "last"]
    over_runs: Literal["sum", "mean"]
    label: str
    fmt: str
    shown: bool = True


ROUND_METRICS: dict[str, Summary] = {
    "poisoned_received": Summary("poisoned_received", "sum", "sum", "poisoned received", "{:.0f}", shown=False),
    "poisoned_accepted": Summary("poisoned_accepted", "sum", "sum", "poisoned accepted", "{:.0f}", shown=False),
    "poisoned_weight": Summary("mean_poisoned_weight", "mean", "mean", "mean poisoned weight", "{:.3f}"),
    "poisoned_flagged": Summary("poisoned_flagged", "sum", "sum", "poisoned flagged", "{:.0f}", shown=False),
    "honest_flagged": Summary("honest_flagged", "sum", "sum", "honest flagged", "{:.0f}", shown=False),
    "gas_used": Summary("gas_per_round", "mean", "mean", "gas per round", "{:,.0f}"),
    "active_nodes": Summary("active_nodes", "last", "mean", "active nodes", "{:.0f}", shown=False),
}
"""The per-round metrics that reach the tables: a new one is one line here."""


# --- describing runs ---------------------------------------------------------------------


def variant(name: str, params: Mapping[str, Any], registry: Mapping[str, type]) -> str:
    """``name`` with the parameters it sets away from its record's defaults, e.g.
    ``trimmed_mean (trim_fraction=0.2)``; the bare name when it sets none."""
    record = registry.get(name)
    if record is None:
        return name
    defaults = {f.name: f.default for f in dataclasses.fields(record)}
    changed = [f"{key}={value}" for key, value in params.items()
               if key in defaults and _plain(defaults[key]) != _plain(value)]
    return name + (f" ({', '.join(changed)})" if changed else "")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def scenario_label(aggregator: str, attack: str, num_malicious: int, num_nodes: int) -> str:
    """A label for a run that is not a named point, e.g. ``Krum, Gaussian 3/10``."""
    if num_malicious == 0:
        return f"{aggregator_label(aggregator)}, no attack"
    return f"{aggregator_label(aggregator)}, {attack_label(attack)} {num_malicious}/{num_nodes}"


def federated_runs(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: what was run (from its typed config), in the order given."""
    rows = []
    for run in runs:
        config = run.config
        if config.kind != "federated":
            raise ValueError(f"{run.path}: not a federated run (config kind {config.kind!r})")
        fed, attack, agg = config.federation, config.attack, config.aggregator
        seeds = run.manifest.get("seeds", {})
        rows.append({
            "run_id": run.run_id,
            "path": str(run.path),
            "experiment": config.name,
            "point": run.point.get("name", config.name),
            "label": run.point.get("label")
            or scenario_label(agg.name, attack.name, config.num_malicious, fed.num_nodes),
            "aggregator": agg.name,
            "aggregator_params": ", ".join(f"{k}={v}" for k, v in agg.params.items()),
            "defence": variant(agg.name, agg.params, AGGREGATORS),
            "attack_variant": variant(attack.name, attack.params, ATTACKS),
            "assumed_malicious": config.assumed_malicious,
            "attack": attack.name,
            "attack_params": ", ".join(f"{k}={v}" for k, v in attack.params.items()),
            "threat_model": attack.threat_model,
            "num_nodes": fed.num_nodes,
            "partition": fed.partition if fed.partition != "dirichlet" else f"dirichlet({fed.alpha:g})",
            "num_malicious": config.num_malicious,
            "attacker_fraction": config.num_malicious / fed.num_nodes,
            "train_seed": seeds.get("train_seed", config.train.seed),
            "federation_seed": seeds.get("federation_seed", fed.seed),
            "attack_seed": seeds.get("attack_seed", attack.seed),
            "rounds": fed.rounds,
            "status": run.status,
            "wall_seconds": run.manifest.get("wall_seconds"),
            "ledger": config.ledger.backend,
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # One scenario on several chains: a label per chain, named after it (Table 4's rows and
    # Figure 2's lines), not one scenario whose runs on two chains would pass for two seeds.
    chains = table.groupby("label", sort=False)["ledger"].transform("nunique")
    table.loc[chains > 1, "label"] = table["label"] + " (" + table["ledger"] + ")"
    return table


def read_run_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """The tidy rows of every run in ``runs``, tagged with the run's ``path`` and ``label``."""
    frames = [read_run(run.path).metrics().assign(path=run.path, label=run.label) for run in runs.itertuples()]
    if not frames:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "path", "label"])
    return pd.concat(frames, ignore_index=True)


def write_round_rows(rows: pd.DataFrame, path: Path) -> Path:
    """The server-side rows (no single node's) with each run's ``label`` and folder name
    (``run``): what Figure 2 is drawn from, kept beside it (``bflsim figures`` redraws it)."""
    kept = rows[rows["node"].isna()].drop(columns=["node"])
    kept = kept.assign(run=[Path(p).name for p in kept["path"]]).drop(columns=["path"])
    kept.to_csv(path, index=False)
    return path


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
        .reindex(columns=["accuracy", "f1_macro", "fpr", "attack_success_rate", "elapsed_seconds"])
        .add_prefix("final_")
    )
    trained = test[(test["metric"] == "accuracy") & (test["round"] >= 1)]
    best = trained.groupby("path")["value"].max().rename("best_accuracy")
    per_round = metrics[metrics["split"] == "round"].sort_values("round")
    out = runs.set_index("path").join(last_round).join(final).join(best)
    for metric, summary in ROUND_METRICS.items():
        values = per_round[per_round["metric"] == metric].groupby("path")["value"]
        out = out.join(getattr(values, summary.over_rounds)().rename(summary.column))
    out = out.reset_index()
    out["revoked"] = out["num_nodes"] - out["active_nodes"]
    counts = ["poisoned_received", "poisoned_accepted", "poisoned_flagged", "honest_flagged"]
    out[counts] = out[counts].fillna(0.0)
    out["success_rate"] = success_rate(out["poisoned_accepted"], out["poisoned_received"])
    out["detection_precision"] = success_rate(out["poisoned_flagged"], out["poisoned_flagged"] + out["honest_flagged"])
    out["detection_recall"] = success_rate(out["poisoned_flagged"], out["poisoned_received"])
    # A run still going (or stopped) has no wall time yet; its clock so far stands in.
    out["wall_seconds"] = out["wall_seconds"].astype(float).fillna(out["final_elapsed_seconds"])
    return out.drop(columns="final_elapsed_seconds")


def success_rate(accepted: pd.Series, received: pd.Series) -> pd.Series:
    """accepted / received, NaN where nothing poisoned was received."""
    received = received.astype(float)
    return accepted.astype(float) / received.where(received > 0)


# --- Table 4 -----------------------------------------------------------------------------


TABLE4_HEAD = {
    "label": "scenario",
    "aggregator": "aggregator",
    "attack": "attack",
    "num_malicious": "malicious nodes",
    "num_nodes": "nodes",
    "n_runs": "runs",
    "final_accuracy": "accuracy",
    "final_accuracy_ci95": "accuracy 95% CI",
    "paper_accuracy": f"accuracy ({paper.PAPER})",
    "final_f1_macro": "F1 (macro)",
    "final_fpr": "FPR",
    "success_rate": "malicious update success rate",
    "paper_success_rate": f"success rate ({paper.PAPER})",
}
TABLE4_TAIL = {
    "best_accuracy": "best accuracy",
    "rounds_done": "rounds",
    "ledger": "ledger",
    "revoked": "nodes revoked",
    "wall_seconds": "wall time (s)",
    "status": "status",
}
TABLE4_FORMATS = {
    "F1 (macro)": "{:.4f}", "FPR": "{:.4f}", "best accuracy": "{:.4f}",
    f"accuracy ({paper.PAPER})": "{:.4f}", f"success rate ({paper.PAPER})": "{:.0%}",
    "malicious update success rate": "{:.1%}", "wall time (s)": "{:.0f}", "nodes revoked": "{:.0f}",
}


def table4_columns() -> dict[str, str]:
    """Table 4's columns and headers: the fixed ones around the catalogue's shown metrics."""
    shown = {s.column: s.label for s in ROUND_METRICS.values() if s.shown}
    return {**TABLE4_HEAD, **shown, **TABLE4_TAIL}


def table4(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per scenario label, in the order the runs were given.

    Where several runs (seeds) share a label, metrics are their means and the success rate
    pools their counts: sum(poisoned_accepted) / sum(poisoned_received) over all rounds of
    all its runs (NaN where no poisoned update was received).
    """
    runs = federated_runs(read_run(d) for d in run_dirs)
    outcomes = run_outcomes(runs, read_run_metrics(runs))
    spec = {
        "aggregator": ("aggregator", "first"),
        "attack": ("attack", "first"),
        "num_malicious": ("num_malicious", "first"),
        "num_nodes": ("num_nodes", "first"),
        "n_runs": ("path", "size"),
        "final_accuracy": ("final_accuracy", "mean"),
        "final_f1_macro": ("final_f1_macro", "mean"),
        "final_fpr": ("final_fpr", "mean"),
        **{s.column: (s.column, s.over_runs) for s in ROUND_METRICS.values()},
        "best_accuracy": ("best_accuracy", "mean"),
        "rounds_done": ("rounds_done", "max"),
        "ledger": ("ledger", "first"),
        "revoked": ("revoked", "mean"),
        "wall_seconds": ("wall_seconds", "mean"),
        "status": ("status", lambda s: ", ".join(dict.fromkeys(map(str, s)))),
        "rounds": ("rounds", "first"),
    }
    table = outcomes.groupby("label", sort=False).agg(**spec).reset_index()
    table["success_rate"] = success_rate(table["poisoned_accepted"], table["poisoned_received"])
    table["rounds_done"] = table["rounds_done"].astype("Int64")
    spread = over_runs(outcomes, ["label"], ["final_accuracy"]).set_index("label")["final_accuracy_ci95"]
    table["final_accuracy_ci95"] = table["label"].map(spread)
    rows = [paper.table4_row(aggregator=r.aggregator, attack=r.attack, num_nodes=r.num_nodes,
                             num_malicious=r.num_malicious, rounds=r.rounds, ledger=r.ledger)
            for r in table.itertuples()]
    table["paper_accuracy"] = [row["accuracy"] if row else float("nan") for row in rows]
    table["paper_success_rate"] = [row["success_rate"] if row else float("nan") for row in rows]
    return table[list(table4_columns())]


def table4_shown(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Table 4 as printed, and its formats: readable headers, the accuracy as mean ± 95% CI
    over the scenario's runs, the paper's value beside it, rates in percent, ``n/a`` for no attack."""
    shown = shown_with_ci(table, {"final_accuracy": "accuracy"}).drop(columns=["final_accuracy", "final_accuracy_ci95"])
    columns = {k: v for k, v in table4_columns().items() if k != "final_accuracy_ci95"}
    shown = shown.rename(columns=columns)[list(columns.values())]
    shown["aggregator"] = shown["aggregator"].map(aggregator_label)
    shown["attack"] = shown["attack"].map(attack_label)
    return shown, {**TABLE4_FORMATS, **{s.label: s.fmt for s in ROUND_METRICS.values() if s.shown}}


def table4_markdown(table: pd.DataFrame) -> str:
    """Table 4 for the README (:func:`table4_shown`)."""
    shown, formats = table4_shown(table)
    return to_markdown(shown, formats)


# --- attacker-share sweeps ---------------------------------------------------------------


def sweep_summary(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Final accuracy per (aggregator, attacker_fraction) over the complete runs.

    Columns: ``n_seeds`` (complete runs), ``n_incomplete`` (runs of that cell left out:
    running, stopped or failed), mean / std / min / max of the final test accuracy, and
    the mean over runs of the malicious update success rate. ``attrs["incomplete"]``
    lists the paths of the runs left out.
    """
    runs = federated_runs(read_run(d) for d in run_dirs)
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
        aggregator=summary["aggregator"].map(aggregator_label),
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


def is_zoo(runs: pd.DataFrame) -> bool:
    """Several attacks met several defences (more than one of each, besides no attack)."""
    attacked = runs[runs["attack"] != "none"]
    return bool(attacked["attack"].nunique() > 1 and attacked["aggregator"].nunique() > 1)


def is_sweep(runs: pd.DataFrame) -> bool:
    """Whether some aggregator was run at :data:`SWEEP_MIN_FRACTIONS` or more attacker shares."""
    if runs.empty:
        return False
    return bool(runs.groupby("aggregator")["attacker_fraction"].nunique().max() >= SWEEP_MIN_FRACTIONS)


# --- the whole report ----------------------------------------------------------------------


def write_federated_report(
    run_dirs: Iterable[str | Path],
    out_dir: str | Path,
    layout: Literal["auto", "scenarios", "sweep", "zoo"] = "auto",
) -> list[Path]:
    """Write the tables and figures of federated runs; return what was written.

    Always ``runs.csv``. Scenarios: ``table4.csv`` / ``.md`` / ``.tex``, ``figure2.png`` / ``.pdf``
    and the rows it is drawn from (``metrics.csv``, :func:`write_round_rows`)
    (accuracy per round). Sweeps: ``sweep_summary.csv`` / ``.md`` and
    ``figure_sweep.png`` / ``.pdf``. Zoos (:mod:`bflsim.report.zoo`): the attack x defence
    map. With ``layout="auto"`` the runs are a zoo when :func:`bflsim.report.zoo.is_zoo`
    says so, else a sweep when :func:`is_sweep` does.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no run folders given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = federated_runs(read_run(d) for d in run_dirs)
    written: list[Path] = []

    runs.to_csv(out_dir / "runs.csv", index=False)
    written.append(out_dir / "runs.csv")
    if layout == "zoo" or (layout == "auto" and is_zoo(runs)):
        from bflsim.report.zoo import write_zoo_report

        return written + write_zoo_report(run_dirs, out_dir)
    sweep = is_sweep(runs) if layout == "auto" else layout == "sweep"

    if not sweep:
        t4 = table4(run_dirs)
        shown, formats = table4_shown(t4)
        written += write_table(t4, shown, out_dir / "table4", formats)
        rows = read_run_metrics(runs)
        written.append(write_round_rows(rows, out_dir / "metrics.csv"))
        return written + draw_figure2(rows, out_dir)

    summary = sweep_summary(run_dirs)
    summary.to_csv(out_dir / "sweep_summary.csv", index=False)
    (out_dir / "sweep_summary.md").write_text(sweep_markdown(summary))
    written += [out_dir / "sweep_summary.csv", out_dir / "sweep_summary.md"]
    if summary["n_seeds"].sum() > 0:
        written += draw_sweep_figure(summary, out_dir)
    return written


def draw_figure2(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``figure2``: accuracy per round per scenario, from the runs' rows (or the kept ``metrics.csv``)."""
    return figures.save_figure(figures.accuracy_per_round(rows), out_dir / "figure2")


def draw_sweep_figure(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``figure_sweep``: final accuracy against the attacker share, from :func:`sweep_summary`'s table."""
    labels = {name: aggregator_label(name) for name in summary["aggregator"]}
    return figures.save_figure(figures.accuracy_vs_attackers(summary, labels=labels), out_dir / "figure_sweep")


def write_federated_confusion(runs: Iterable[Run], out_dir: str | Path) -> list[Path]:
    """The confusion matrix of each run's last evaluated global model, one figure per run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for run in runs:
        confusion = run.confusion()
        if confusion["round"].isna().all():
            raise ValueError(f"{run.path}: no per-round confusion counts (a run folder from before they were logged)")
        last = confusion[confusion["round"] == confusion["round"].max()]
        label = run.point.get("label") or run.config.name
        model = run.config.models.names[0]
        fig = figures.confusion_figure(last, model, "test",
                                       title=f"{label}\nglobal model after round {int(last['round'].iloc[0])}")
        written += figures.save_figure(fig, out_dir / f"figure3_{run.path.name}")
    return written
