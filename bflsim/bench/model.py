"""CNN-LSTM costs on one edge node's share of NSL-KDD (``bflsim bench --suite centralized``).

The training split of the stratified 70/15/15 protocol, dealt IID over 10 nodes, and node
0's tenth trained with the paper's model. It reports training seconds per epoch (the first
epoch, which includes graph tracing, apart from the later ones) and inference seconds per
sample, batched and one sample at a time, beside the paper's 4.2 s per epoch and 8 ms per
sample.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bflsim.bench import write_bench_csv
from bflsim.config import DataConfig, ModelsConfig, TrainConfig
from bflsim.data import partition, prepare_data
from bflsim.models import make_classifier
from bflsim.progress import Progress

PAPER = {"train_seconds_per_epoch": 4.2, "inference_seconds_per_sample": 0.008}


def run_centralized_bench(
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    repeats: int = 3,
    num_nodes: int = 10,
    epochs: int = 5,
    progress: Progress | None = None,
) -> Path:
    """Time CNN-LSTM training and inference on one node's tenth of NSL-KDD; return the CSV."""
    progress = progress or Progress(quiet=True)
    data = prepare_data(DataConfig(dataset="nsl-kdd"), data_dir)
    node = partition(data.y_train, num_nodes, "iid", seed=0)[0]
    x, y = data.x_train[node], data.y_train[node]
    train = TrainConfig(epochs=1, batch_size=256, learning_rate=1e-3, seed=0)
    progress.say(f"bench: CNN-LSTM on node 0 of {num_nodes}: {len(y)} rows x {data.num_features} features")

    first_epoch, later_epochs = [], []
    for _ in range(repeats):
        model = make_classifier("cnn_lstm", data.num_features, data.num_classes, ModelsConfig(), train)
        keras_model = model.model
        t0 = time.perf_counter()
        keras_model.fit(x, y, epochs=1, batch_size=train.batch_size, verbose=0)
        first_epoch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        keras_model.fit(x, y, epochs=epochs, batch_size=train.batch_size, verbose=0)
        later_epochs.append((time.perf_counter() - t0) / epochs)
    progress.say(f"bench: epoch {np.median(later_epochs):.2f} s (first, with tracing: {np.median(first_epoch):.2f} s)")

    x_test = data.x_test
    keras_model.predict(x_test[:1024], batch_size=1024, verbose=0)  # trace once
    keras_model.predict_on_batch(x_test[:1])
    batched, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        keras_model.predict(x_test, batch_size=1024, verbose=0)
        batched.append((time.perf_counter() - t0) / len(x_test))
        sample = x_test[:200]
        t0 = time.perf_counter()
        for row in sample:
            keras_model.predict_on_batch(row[None, :])
        single.append((time.perf_counter() - t0) / len(sample))
    progress.say(f"bench: inference {np.median(batched) * 1e6:.1f} us/sample batched, {np.median(single) * 1e3:.2f} ms one at a time")

    rows = [
        ("cnn_lstm_train", "train_seconds_per_epoch", np.median(later_epochs), "s", repeats,
         PAPER["train_seconds_per_epoch"], f"{len(y)} rows (node 0 of {num_nodes}, IID), batch 256, median of epochs 2-{epochs + 1}"),
        ("cnn_lstm_train", "first_epoch_seconds", np.median(first_epoch), "s", repeats, "",
         "first epoch of a fresh model, includes graph tracing"),
        ("cnn_lstm_inference", "inference_seconds_per_sample", np.median(batched), "s", repeats,
         PAPER["inference_seconds_per_sample"], f"model.predict over {len(x_test)} test rows, batch 1024"),
        ("cnn_lstm_inference", "single_sample_latency_seconds", np.median(single), "s", repeats, "",
         "one row per call (predict_on_batch, traced), 200 rows"),
    ]
    return write_bench_csv(out_dir, "centralized", rows, ("tensorflow-cpu", "keras", "numpy"))
