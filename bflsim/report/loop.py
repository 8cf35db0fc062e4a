"""The closed loop's report (issue 14): what each global model let the registry quarantine.

From the ``loop/devices.csv`` of federated runs with ``[loop]``: a table with, per scenario
label (mean ± 95% CI over its runs, the seeds), the compromised devices quarantined and
missed, the benign devices wrongly quarantined, the compromised devices quarantined before
their attack began (on false alarms), the median time from an attack's start to its
device's quarantine (over the devices caught attacking), what the global model the edge
nodes detected with flags on the test split (the loop's attack class, normal flows), the
alerts per hour and how many were disputed as false, the edge nodes revoked during the loop, the alert gas per hour of traffic, and the
test accuracy of the global model the edge nodes detected with; and a figure of the share of
compromised and of benign devices quarantined over the traffic's time.

The tidy rows (``loop_devices.csv``: one row per run and device, with the run's label, and
``loop_runs.csv``) are written beside them, so ``bflsim figures`` redraws both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.report.style import mean_ci95_by, new_figure, save, series
from bflsim.report.tables import over_runs, shown_with_ci, write_table
from bflsim.runfolder import Run

LOOP_SUMMARY = {
    "model_accuracy": "model accuracy",
    "attack_class_detected": "attack-class flows flagged",
    "normal_flagged": "normal flows flagged",
    "quarantined_compromised": "compromised quarantined",
    "quarantined_before_attack": "of them before their attack began",
    "missed_compromised": "compromised missed",
    "quarantined_benign": "benign quarantined",
    "median_seconds_to_quarantine": "median time from attack to quarantine (s)",
    "alerts_per_hour": "alerts per hour",
    "alerts_disputed": "false alerts disputed",
    "edge_nodes_revoked": "edge nodes revoked",
    "alert_gas_per_hour": "alert gas per hour",
}
FORMATS = {"model_accuracy": "{:.4f}", "attack_class_detected": "{:.3f}", "normal_flagged": "{:.3f}",
           "median_seconds_to_quarantine": "{:.0f}", "alert_gas_per_hour": "{:,.0f}"}


def loop_rows(runs: Iterable[Run], labels: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``loop_devices``, ``loop_runs``): every device of every run with ``[loop]``, and one
    row per run with its manifest's loop summary; ``labels`` maps a run's path to its label."""
    devices, summaries = [], []
    for run in runs:
        entry = run.manifest.get("loop")
        path = run.path / "loop" / "devices.csv"
        if entry is None or not path.is_file():
            continue
        label = labels.get(str(run.path), run.config.name)
        loop = run.config.loop
        rows = pd.read_csv(path).assign(run_id=run.run_id, label=label,
                                        duration=loop.duration_seconds if loop else np.nan)
        devices.append(rows)
        summaries.append({"run_id": run.run_id, "label": label, "model_round": entry.get("model_round"),
                          **{k: entry.get(k) for k in LOOP_SUMMARY},
                          **_delays(rows),
                          "model_accuracy": _model_accuracy(run, entry.get("model_round")),
                          **_flagged(run, entry.get("model_round"), rows),
                          "alerts_disputed": entry.get("alerts", {}).get("disputed"),
                          "edge_nodes_revoked": _edge_nodes_revoked(run.path / "loop" / "slices.csv"),
                          "alerts": sum(entry.get("alerts", {}).values())})
    if not devices:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(devices, ignore_index=True), pd.DataFrame(summaries)


def _delays(devices: pd.DataFrame) -> dict[str, float]:
    """Compromised devices quarantined before their attack began (on false alarms, from the
    normal flows they sent until then), and the median time from the attack's start to the
    quarantine over the others, the ones caught attacking (none caught: NaN)."""
    compromised = devices[devices["compromised"] == 1]
    delays = pd.to_numeric(compromised["quarantined_at"], errors="coerce") - pd.to_numeric(compromised["start"])
    caught = delays[delays >= 0]
    return {"quarantined_before_attack": int((delays < 0).sum()),
            "median_seconds_to_quarantine": float(caught.median()) if len(caught) else np.nan}


def _at_round(rows: pd.DataFrame, model_round: int | None) -> pd.DataFrame:
    """The test-split rows of round ``model_round`` (none: the last round logged)."""
    rows = rows[rows["split"] == "test"]
    rounds = pd.to_numeric(rows["round"], errors="coerce")
    return rows[rounds == (rounds.max() if model_round is None else model_round)]


def _model_accuracy(run: Run, model_round: int | None) -> float:
    """Test accuracy of the global model the edge nodes detected with (round ``model_round``;
    none: the last round logged)."""
    rows = run.metrics()
    chosen = _at_round(rows[rows["metric"] == "accuracy"], model_round)
    return float(chosen["value"].iloc[-1]) if len(chosen) else np.nan


def _flagged(run: Run, model_round: int | None, devices: pd.DataFrame) -> dict[str, float]:
    """What the model the edge nodes detected with does to the flows they see, on the test
    split (``confusion.csv`` at that round): the share of the loop's attack class it calls an
    attack (any attack class), and the share of normal flows it calls one."""
    names = run.manifest.get("data", {}).get("class_names") or []
    normal = run.manifest.get("data", {}).get("normal_class", 0)
    classes = pd.to_numeric(devices.loc[devices["compromised"] == 1, "attack_class"], errors="coerce").dropna()
    if not names or classes.empty or not (run.path / "confusion.csv").is_file():
        return {"attack_class_detected": np.nan, "normal_flagged": np.nan}
    table = _at_round(run.confusion(), model_round)

    def flagged(name: str) -> float:
        rows = table[table["true"] == name]
        total = rows["count"].sum()
        return float(rows.loc[rows["predicted"] != names[normal], "count"].sum() / total) if total else np.nan

    return {"attack_class_detected": flagged(names[int(classes.iloc[0])]), "normal_flagged": flagged(names[normal])}


