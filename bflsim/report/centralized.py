"""Tables and figures of finished runs (paper Tables 3 and 5, Figures 1 and 3).

Everything here reads run folders (``metrics.csv``, ``confusion.csv``, ``manifest.json``)
and writes CSV, Markdown, PNG and PDF; nothing trains.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bflsim.config import DataConfig
from bflsim.data import DATASETS
from bflsim.models import MODELS
from bflsim.report import figures, paper
from bflsim.report.tables import over_runs, shown_with_ci, write_table
from bflsim.runfolder import MANIFEST, Run

TABLE3_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "fpr")
TABLE5_METRICS = ("precision", "recall", "f1", "support")


def run_key(run: Run) -> str:
    """A run's id in the centralized tables, unique across experiments: a plan point's id
    (``seed-42``) is unique only within its experiment, so it is prefixed with the
    experiment's name (``table3_nslkdd/seed-42``); a single run's id already starts with it."""
    return run.run_id if run.run_id.startswith(run.config.name) else f"{run.config.name}/{run.run_id}"


def model_label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: id, dataset, split protocol, seeds, commit, wall time."""
    return pd.DataFrame([
        {
            "run_id": run_key(run),
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


def copy_manifests(runs: list[Run], out_dir: Path, key: Callable[[Run], str] = lambda run: run.run_id) -> list[Path]:
    """Each run's manifest (config, seeds, versions, commit, data digests) beside the tables,
    named by ``key`` (the run's id; the centralized report's :func:`run_key`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [key(run) for run in runs]
    counts = Counter(names)
    if len(counts) < len(names):  # one point run twice (e.g. on two chains): their folders tell them apart
        root = Path(os.path.commonpath([run.path.resolve() for run in runs]))
        names = [str(run.path.resolve().relative_to(root)) if counts[name] > 1 else name
                 for run, name in zip(runs, names, strict=True)]
    written = []
    for run, name in zip(runs, names, strict=True):
        target = out_dir / f"{name.replace('/', '-')}.json"
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
    metrics = pd.concat([run.metrics().assign(run_id=run_key(run)) for run in runs], ignore_index=True)
    return metrics.merge(run_table(runs)[["run_id", "dataset", "protocol"]], on="run_id")


def table3(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Overall test metrics per (dataset, protocol, model): mean, 95% CI over runs (seeds), and
    the paper's Table 3 values where it measured the same dataset (``paper_*``)."""
    rows = metrics[
        (metrics["split"] == split)
        & metrics["class_name"].isna()
        & metrics["epoch"].isna()
        & metrics["metric"].isin(TABLE3_METRICS)
    ]
    keys = ["dataset", "protocol", "model"]
    per_run = rows.pivot_table(index=[*keys, "run_id"], columns="metric", values="value", aggfunc="mean").reset_index()
    table = over_runs(per_run, keys, [m for m in TABLE3_METRICS if m in per_run.columns])
    for ours, theirs in (("accuracy", "accuracy"), ("f1_weighted", "f1"), ("fpr", "fpr")):
        table[f"paper_{ours}"] = [(paper.table3_row(d, m) or {}).get(theirs, float("nan"))
                                  for d, m in zip(table["dataset"], table["model"], strict=True)]
    table["model"] = pd.Categorical(table["model"], categories=list(MODELS), ordered=True)
    return table.sort_values(keys).reset_index(drop=True)


def table5(metrics: pd.DataFrame, model: str = "cnn_lstm", split: str = "test") -> pd.DataFrame:
    """Per-class precision, recall, F1 (mean, 95% CI over runs) and support of one model, with
    the paper's Table 5 values where it measured the same dataset and model (``paper_*``)."""
    rows = metrics[
        (metrics["split"] == split)
        & (metrics["model"] == model)
        & metrics["class_name"].notna()
        & metrics["metric"].isin(TABLE5_METRICS)
    ]
    keys = ["dataset", "protocol", "class_name"]
    per_run = rows.pivot_table(index=[*keys, "run_id"], columns="metric", values="value", aggfunc="mean",
                               sort=False).reset_index()
    if per_run.empty:
        return pd.DataFrame(columns=keys)
    table = over_runs(per_run, keys, ["precision", "recall", "f1", "support"]).drop(columns="support_ci95")
    table["support"] = table["support"].round().astype(int)
    for column in ("precision", "recall", "f1", "support"):
        table[f"paper_{column}"] = [(paper.table5_row(d, model, c) or {}).get(column, float("nan"))
                                    for d, c in zip(table["dataset"], table["class_name"], strict=True)]
    return table


def table3_shown(table: pd.DataFrame) -> pd.DataFrame:
    """Table 3 as printed: model labels, mean ± 95% CI over runs, the paper's value beside ours."""
    columns = {"accuracy": "accuracy", "precision_macro": "precision (macro)", "recall_macro": "recall (macro)",
               "f1_macro": "F1 (macro)", "f1_weighted": "F1 (weighted)", "fpr": "FPR"}
    present = {k: v for k, v in columns.items() if k in table.columns}
    shown = shown_with_ci(table, present)
    shown["model"] = shown["model"].map(model_label)
    shown = shown.rename(columns={"paper_accuracy": f"accuracy ({paper.PAPER})",
                                  "paper_f1_weighted": f"F1 ({paper.PAPER})", "paper_fpr": f"FPR ({paper.PAPER})"})
    order = ["dataset", "protocol", "model", "n_runs", "accuracy", f"accuracy ({paper.PAPER})",
             *(v for k, v in present.items() if k not in ("accuracy", "fpr")), f"F1 ({paper.PAPER})",
             *(["FPR"] if "fpr" in present else []), f"FPR ({paper.PAPER})"]
    return shown.rename(columns={"n_runs": "runs"})[[c if c != "n_runs" else "runs" for c in order]]


def table5_shown(table: pd.DataFrame) -> pd.DataFrame:
    """Table 5 as printed: mean ± 95% CI over runs and the paper's value beside each."""
    shown = shown_with_ci(table, {"precision": "precision", "recall": "recall", "f1": "F1"})
    shown = shown.rename(columns={"class_name": "class", "n_runs": "runs", "paper_precision": f"precision ({paper.PAPER})",
                                  "paper_recall": f"recall ({paper.PAPER})", "paper_f1": f"F1 ({paper.PAPER})",
                                  "paper_support": f"support ({paper.PAPER})"})
    return shown[["dataset", "protocol", "class", "runs", "precision", f"precision ({paper.PAPER})", "recall",
                  f"recall ({paper.PAPER})", "F1", f"F1 ({paper.PAPER})", "support", f"support ({paper.PAPER})"]]


TABLE_FORMATS = {f"{name} ({paper.PAPER})": "{:.4f}" for name in ("accuracy", "F1", "FPR", "precision", "recall")}
TABLE_FORMATS |= {f"support ({paper.PAPER})": "{:,.0f}", "support": "{:,.0f}"}


def write_centralized_tables(metrics: pd.DataFrame, out_dir: Path, model: str = "cnn_lstm") -> list[Path]:
    """Tables 3 and 5 (``.csv``, ``.md``, ``.tex``) from the tagged metric rows (``metrics.csv``)."""
    written = write_table(t3 := table3(metrics), table3_shown(t3), out_dir / "table3", TABLE_FORMATS)
    t5 = table5(metrics, model=model)
    if not t5.empty:
        written += write_table(t5, table5_shown(t5), out_dir / "table5", TABLE_FORMATS)
    return written


def write_centralized_report(runs: list[Run], out_dir: Path, model: str = "cnn_lstm") -> list[Path]:
    """Tables 3 and 5 over all runs, and Figures 1 and 3 per run; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = tagged_metrics(runs)
    written: list[Path] = []

    table = run_table(runs)
    table.to_csv(out_dir / "runs.csv", index=False)
    written += copy_manifests(runs, out_dir / "manifests", key=run_key)
    metrics.to_csv(out_dir / "metrics.csv", index=False)
    written += [out_dir / "runs.csv", out_dir / "metrics.csv"]

    written += write_centralized_tables(metrics, out_dir, model=model)
    written += draw_training_curves(metrics, table, out_dir, model)

    confusion = tagged_confusion(runs)
    confusion.to_csv(out_dir / "confusion.csv", index=False)
    written.append(out_dir / "confusion.csv")
    written += draw_confusion_matrices(confusion, table, out_dir, model)
    return written


def tagged_confusion(runs: list[Run]) -> pd.DataFrame:
    """All confusion counts of the runs (``confusion.csv`` rows), with each run's experiment."""
    confusion = pd.concat([run.confusion().assign(run_id=run_key(run)) for run in runs], ignore_index=True)
    experiments = {run_key(run): run.config.name for run in runs}
    return confusion.assign(experiment=confusion["run_id"].map(experiments))


def _experiments(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs (:func:`run_table` rows) of each experiment, in the order they first appear."""
    return [(name, runs[runs["experiment"] == name]) for name in dict.fromkeys(runs["experiment"])]


def _setting(runs: pd.DataFrame) -> str:
    first = runs.iloc[0]
    return f"{first['dataset']}, {first['protocol']}" + (f", {len(runs)} runs" if len(runs) > 1 else "")


def draw_confusion_matrices(confusion: pd.DataFrame, runs: pd.DataFrame, out_dir: Path, model: str) -> list[Path]:
    """Figure 3 (``figure3_<experiment>``) of each experiment whose runs scored ``model``: the
    test counts summed over its runs (seeds), each row normalised to the true class."""
    written: list[Path] = []
    for name, group in _experiments(runs):
        rows = confusion[confusion["run_id"].isin(group["run_id"]) & (confusion["model"] == model)]
        if rows.empty:
            continue
        summed = " summed" if len(group) > 1 else ""
        fig = figures.confusion_figure(rows, model, "test",
                                       title=f"{model_label(model)}: confusion matrix{summed}\n{_setting(group)}")
        written += figures.save_figure(fig, out_dir / f"figure3_{name}")
    return written


def draw_training_curves(metrics: pd.DataFrame, runs: pd.DataFrame, out_dir: Path, model: str) -> list[Path]:
    """Figure 1 (``figure1_<experiment>``) of each experiment in ``runs`` (:func:`run_table`, or
    its ``runs.csv``) whose ``model`` logged per-epoch rows in ``metrics``: mean and 95% CI
    over the experiment's runs (seeds)."""
    written: list[Path] = []
    for name, group in _experiments(runs):
        rows = metrics[metrics["run_id"].isin(group["run_id"]) & (metrics["model"] == model) & metrics["epoch"].notna()]
        if not rows.empty:
            fig = figures.training_curves(rows, model, title=f"{model_label(model)}: {_setting(group)}")
            written += figures.save_figure(fig, out_dir / f"figure1_{name}")
    return written
