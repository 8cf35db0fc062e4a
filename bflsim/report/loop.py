"""The closed loop's report (issue 14): what each global model let the registry quarantine.

From the ``loop/devices.csv`` of federated runs with ``[loop]``: a table with, per scenario
label (mean ± 95% CI over its runs, the seeds), the compromised devices quarantined and
missed, the benign devices wrongly quarantined, the median time from a compromise to its
quarantine, and the alerts and alert gas per hour of traffic; and a figure of the share of
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
    "quarantined_compromised": "compromised quarantined",
    "missed_compromised": "compromised missed",
    "quarantined_benign": "benign quarantined",
    "median_seconds_to_quarantine": "median time to quarantine (s)",
    "alerts_per_hour": "alerts per hour",
    "alert_gas_per_hour": "alert gas per hour",
}


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
                          **{k: entry.get(k) for k in LOOP_SUMMARY}, "alerts": sum(entry.get("alerts", {}).values())})
    if not devices:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(devices, ignore_index=True), pd.DataFrame(summaries)


def loop_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over each label's runs of :data:`LOOP_SUMMARY`."""
    values = summary[["label", *LOOP_SUMMARY]].copy()
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
    shown = shown_with_ci(table, LOOP_SUMMARY, fmt="{:.2f}")
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
