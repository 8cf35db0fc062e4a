"""Centralized training of the detectors: the paper's Tables 3 and 5, Figures 1 and 3.

Each model in ``models.names`` is trained on the training split (Keras models validate on
the validation split after every epoch) and scored on the validation and test splits. Rows
reach ``metrics.csv`` as they are computed: per epoch, then per split, then per class.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bflsim.config import ExperimentConfig
from bflsim.data import PreparedData, prepare_data
from bflsim.metrics import class_report, confusion_matrix, summary_metrics
from bflsim.models import make_classifier
from bflsim.progress import Progress
from bflsim.runfolder import RunFolder


def run_centralized(
    config: ExperimentConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
) -> RunFolder:
    """Train and score every configured model; return the finished run folder.

    ``run_dir`` and ``point`` place the run at a plan point's folder (:mod:`bflsim.plans`).
    """
    progress = progress or Progress(quiet=True)
    started = time.perf_counter()
    data = prepare_data(config.data, data_dir)
    progress.say(
        f"{data.dataset}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test rows, "
        f"{data.num_features} features, classes {list(data.class_names)}"
    )
    with RunFolder.start(out_dir, config, path=run_dir, point=point, data=data.describe()) as run:
        for name in config.models.names:
            train_and_score(name, config, data, run, progress)
        run.write_manifest(wall_seconds=round(time.perf_counter() - started, 2))
    return run


def train_and_score(
    name: str, config: ExperimentConfig, data: PreparedData, run: RunFolder, progress: Progress
) -> None:
    """Fit one model, log its per-epoch curves, then its metrics on val and test."""
    model = make_classifier(name, data.num_features, data.num_classes, config.models, config.train)

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k.removeprefix("val_"): v for k, v in logs.items() if k.startswith("val_")}
        run.log(train, model=name, split="train", epoch=epoch)
        run.log(val, model=name, split="val", epoch=epoch)
        progress.say(
            f"  {name} epoch {epoch}/{config.train.epochs}: "
            + "  ".join(f"{k}={v:.4f}" for k, v in logs.items())
        )

    progress.say(f"training {name} ...")
    t0 = time.perf_counter()
    model.fit(data.x_train, data.y_train, data.x_val, data.y_val, on_epoch=on_epoch)
    train_seconds = time.perf_counter() - t0
    run.log({"train_seconds": train_seconds}, model=name, split="train")

    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        t0 = time.perf_counter()
        predicted = np.argmax(model.predict_proba(x), axis=1)
        seconds_per_sample = (time.perf_counter() - t0) / max(len(x), 1)
        cm = confusion_matrix(y, predicted, data.num_classes)
        metrics = summary_metrics(cm, data.normal_class)
        run.log({**metrics, "inference_seconds_per_sample": seconds_per_sample}, model=name, split=split)
        report = class_report(cm)
        for c, class_name in enumerate(data.class_names):
            run.log(
                {
                    "precision": report.precision[c],
                    "recall": report.recall[c],
                    "f1": report.f1[c],
                    "fpr": report.fpr[c],
                    "support": report.support[c],
                },
                model=name,
                split=split,
                class_name=class_name,
            )
        run.log_confusion(cm, data.class_names, model=name, split=split)
        if split == "test":
            progress.say(
                f"  {name} test: accuracy={metrics['accuracy']:.4f} f1_macro={metrics['f1_macro']:.4f} "
                f"({train_seconds:.1f} s training)"
            )

