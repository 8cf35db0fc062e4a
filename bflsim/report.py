"""Tables and figures of finished runs (paper Tables 3 and 5, Figures 1 and 3).

Everything here reads run folders (``metrics.csv``, ``confusion.csv``, ``manifest.json``)
and writes CSV, Markdown, PNG and PDF; nothing trains.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bflsim import plots
from bflsim.results import read_confusion, read_manifest, read_metrics

TABLE3_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "fpr")
TABLE5_METRICS = ("precision", "recall", "f1", "support")
MODEL_LABELS = {
    "decision_tree": "Decision tree",
    "random_forest": "Random forest",
    "linear_svm": "Linear SVM",
    "dnn": "DNN",
    "cnn_lstm": "CNN-LSTM",
}


def run_table(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per run: id, dataset, split protocol, seeds, commit, wall time."""
    rows = []
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir)
        data = manifest["config"]["data"]
        rows.append(
            {
                "run_id": manifest["run_id"],
                "experiment": manifest["config"]["name"],
                "dataset": data["dataset"],
                "protocol": protocol_label(data),
                "data_seed": manifest["seeds"].get("data_seed"),
                "train_seed": manifest["seeds"].get("train_seed"),
                "git_commit": manifest.get("git_commit"),
                "status": manifest.get("status"),
                "wall_seconds": manifest.get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)


def copy_manifests(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Each run's manifest (config, seeds, versions, commit, data digests) beside the tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run_dir in run_dirs:
        target = out_dir / f"{read_manifest(run_dir)['run_id']}.json"
        if target in written:  # same point name (e.g. one scenario on two chains): the folder tells them apart
            target = out_dir / f"{read_manifest(run_dir)['run_id']}-{Path(run_dir).name}.json"
        target.write_text((Path(run_dir) / "manifest.json").read_text())
        written.append(target)
    return written


def protocol_label(data: dict) -> str:
    if data["split"] == "kdd-test":
        return "KDDTrain+ / KDDTest+"
    train, val, test = (round(100 * f) for f in data["fractions"])
    return f"stratified {train}/{val}/{test}"


def tagged_metrics(run_dirs: list[Path]) -> pd.DataFrame:
    """All metric rows of the runs, with the dataset and protocol of each run."""
    metrics = read_metrics(run_dirs)
    return metrics.merge(run_table(run_dirs)[["run_id", "dataset", "protocol"]], on="run_id")


def table3(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Overall test metrics per (dataset, protocol, model)."""
    rows = metrics[
        (metrics["split"] == split)
        & metrics["class_name"].isna()
        & metrics["epoch"].isna()
        & metrics["metric"].isin(TABLE3_METRICS)
    ]
    table = rows.pivot_table(
        index=["dataset", "protocol", "model"], columns="metric", values="value", aggfunc="mean"
    )
    table = table.reindex(columns=[m for m in TABLE3_METRICS if m in table.columns]).reset_index()
    table["model"] = pd.Categorical(table["model"], categories=list(MODEL_LABELS), ordered=True)
    return table.sort_values(["dataset", "protocol", "model"]).reset_index(drop=True)


def table5(metrics: pd.DataFrame, model: str = "cnn_lstm", split: str = "test") -> pd.DataFrame:
    """Per-class precision, recall, F1 and support of one model."""
    rows = metrics[
        (metrics["split"] == split)
        & (metrics["model"] == model)
        & metrics["class_name"].notna()
        & metrics["metric"].isin(TABLE5_METRICS)
    ]
    table = rows.pivot_table(
        index=["dataset", "protocol", "class_name"], columns="metric", values="value", aggfunc="mean", sort=False
    )
    table = table.reindex(columns=list(TABLE5_METRICS)).reset_index()
    table["support"] = table["support"].astype(int)
    return table


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    shown = table.copy()
    if "model" in shown:
        shown["model"] = shown["model"].map(lambda m: MODEL_LABELS.get(m, m))
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(shown[c]) else "---" for c in shown.columns) + "|"
    lines = [header, rule]
    for _, row in shown.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_centralized_report(run_dirs: list[Path], out_dir: Path, model: str = "cnn_lstm") -> list[Path]:
    """Tables 3 and 5 over all runs, and Figures 1 and 3 per run; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = tagged_metrics(run_dirs)
    written: list[Path] = []

    runs = run_table(run_dirs)
    runs.to_csv(out_dir / "runs.csv", index=False)
    written += copy_manifests(run_dirs, out_dir / "manifests")
    metrics.to_csv(out_dir / "metrics.csv", index=False)
    written += [out_dir / "runs.csv", out_dir / "metrics.csv"]

    t3 = table3(metrics)
    t3.to_csv(out_dir / "table3.csv", index=False)
    (out_dir / "table3.md").write_text(to_markdown(t3))
    written += [out_dir / "table3.csv", out_dir / "table3.md"]

    t5 = table5(metrics, model=model)
    if not t5.empty:
        t5.to_csv(out_dir / "table5.csv", index=False)
        (out_dir / "table5.md").write_text(to_markdown(t5))
        written += [out_dir / "table5.csv", out_dir / "table5.md"]

    confusion = read_confusion(run_dirs)
    for run in runs.itertuples():
        run_metrics = metrics[metrics["run_id"] == run.run_id]
        if not (run_metrics["model"] == model).any():
            continue
        label = f"{run.dataset}, {run.protocol}"
        stem = run.experiment
        if run_metrics[(run_metrics["model"] == model)]["epoch"].notna().any():
            fig = plots.training_curves(run_metrics, model, title=f"{MODEL_LABELS.get(model, model)}: {label}")
            written += plots.save_figure(fig, out_dir / f"figure1_{stem}")
        fig = plots.confusion_figure(
            confusion[confusion["run_id"] == run.run_id], model, "test",
            title=f"{MODEL_LABELS.get(model, model)} confusion matrix: {label}",
        )
        written += plots.save_figure(fig, out_dir / f"figure3_{stem}")
    return written
