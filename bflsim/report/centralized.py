"""Tables and figures of finished runs (paper Tables 3 and 5, Figures 1 and 3).

Everything here reads run folders (``metrics.csv``, ``confusion.csv``, ``manifest.json``)
and writes CSV, Markdown, PNG and PDF; nothing trains.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from bflsim.config import DataConfig
from bflsim.data import DATASETS
from bflsim.models import MODELS
from bflsim.report import figures
from bflsim.report.markdown import to_markdown
from bflsim.runfolder import MANIFEST, Run, read_confusion, read_metrics

TABLE3_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "fpr")
TABLE5_METRICS = ("precision", "recall", "f1", "support")


def model_label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: id, dataset, split protocol, seeds, commit, wall time."""
    return pd.DataFrame([
        {
            "run_id": run.run_id,
            "experiment": run.config.name,
            "dataset": run.config.data.dataset,
            "protocol": protocol_label(run.config.data),
            "data_seed": run.manifest.get("seeds", {}).get("data_seed"),
            "train_seed": run.manifest.get("seeds", {}).get("train_seed"),
            "git_commit": run.manifest.get("git_commit"),
            "status": run.status,
            "wall_seconds": run.manifest.get("wall_seconds"),
        }
        for run in runs
    ])


def copy_manifests(runs: list[Run], out_dir: Path) -> list[Path]:
    """Each run's manifest (config, seeds, versions, commit, data digests) beside the tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        target = out_dir / f"{run.run_id}.json"
        if target in written:  # same point name (e.g. one scenario on two chains): the folder tells them apart
            target = out_dir / f"{run.run_id}-{run.path.name}.json"
        target.write_text((run.path / MANIFEST).read_text())
        written.append(target)
    return written


def bundle_manifests(runs: list[Run], target: Path) -> Path:
    """Every run's manifest as one JSON line of a gzip file (``{"path": folder name,
    "manifest": {...}}``), for reports of many runs where one file per run would be a
    folder of thousands."""
    lines = [json.dumps({"path": run.path.name, "manifest": json.loads((run.path / MANIFEST).read_text())},
                        sort_keys=True) for run in runs]
    with gzip.GzipFile(target, "wb", mtime=0) as out:  # mtime 0: the same runs give the same bytes
        out.write(("\n".join(lines) + "\n").encode())
    return target


def protocol_label(data: DataConfig) -> str:
    """How a run was split and tested, e.g. ``stratified 70/15/15`` or ``KDDTrain+ / KDDTest+``."""
    if data.split == "official":
        dataset = DATASETS.get(data.dataset)
        return dataset.official_protocol if dataset is not None else f"{data.dataset} official split"
    train, val, test = (round(100 * f) for f in data.fractions)
    return f"stratified {train}/{val}/{test}"


def tagged_metrics(runs: list[Run]) -> pd.DataFrame:
    """All metric rows of the runs, with the dataset and protocol of each run."""
    metrics = read_metrics(runs)
    return metrics.merge(run_table(runs)[["run_id", "dataset", "protocol"]], on="run_id")


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
    table["model"] = pd.Categorical(table["model"], categories=list(MODELS), ordered=True)
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


def table_markdown(table: pd.DataFrame) -> str:
    """Tables 3 and 5 in Markdown: model labels, four decimals."""
    shown = table.copy()
    if "model" in shown:
        shown["model"] = shown["model"].map(model_label)
    return to_markdown(shown, default="{:.4f}")


def write_centralized_report(runs: list[Run], out_dir: Path, model: str = "cnn_lstm") -> list[Path]:
    """Tables 3 and 5 over all runs, and Figures 1 and 3 per run; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = tagged_metrics(runs)
    written: list[Path] = []

    table = run_table(runs)
    table.to_csv(out_dir / "runs.csv", index=False)
    written += copy_manifests(runs, out_dir / "manifests")
    metrics.to_csv(out_dir / "metrics.csv", index=False)
    written += [out_dir / "runs.csv", out_dir / "metrics.csv"]

    t3 = table3(metrics)
    t3.to_csv(out_dir / "table3.csv", index=False)
    (out_dir / "table3.md").write_text(table_markdown(t3))
    written += [out_dir / "table3.csv", out_dir / "table3.md"]

    t5 = table5(metrics, model=model)
    if not t5.empty:
        t5.to_csv(out_dir / "table5.csv", index=False)
        (out_dir / "table5.md").write_text(table_markdown(t5))
        written += [out_dir / "table5.csv", out_dir / "table5.md"]

    confusion = read_confusion(runs)
    for run in table.itertuples():
        run_metrics = metrics[metrics["run_id"] == run.run_id]
        if not (run_metrics["model"] == model).any():
            continue
        label = f"{run.dataset}, {run.protocol}"
        stem = run.experiment
        if run_metrics[(run_metrics["model"] == model)]["epoch"].notna().any():
            fig = figures.training_curves(run_metrics, model, title=f"{model_label(model)}: {label}")
            written += figures.save_figure(fig, out_dir / f"figure1_{stem}")
        fig = figures.confusion_figure(
            confusion[confusion["run_id"] == run.run_id], model, "test",
            title=f"{model_label(model)} confusion matrix: {label}",
        )
        written += figures.save_figure(fig, out_dir / f"figure3_{stem}")
    return written