def _edge_nodes_revoked(slices_csv: Path) -> int:
    """Edge nodes that scored the first slice but not the last: the registry revoked them
    during the loop, and their devices went unwatched from then on."""
    slices = pd.read_csv(slices_csv)
    first, last = slices["slice"].min(), slices["slice"].max()
    return len(set(slices.loc[slices["slice"] == first, "node"]) - set(slices.loc[slices["slice"] == last, "node"]))


def loop_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over each label's runs of :data:`LOOP_SUMMARY`."""
    values = summary.reindex(columns=["label", *LOOP_SUMMARY])
    for column in LOOP_SUMMARY:
        values[column] = pd.to_numeric(values[column], errors="coerce")
    return over_runs(values, ["label"], list(LOOP_SUMMARY))


def quarantined_over_time(devices: pd.DataFrame, points: int = 121) -> pd.DataFrame:
    """Per run and time: the share of its compromised and of its benign devices quarantined by then."""
    out = []
    for (run_id, label), group in devices.groupby(["run_id", "label"], sort=False):
        grid = np.linspace(0.0, float(group["duration"].iloc[0]), points)
        when = pd.to_numeric(group["quarantined_at"], errors="coerce").to_numpy(dtype=float)
        for kind, mask in (("compromised", group["compromised"] == 1), ("benign", group["compromised"] == 0)):
            chosen = when[mask.to_numpy()]
            if len(chosen) == 0:
                continue
            share = [(np.nan_to_num(chosen, nan=np.inf) <= t).mean() for t in grid]
            out += [{"run_id": run_id, "label": label, "kind": kind, "time": t, "share": s} for t, s in zip(grid, share)]
    return pd.DataFrame(out)


def quarantine_figure(devices: pd.DataFrame):
    """Two panels (page width): the share of compromised devices quarantined over time, and of
    benign devices; one line per scenario label, its band the 95% CI over the label's runs."""
    curves = quarantined_over_time(devices)
    fig, axes = new_figure("double", 2.8, ncols=2)
    labels = list(dict.fromkeys(curves["label"]))
    runs = curves.groupby("label")["run_id"].nunique().max() if not curves.empty else 1
    starts = (pd.to_numeric(devices.loc[devices["compromised"] == 1, "start"], errors="coerce").dropna().unique()
              if "start" in devices else [])  # rows without it: no marker
    for ax, kind, title in zip(axes, ("compromised", "benign"), ("compromised devices", "benign devices (wrongly)"),
                               strict=True):
        for k, label in enumerate(labels):
            rows = curves[(curves["label"] == label) & (curves["kind"] == kind)]
            if rows.empty:
                continue
            stats = mean_ci95_by(rows.groupby("time")["share"])
            times, mean = stats.index.to_numpy(dtype=float), stats["mean"].to_numpy(dtype=float)
            style = series(k)
            ax.plot(times, mean, label=label, markevery=max(1, len(times) // 8), **style)
            if runs > 1:
                half = np.nan_to_num(stats["half"].to_numpy(dtype=float))
                ax.fill_between(times, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1), color=style["color"],
                                alpha=0.18, lw=0)
        if kind == "compromised" and len(starts) == 1:  # every compromised device turns at the same time
            ax.axvline(starts[0], color="0.4", lw=0.8, ls=":")
            ax.annotate("attacks begin", (starts[0], 0.6), xytext=(-2, 0), textcoords="offset points",
                        ha="right", va="center", rotation=90, color="0.3")
        ax.set_xlabel("traffic time (s)")
        ax.set_ylabel("share quarantined")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(3, max(1, len(labels))))
    fig.suptitle("Devices quarantined over time" + (f" (mean, 95% CI over {runs} runs)" if runs > 1 else ""))
    return fig


def draw_loop(devices: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``loop_table`` (CSV, Markdown, LaTeX) and ``quarantine`` (PNG, PDF) from the tidy rows."""
    table = loop_table(summary)
    shown = table
    for column, header in LOOP_SUMMARY.items():
        shown = shown_with_ci(shown, {column: header}, fmt=FORMATS.get(column, "{:.1f}"))
    shown = shown.rename(columns={"n_runs": "runs"})[["label", "runs", *LOOP_SUMMARY.values()]]
    written = write_table(table, shown, out_dir / "loop_table")
    written += save(quarantine_figure(devices), out_dir / "quarantine")
    return written


def write_loop_report(runs: Iterable[Run], labels: dict[str, str], out_dir: Path) -> list[Path]:
    """The loop's rows, table and figure for the runs that have a loop; nothing without one."""
    devices, summary = loop_rows(runs, labels)
    if devices.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    devices.to_csv(out_dir / "loop_devices.csv", index=False)
    summary.to_csv(out_dir / "loop_runs.csv", index=False)
    return [out_dir / "loop_devices.csv", out_dir / "loop_runs.csv", *draw_loop(devices, summary, out_dir)]
