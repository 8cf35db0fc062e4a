"""Figures as pure functions of the tidy tables (never of a live experiment).

- :func:`training_curves`: train / validation accuracy and loss per epoch (paper Figure 1).
- :func:`confusion_figure`: a row-normalised confusion matrix with counts (paper Figure 3).
- :func:`accuracy_per_round`: global test accuracy per federated round, per scenario (paper Figure 2).
- :func:`accuracy_vs_attackers`: final accuracy against the share of attackers, per aggregator.
- :func:`cell_heatmaps`: an attack x defence map, one panel per attacker share (the zoo).
- :func:`accuracy_under_strongest`: final accuracy against the share under each defence's
  strongest attack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(metrics: pd.DataFrame, model: str, title: str | None = None):
    """Accuracy and loss per epoch on the train and validation splits of one model."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rows = metrics[(metrics["model"] == model) & metrics["epoch"].notna()]
    if rows.empty:
        raise ValueError(f"no per-epoch rows for model {model!r}")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for split, style in (("train", "-o"), ("val", "--s")):
            curve = rows[(rows["metric"] == metric) & (rows["split"] == split)].sort_values("epoch")
            label = "training" if split == "train" else "validation"
            ax.plot(curve["epoch"], curve["value"], style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or f"{model}: training curves")
    return fig


def confusion_figure(confusion: pd.DataFrame, model: str, split: str = "test", title: str | None = None):
    """Row-normalised confusion matrix; each cell also prints its count."""
    plt = _pyplot()
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
    size = max(3.5, 0.55 * len(order) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), constrained_layout=True)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    small = len(order) > 8
    for t in range(len(order)):
        for p in range(len(order)):
            ax.text(
                p, t, f"{int(counts[t, p])}", ha="center", va="center", fontsize=6 if small else 8,
                color="white" if share[t, p] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title or f"{model} ({split})")
    return fig


