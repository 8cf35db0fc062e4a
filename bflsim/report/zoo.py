"""The attack x defence map of a zoo of federated runs (issue 11): tables and heatmaps.

A zoo is many runs that differ by attack, defence, attacker share, partition and seeds
(``experiments/zoo.toml``). Every run is compared with its *baseline*: the run without
attack that has the same defence (name and parameters), partition and seeds. Per run:

- ``accuracy_drop`` = baseline final accuracy - final accuracy (positive: the attack hurt);
- ``attack_success_rate`` (targeted and backdoor attacks): the share of the attack's test
  rows (triggered, or of the source classes) the final model puts in the attacker's class
  (a clean model already puts some there: its false negatives on those rows);
- detection precision / recall of the rows the defence judged outliers, pooled over rounds,
  and the mean poisoned weight in the aggregate.

:func:`zoo_summary` gives the mean, standard deviation and count over seeds of each cell
(attack, defence, share, partition). Figures (:func:`draw_zoo_figures`, from the two tables
alone): one heatmap per partition and share (rows attacks, columns defences; colour and text
the mean accuracy drop; the seed spread is in ``zoo_summary``), the same for the attack success rate of the targeted attacks, and the final
accuracy against the attacker share under the strongest attack per defence.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bflsim.report import figures
from bflsim.report.federated import (
    aggregator_label,
    attack_label,
    federated_runs,
    read_run_metrics,
    run_outcomes,
)
from bflsim.report.markdown import to_markdown
from bflsim.runfolder import read_run

CELL = ["attack", "defence", "attacker_fraction", "partition"]
SAME_BASELINE = ["defence", "partition", "train_seed", "federation_seed"]
VALUES = ["final_accuracy", "accuracy_drop", "attack_success_rate", "detection_precision", "detection_recall",
          "mean_poisoned_weight"]


def zoo_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: its cell, seeds, outcomes, and the drop against its baseline."""
    runs = federated_runs(read_run(d) for d in run_dirs)
    out = run_outcomes(runs, read_run_metrics(runs))
    out["attack"] = out["attack_variant"]  # IPM with epsilon 5 is its own row
    out.loc[out["attack"] == "none", "attacker_fraction"] = 0.0
    clean = out[(out["attack"] == "none") & (out["status"] == "complete")]
    baseline = clean.set_index(SAME_BASELINE)[["final_accuracy"]]
    baseline = baseline[~baseline.index.duplicated(keep="last")].add_prefix("baseline_")
    out = out.join(baseline, on=SAME_BASELINE)
    out["accuracy_drop"] = out["baseline_final_accuracy"] - out["final_accuracy"]
    out["attack_success_rate"] = out["final_attack_success_rate"]
    return out


def zoo_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of every value per cell, complete runs only."""
    done = table[(table["status"] == "complete") & (table["attack"] != "none")]
    grouped = done.groupby(CELL, sort=False)[VALUES]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary["n_seeds"] = done.groupby(CELL, sort=False).size()
    return summary.reset_index()


def zoo_markdown(summary: pd.DataFrame) -> str:
    """The accuracy drop (mean +- std over seeds) per attack and defence, one table per
    partition and share."""
    parts = []
    for (partition, share), cell in summary.groupby(["partition", "attacker_fraction"], sort=True):
        order = {"index": list(dict.fromkeys(cell["attack"])), "columns": list(dict.fromkeys(cell["defence"]))}
        grid = cell.pivot(index="attack", columns="defence", values="accuracy_drop_mean").reindex(**order)
        spread = cell.pivot(index="attack", columns="defence", values="accuracy_drop_std").reindex(**order)
        shown = grid.map(lambda v: "" if pd.isna(v) else f"{v:+.3f}")
        shown = shown.where(spread.isna(), shown + spread.map(lambda v: f" ± {v:.3f}" if pd.notna(v) else ""))
        shown.index = [_attack_label(a) for a in shown.index]
        shown.columns = [_defence_label(d) for d in shown.columns]
        parts.append(f"### Accuracy drop, {partition}, {share:.0%} attackers\n\n"
                     + to_markdown(shown.reset_index(names="attack")))
    return "\n\n".join(parts) + "\n"


def defence_table(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per defence: its no-attack accuracy per partition (mean over seeds), the cell
    where it lost most (attack, share, partition, mean drop, seed spread), and its detection
    precision / recall and poisoned weight averaged over the attacked cells."""
    clean = table[(table["attack"] == "none") & (table["status"] == "complete")]
    baseline = clean.pivot_table(index="defence", columns="partition", values="final_accuracy", aggfunc="mean")
    baseline.columns = [f"no attack, {c}" for c in baseline.columns]
    worst = summary.loc[summary.groupby("defence", sort=False)["accuracy_drop_mean"].idxmax()].set_index("defence")
    worst = pd.DataFrame({
        "worst attack": worst["attack"].map(_attack_label),
        "at": worst["attacker_fraction"].map("{:.0%}".format) + ", " + worst["partition"],
        "drop": worst["accuracy_drop_mean"], "drop std": worst["accuracy_drop_std"],
    })
    detection = summary.groupby("defence", sort=False)[
        ["detection_precision_mean", "detection_recall_mean", "mean_poisoned_weight_mean"]].mean()
    detection.columns = ["detection precision", "detection recall", "poisoned weight"]
    out = baseline.join(worst, how="right").join(detection).reset_index(names="defence")
    out["defence"] = out["defence"].map(_defence_label)
    return out


