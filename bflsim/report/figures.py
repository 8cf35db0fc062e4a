"""Figures as pure functions of the tidy tables (never of a live experiment).

Every figure is drawn at a print width with :mod:`bflsim.report.style` (TrueType fonts,
>= 7 pt text at print size, distinct colour, marker and line style per series, bands as 95%
confidence intervals over seeds).

- :func:`training_curves`: train / validation accuracy and loss per epoch (paper Figure 1).
- :func:`confusion_figure`: a row-normalised confusion matrix with counts (paper Figure 3).
- :func:`accuracy_per_round`: global test accuracy per federated round, per scenario (paper Figure 2).
- :func:`accuracy_vs_attackers`: final accuracy against the share of attackers, per aggregator.
- :func:`cell_heatmap`: an attack x defence map at one attacker share (the zoo).
- :func:`accuracy_under_strongest`: final accuracy against the share under each defence's
  strongest attack.
- :func:`scale_panels`: the scale benchmark's costs against the number of edge nodes.
- :func:`throughput_panels`: the throughput benchmark's sweep against its compute floor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bflsim.report.style import ci95_half_width, mean_ci95_by, new_figure, save, series


def _accuracy_band(mean: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mean -/+ half, cut to [0, 1]: an accuracy's t-interval may reach past 1, the accuracy cannot."""
    return np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0)


def _compact(count: float) -> str:
    """A count in at most four characters: 987, 9.9k, 99k, 1.2M."""
    count = round(float(count))
    if count < 1000:
        return str(count)
    if count < 10_000:
        return f"{count / 1000:.1f}k"
    if count < 1_000_000:
        return f"{count // 1000}k"
    return f"{count / 1e6:.1f}M"


def training_curves(metrics: pd.DataFrame, model: str, title: str | None = None):
    """Accuracy and loss per epoch on the train and validation splits of one model (double column).

    Where the rows come from several runs (``run_id``: seeds) each line is their mean and the
    band its 95% confidence interval, as the axis says.
    """
    from matplotlib.ticker import MaxNLocator

    rows = metrics[(metrics["model"] == model) & metrics["epoch"].notna()]
    if rows.empty:
        raise ValueError(f"no per-epoch rows for model {model!r}")
    runs = rows["run_id"].nunique() if "run_id" in rows.columns else 1
    fig, axes = new_figure("double", 2.4, ncols=2)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for k, split in enumerate(("train", "val")):
            stats = mean_ci95_by(rows[(rows["metric"] == metric) & (rows["split"] == split)].groupby("epoch")["value"])
            epochs, mean = stats.index.to_numpy(dtype=float), stats["mean"].to_numpy(dtype=float)
            style = series(k)
            ax.plot(epochs, mean, label="training" if split == "train" else "validation", **style)
            if runs > 1:
                half = stats["half"].to_numpy(dtype=float)
                low, high = _accuracy_band(mean, half) if metric == "accuracy" else (mean - half, mean + half)
                ax.fill_between(epochs, low, high, color=style["color"], alpha=0.18, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric + (f" (mean, 95% CI, {runs} runs)" if runs > 1 else ""))
        ax.legend()
    fig.suptitle(title or f"{model}: accuracy and loss per epoch")
    return fig


def confusion_figure(confusion: pd.DataFrame, model: str, split: str = "test", title: str | None = None):
    """Row-normalised confusion matrix; each cell prints its count (compact: 12k).

    One column wide up to 6 classes, else the page's width.
    """
    rows = confusion[(confusion["model"] == model) & (confusion["split"] == split)]
    if rows.empty:
        raise ValueError(f"no confusion counts for model {model!r} on split {split!r}")
    order = list(dict.fromkeys(rows["true"]))
    counts = (
        rows.pivot_table(index="true", columns="predicted", values="count", aggfunc="sum")
        .reindex(index=order, columns=order)
        .fillna(0)
        .to_numpy()
    )
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    wide = len(order) > 6
    fig, ax = new_figure("double" if wide else "column", 6.6 if wide else 3.3)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for t in range(len(order)):
        for p in range(len(order)):
            ax.text(p, t, _compact(counts[t, p]), ha="center", va="center", fontsize=7,
                    color="white" if share[t, p] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title or f"{model}: confusion matrix ({split})")
    return fig