def save_figure(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; return the paths."""
    plt = _pyplot()
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def accuracy_per_round(metrics_with_labels: pd.DataFrame, title: str | None = None):
    """Global test accuracy per round, one line per scenario ``label`` (paper Figure 2).

    ``metrics_with_labels`` is the tidy metric table with a ``label`` column. Round 0 is
    the initial global model. Where several runs (seeds) share a label the line is their
    mean and a shaded band spans their min..max.
    """
    plt = _pyplot()
    rows = metrics_with_labels[
        (metrics_with_labels["split"] == "test")
        & (metrics_with_labels["metric"] == "accuracy")
        & metrics_with_labels["round"].notna()
        & metrics_with_labels["node"].isna()
    ]
    if rows.empty:
        raise ValueError("no per-round test accuracy rows")
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    banded = False
    for label in dict.fromkeys(rows["label"]):
        per_round = rows[rows["label"] == label].groupby("round")["value"]
        mean, low, high = per_round.mean(), per_round.min(), per_round.max()
        (line,) = ax.plot(mean.index, mean.to_numpy(), "-o", markersize=3, label=label)
        if per_round.size().max() > 1:
            ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=line.get_color(), alpha=0.2, lw=0)
            banded = True
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round")
    ax.set_ylabel("global test accuracy" + ("\n(mean, band min..max over runs)" if banded else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "Global model accuracy per round")
    return fig


def accuracy_vs_attackers(
    summary: pd.DataFrame, title: str | None = None, *, labels: dict[str, str] | None = None
):
    """Final test accuracy against the attacker share, one line per aggregator.

    ``summary`` has one row per (aggregator, attacker_fraction) with ``accuracy_mean``,
    ``accuracy_min`` and ``accuracy_max`` over seeds (as :func:`bflsim.report.federated.sweep_summary`
    writes it). The line is the mean over seeds; the shaded band spans min..max.
    ``labels`` maps aggregator names to legend text.
    """
    plt = _pyplot()
    rows = summary.dropna(subset=["accuracy_mean"])
    if rows.empty:
        raise ValueError("no (aggregator, attacker fraction) cell has a complete run")
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    for aggregator in dict.fromkeys(rows["aggregator"]):
        cells = rows[rows["aggregator"] == aggregator].sort_values("attacker_fraction")
        percent = 100 * cells["attacker_fraction"].to_numpy(dtype=float)
        (line,) = ax.plot(
            percent, cells["accuracy_mean"].to_numpy(), "-o", markersize=4, label=labels.get(aggregator, aggregator)
        )
        ax.fill_between(
            percent, cells["accuracy_min"].to_numpy(), cells["accuracy_max"].to_numpy(),
            color=line.get_color(), alpha=0.2, lw=0,
        )
    ax.set_xticks(sorted(set(100 * rows["attacker_fraction"].astype(float))))
    ax.set_xlabel("malicious edge nodes (%)")
    ax.set_ylabel("final test accuracy\n(mean over seeds, band min..max)")
    ax.grid(alpha=0.3)
    ax.legend(title="aggregator")
    ax.set_title(title or "Final accuracy against the share of attackers")
    return fig


def cell_heatmaps(summary: pd.DataFrame, value: str, title: str, labels: dict, *, vmin: float, vmax: float):
    """One panel per attacker share, stacked: rows attacks, columns defences, colour ``<value>_mean``;
    each cell prints the mean and, below it, the standard deviation over seeds."""
    plt = _pyplot()
    shares = sorted(summary["attacker_fraction"].unique())
    attacks = list(dict.fromkeys(summary["attack"]))
    defences = list(dict.fromkeys(summary["defence"]))
    width = 2.0 + 0.62 * len(defences)
    height = 0.34 * len(attacks) + 0.5
    fig, axes = plt.subplots(len(shares), 1, figsize=(width, height * len(shares) + 1.6),
                             constrained_layout=True, squeeze=False)
    axes = axes[:, 0]
    image = None
    for row, (ax, share) in enumerate(zip(axes, shares)):
        cell = summary[summary["attacker_fraction"] == share]
        means = cell.pivot(index="attack", columns="defence", values=f"{value}_mean")
        spread = cell.pivot(index="attack", columns="defence", values=f"{value}_std")
        means = means.reindex(index=attacks, columns=defences)
        spread = spread.reindex(index=attacks, columns=defences)
        image = ax.imshow(means.to_numpy(dtype=float), cmap="Reds", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defences)):
                mean, std = means.iat[i, j], spread.iat[i, j]
                if pd.isna(mean):
                    continue
                text = f"{mean:.2f}" + (f"\n±{std:.2f}" if pd.notna(std) else "")
                dark = (mean - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
        names = [labels["defence"](d) for d in defences] if row == len(shares) - 1 else [""] * len(defences)
        ax.set_xticks(range(len(defences)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(attacks)), [labels["attack"](a) for a in attacks], fontsize=7)
        ax.set_title(f"{share:.0%} attackers", fontsize=9)
    fig.colorbar(image, ax=axes.tolist(), fraction=0.03, label=value.replace("_", " "))
    fig.suptitle(title)
    return fig


def accuracy_under_strongest(curves: pd.DataFrame, labels: dict):
    """Final accuracy (mean, seed spread as error bars) against the attacker share, one line per
    defence under its strongest attack; one panel per partition."""
    plt = _pyplot()
    partitions = sorted(curves["partition"].unique())
    fig, axes = plt.subplots(1, len(partitions), figsize=(5.2 * len(partitions), 5.2), layout="constrained",
                             squeeze=False, sharey=True)
    defences = list(dict.fromkeys(curves["defence"]))
    colours = plt.get_cmap("tab20")
    markers = "osD^v<>ph*XP8d"
    for ax, partition in zip(axes[0], partitions):
        part = curves[curves["partition"] == partition]
        for defence, line in part.groupby("defence", sort=False):
            line = line.sort_values("attacker_fraction")
            attack = line["attack"].iloc[0]
            k = defences.index(defence)
            ax.errorbar(line["attacker_fraction"], line["accuracy_mean"], yerr=line["accuracy_std"].fillna(0),
                        marker=markers[k % len(markers)], markersize=4, capsize=2, color=colours(k % 20),
                        label=f"{labels['defence'](defence)} / {labels['attack'](attack)}")
        ax.set_xlabel("attacker share")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
        ax.set_title(str(partition), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final accuracy")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="outside lower center", ncol=3)
    fig.suptitle("Final accuracy under each defence's strongest attack")
    return fig