def strongest_attacks(summary: pd.DataFrame) -> pd.Series:
    """Per defence, the attack with the largest mean accuracy drop over shares and partitions."""
    mean_drop = summary.groupby(["defence", "attack"])["accuracy_drop_mean"].mean()
    return mean_drop.groupby(level="defence").idxmax().map(lambda pair: pair[1])


def write_zoo_report(run_dirs: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    """``zoo_runs.csv``, ``zoo_summary.csv`` / ``.md``, the heatmaps and the strongest-attack figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = zoo_runs(run_dirs)
    summary = zoo_summary(table)
    written = [out_dir / "zoo_runs.csv", out_dir / "zoo_summary.csv", out_dir / "zoo_summary.md"]
    table.drop(columns=["path"]).to_csv(written[0], index=False)
    summary.to_csv(written[1], index=False)
    defences = defence_table(table, summary)
    defences.to_csv(out_dir / "zoo_defences.csv", index=False)
    formats = {c: "{:.4f}" for c in defences.columns if c.startswith("no attack")}
    formats |= {"drop": "{:+.3f}", "drop std": "{:.3f}", "detection precision": "{:.2f}", "detection recall": "{:.2f}",
                "poisoned weight": "{:.3f}"}
    (out_dir / "zoo_defences.md").write_text(to_markdown(defences, formats))
    written += [out_dir / "zoo_defences.csv", out_dir / "zoo_defences.md"]
    written[2].write_text(zoo_markdown(summary))
    return written + draw_zoo_figures(table, summary, out_dir)


def draw_zoo_figures(table: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The heatmaps (one per partition and attacker share) and the strongest-attack figure, from
    the run table (``zoo_runs.csv``) and the summary (``zoo_summary.csv``)."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    if summary.empty:
        return written
    labels = {"attack": _attack_label, "defence": _defence_label}
    targeted = summary[summary["attack_success_rate_mean"].notna()]
    for (partition, share), cells in summary.groupby(["partition", "attacker_fraction"], sort=True):
        slug = str(partition).replace("(", "-").replace(")", "").replace(".", "_")  # dirichlet-0_5
        slug += f"_{round(100 * share)}pct"
        fig = figures.cell_heatmap(cells, "accuracy_drop",
                                   f"Accuracy drop (no attack - attacked), {partition}, {share:.0%} attackers",
                                   labels, vmin=-0.05, vmax=0.5)
        written += figures.save_figure(fig, out_dir / f"heatmap_accuracy_drop_{slug}")
        aimed = targeted[(targeted["partition"] == partition) & (targeted["attacker_fraction"] == share)]
        if not aimed.empty:
            fig = figures.cell_heatmap(aimed, "attack_success_rate",
                                       f"Attack success rate, {partition}, {share:.0%} attackers", labels,
                                       vmin=0.0, vmax=1.0)
            written += figures.save_figure(fig, out_dir / f"heatmap_attack_success_{slug}")
    curves = _strongest_curves(table, strongest_attacks(summary))
    if not curves.empty:
        fig = figures.accuracy_under_strongest(curves, labels)
        written += figures.save_figure(fig, out_dir / "figure_strongest")
    return written


def _strongest_curves(table: pd.DataFrame, strongest: pd.Series) -> pd.DataFrame:
    """Final accuracy per defence and share (0: its baseline) under its strongest attack."""
    done = table[table["status"] == "complete"]
    rows = []
    for defence, attack in strongest.items():
        runs = done[(done["defence"] == defence) & done["attack"].isin([attack, "none"])]
        for (partition, share), cell in runs.groupby(["partition", "attacker_fraction"]):
            rows.append({"defence": defence, "attack": attack, "partition": partition, "attacker_fraction": share,
                         "accuracy_mean": cell["final_accuracy"].mean(), "accuracy_std": cell["final_accuracy"].std(),
                         "n_seeds": len(cell)})
    return pd.DataFrame(rows)


def _defence_label(defence: str) -> str:
    name, _, params = defence.partition(" (")
    return aggregator_label(name) + (f" ({params}" if params else "")


def _attack_label(attack: str) -> str:
    name, _, params = attack.partition(" (")
    return attack_label(name) + (f" ({params}" if params else "")