def save_figure(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (:func:`bflsim.report.style.save`); return the paths."""
    return save(fig, stem, formats)


def accuracy_per_round(metrics_with_labels: pd.DataFrame, title: str | None = None):
    """Global test accuracy per round, one line per scenario ``label`` (paper Figure 2; one column).

    ``metrics_with_labels`` is the tidy metric table with a ``label`` column. Round 0 is the
    initial global model. Where several runs (seeds) share a label the line is their mean
    and the band its 95% confidence interval. The legend sits below the axes, one scenario
    a line, so long scenario names never cover a curve.
    """
    rows = metrics_with_labels[
        (metrics_with_labels["split"] == "test")
        & (metrics_with_labels["metric"] == "accuracy")
        & metrics_with_labels["round"].notna()
        & metrics_with_labels["node"].isna()
    ]
    if rows.empty:
        raise ValueError("no per-round test accuracy rows")
    labels = list(dict.fromkeys(rows["label"]))
    fig, ax = new_figure("column", 2.3 + 0.15 * len(labels))
    seeds = 1
    for k, label in enumerate(labels):
        stats = mean_ci95_by(rows[rows["label"] == label].groupby("round")["value"])
        rounds = stats.index.to_numpy(dtype=float)
        style = series(k)
        ax.plot(rounds, stats["mean"].to_numpy(), label=label, markevery=max(1, len(rounds) // 10), **style)
        if stats["n"].max() > 1:
            seeds = max(seeds, int(stats["n"].max()))
            low, high = _accuracy_band(stats["mean"].to_numpy(dtype=float), stats["half"].to_numpy(dtype=float))
            ax.fill_between(rounds, low, high, color=style["color"], alpha=0.18, lw=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round")
    ax.set_ylabel("global test accuracy" + (f"\n(mean, 95% CI, {seeds} seeds)" if seeds > 1 else ""))
    fig.legend(loc="outside lower center", ncol=1)
    ax.set_title(title or "Global model accuracy per round")
    return fig


def accuracy_vs_attackers(
    summary: pd.DataFrame, title: str | None = None, *, labels: dict[str, str] | None = None
):
    """Final test accuracy against the attacker share, one line per aggregator (one column).

    ``summary`` has one row per (aggregator, attacker_fraction) with ``accuracy_mean``,
    ``accuracy_std`` and ``n_seeds`` (as :func:`bflsim.report.federated.sweep_summary` writes
    it). The line is the mean over seeds; the band its 95% confidence interval.
    ``labels`` maps aggregator names to legend text.
    """
    rows = summary.dropna(subset=["accuracy_mean"])
    if rows.empty:
        raise ValueError("no (aggregator, attacker fraction) cell has a complete run")
    labels = labels or {}
    aggregators = list(dict.fromkeys(rows["aggregator"]))
    fig, ax = new_figure("column", 2.4 + 0.08 * len(aggregators))
    seeds = int(rows["n_seeds"].max())
    for k, aggregator in enumerate(aggregators):
        cells = rows[rows["aggregator"] == aggregator].sort_values("attacker_fraction")
        percent = 100 * cells["attacker_fraction"].to_numpy(dtype=float)
        style = series(k)
        ax.plot(percent, cells["accuracy_mean"].to_numpy(), label=labels.get(aggregator, aggregator), **style)
        half = ci95_half_width(cells["accuracy_std"], cells["n_seeds"])
        if np.isfinite(half).any():
            low, high = _accuracy_band(cells["accuracy_mean"].to_numpy(dtype=float), half)
            ax.fill_between(percent, low, high, color=style["color"], alpha=0.15, lw=0)
    ticks = sorted(set(100 * rows["attacker_fraction"].astype(float)))
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.set_xlabel("malicious edge nodes (%)")
    ax.set_ylabel("final test accuracy" + (f"\n(mean, 95% CI, {seeds} seeds)" if seeds > 1 else ""))
    fig.legend(loc="outside lower center", ncol=min(3, len(aggregators)))
    ax.set_title(title or "Final accuracy against the share of attackers")
    return fig


def cell_heatmap(cells: pd.DataFrame, value: str, title: str, labels: dict, *, vmin: float, vmax: float):
    """One attacker share's map (double column): rows attacks, columns defences, colour and
    text the mean ``<value>_mean`` over seeds (the spread is in the summary table)."""
    attacks = list(dict.fromkeys(cells["attack"]))
    defences = list(dict.fromkeys(cells["defence"]))
    means = cells.pivot(index="attack", columns="defence", values=f"{value}_mean").reindex(index=attacks,
                                                                                         columns=defences)
    fig, ax = new_figure("double", 1.6 + 0.2 * len(attacks))
    image = ax.imshow(means.to_numpy(dtype=float), cmap="Reds", vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)
    for i in range(len(attacks)):
        for j in range(len(defences)):
            mean = means.iat[i, j]
            if pd.notna(mean):
                dark = (mean - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, f"{mean:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(defences)), [labels["defence"](d) for d in defences], rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), [labels["attack"](a) for a in attacks])
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label=value.replace("_", " "))
    ax.set_title(title)
    return fig


def accuracy_under_strongest(curves: pd.DataFrame, labels: dict):
    """Final accuracy (mean, 95% CI over seeds as error bars) against the attacker share, one
    line per defence under its strongest attack; one panel per partition (double column)."""
    partitions = sorted(curves["partition"].unique())
    defences = list(dict.fromkeys(curves["defence"]))
    fig, axes = new_figure("double", 3.0 + 0.16 * ((len(defences) + 1) // 2), ncols=len(partitions),
                           squeeze=False, sharey=True)
    for ax, partition in zip(axes[0], partitions, strict=True):
        part = curves[curves["partition"] == partition]
        for defence, line in part.groupby("defence", sort=False):
            line = line.sort_values("attacker_fraction")
            attack = line["attack"].iloc[0]
            half = np.nan_to_num(ci95_half_width(line["accuracy_std"], line["n_seeds"]))
            mean = line["accuracy_mean"].to_numpy(dtype=float)
            low, high = _accuracy_band(mean, half)
            ax.errorbar(line["attacker_fraction"], mean, yerr=[mean - low, high - mean], capsize=2,
                        label=f"{labels['defence'](defence)} / {labels['attack'](attack)}",
                        **series(defences.index(defence)))
        ax.set_xlabel("attacker share")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
        ax.set_title(str(partition))
    seeds = int(curves["n_seeds"].max())
    axes[0][0].set_ylabel("final accuracy" + (f" (mean, 95% CI, {seeds} seeds)" if seeds > 1 else ""))
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=2)
    fig.suptitle("Final accuracy under each defence's strongest attack")
    return fig


def scale_panels(points: pd.DataFrame, ledgers: tuple[str, ...] = ("none", "per-node", "batched")):
    """The scale suite's points (``scale_points.csv``): set-up, round, peak memory, gas per round
    and audit time against the number of edge nodes, one line per ledger (double column)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = [("setup_seconds", "set-up (s)"), ("round_seconds", "round (s)"),
              ("peak_pss_bytes", "peak memory (GiB)"), ("gas_per_round", "gas per round"), ("audit_seconds", "audit (s)")]
    fig, grid = new_figure("double", 4.2, nrows=2, ncols=3)
    axes = grid.flatten()
    for ax, (column, label) in zip(axes, panels, strict=False):
        for k, ledger in enumerate(ledgers):
            rows = points[(points["ledger"] == ledger) & points[column].notna()].sort_values("nodes")
            if rows.empty or (column in ("gas_per_round", "audit_seconds") and ledger == "none"):
                continue
            values = rows[column] / 2**30 if column == "peak_pss_bytes" else rows[column]
            ax.plot(rows["nodes"], values, label=ledger, **series(k))
        ax.set_xscale("log")
        if column in ("setup_seconds", "audit_seconds"):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(bottom=0)
        if column == "gas_per_round":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
        ax.set_xlabel("edge nodes")
        ax.set_ylabel(label)
    handles, names = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    axes[-1].legend(handles, [f"ledger: {name}" for name in names], loc="center")
    return fig


def throughput_panels(points: pd.DataFrame, nodes: pd.DataFrame):
    """The throughput benchmark (double column): sweep points completed against wall time,
    beside the compute floor (left, ``throughput_points.csv``); one point's wall time against
    its number of edge nodes (right, ``throughput_nodes.csv``)."""
    fig, (left, right) = new_figure("double", 2.6, ncols=2)
    floor = points["floor_seconds"].cumsum().to_numpy()
    left.plot(range(1, len(floor) + 1), floor, label="compute floor (a)", markevery=max(1, len(floor) // 8),
              **series(6))
    styles = {"parallel": (0, "bflsim sweep, auto"), "sequential": (1, "bflsim sweep, 1 at a time")}
    for label, (k, name) in styles.items():
        column = f"{label}_finished_after"
        if column in points:
            done = points[column].dropna().sort_values().to_numpy()
            left.plot(range(1, len(done) + 1), done, label=name, markevery=max(1, len(done) // 8), **series(k))
    left.set_xlabel("sweep points completed")
    left.set_ylabel("wall time (s)")
    left.legend()
    if not nodes.empty:
        right.plot(nodes["nodes"], nodes["bflsim_wall_seconds"], label="bflsim run (fresh process)", **series(0))
        right.plot(nodes["nodes"], nodes["floor_seconds"], label="compute floor (a)", **series(6))
        right.set_xlabel("edge nodes (one sweep point)")
        right.set_ylabel("wall time (s)")
        right.legend()
    return fig
