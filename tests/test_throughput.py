"""Throughput: compiled local training is Keras' maths, a sweep's runs share one warm Ray
runtime, points run in parallel with the same results, and impossible parallelism is refused."""

import json

import numpy as np
import pytest
from conftest import stop_experiment

from bflsim.config import parse_experiment
from bflsim.fl.parallel import check_parallel
from bflsim.models import (
    _cached,
    cnn_lstm_macs,
    dnn_macs,
    initial_weights,
    predict,
    train_weights,
    training_flops,
)
from bflsim.plans import plan_from_dict
from bflsim.runner import auto_parallel, run_plan

SMALL = {
    "experiment": {"name": "fast", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 900}},
    "models": {"names": ["dnn"], "dnn": {"hidden_units": [16], "dropout": 0.0}},
    "train": {"batch_size": 32, "learning_rate": 0.01},
    "federation": {"num_nodes": 6, "rounds": 2},
    "attack": {"name": "gaussian", "fraction": 0.0},
    "aggregator": {"name": "krum"},
    "ledger": {"backend": "none"},
}


def small(**sections):
    raw = json.loads(json.dumps(SMALL))
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_experiment(raw)


def _data(rows=200, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    return x, y % classes


def test_a_compiled_epoch_is_the_same_maths_as_keras_fit():
    config = small()
    x, y = _data()
    start = initial_weights(config.models, config.train, x.shape[1], 3)
    cached = _cached(config.models, config.train, x.shape[1], 3)

    import keras

    # Keras fit, no shuffle: the batches in row order, a fresh optimizer

    keras_model = keras.models.clone_model(cached.model)
    keras_model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate),
                        loss="sparse_categorical_crossentropy")
    keras_model.set_weights(start)
    history = keras_model.fit(x, y, epochs=1, batch_size=config.train.batch_size, shuffle=False, verbose=0)

    cached.load(start)  # the weights and a fresh optimizer state
    loss = float(cached.epoch(x, y, np.arange(len(y), dtype=np.int32), np.int32(config.train.batch_size)))

    for ours, theirs in zip(cached.model.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(history.history["loss"][-1], rel=1e-4)


def test_local_training_is_deterministic_and_independent_of_what_ran_before():
    config = small(models={"names": ["dnn"], "dnn": {"hidden_units": [16], "dropout": 0.3}})
    x, y = _data()
    start = initial_weights(config.models, config.train, x.shape[1], 3)

    first, loss = train_weights(config.models, config.train, start, x, y, 3, epochs=2, seed=7)
    train_weights(config.models, config.train, start, x[:50], y[:50], 3, epochs=1, seed=99)  # something else
    again, loss_again = train_weights(config.models, config.train, start, x, y, 3, epochs=2, seed=7)
    other, _ = train_weights(config.models, config.train, start, x, y, 3, epochs=2, seed=8)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True)) and loss == loss_again
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))  # shuffle and dropout follow the seed
    assert not all(np.array_equal(a, b) for a, b in zip(first, start, strict=True))


def test_compiled_prediction_matches_keras_predict():
    config = small()
    x, _ = _data(rows=5000)
    weights = initial_weights(config.models, config.train, x.shape[1], 3)
    model = _cached(config.models, config.train, x.shape[1], 3).model
    model.set_weights(weights)

    ours = predict(config.models, config.train, weights, x, 3, batch_size=1024)

    np.testing.assert_allclose(ours, model.predict(x, batch_size=4096, verbose=0), rtol=1e-5, atol=1e-6)
    assert ours.shape == (5000, 3)


def test_flop_estimates_count_every_layer():
    config = small(models={"names": ["dnn"], "dnn": {"hidden_units": [128, 64]}})
    assert dnn_macs(122, 5, config.models) == 122 * 128 + 128 * 64 + 64 * 5
    cnn = parse_experiment({**SMALL, "models": {"names": ["cnn_lstm"]}}).models
    # conv 122 x 64 filters x 3; 61 LSTM steps x 4 gates x 64 x (64 + 64); softmax 64 x 5
    assert cnn_lstm_macs(122, 5, cnn) == 122 * 64 * 3 + 61 * 4 * 64 * 128 + 64 * 5
    assert training_flops(cnn, 122, 5, 10) == 6.0 * cnn_lstm_macs(122, 5, cnn) * 10


def test_parallelism_the_cores_cannot_hold_is_refused_with_the_numbers():
    two = small(backend={"num_cpus": 2})
    assert check_parallel(two, 2) == 1 and check_parallel(two, 1) == 2
    with pytest.raises(ValueError, match=r"--parallel 3: 3 runs at once need at least 3 x backend.client_num_cpus 1 "
                                         r"= 3 CPUs; Ray has 2 \(backend.num_cpus\); use --parallel 2 or fewer"):
        check_parallel(two, 3)
    with pytest.raises(ValueError, match=r"backend.client_num_cpus = 4 cannot be scheduled: Ray has 2 CPUs"):
        check_parallel(small(backend={"num_cpus": 2, "client_num_cpus": 4.0}), 1)
    with pytest.raises(ValueError, match="ledger.backend = 'rpc'"):
        check_parallel(small(backend={"num_cpus": 2}, ledger={"backend": "rpc", "rpc_url": "http://127.0.0.1:1"}), 2)


def test_auto_runs_small_points_side_by_side_and_big_ones_one_at_a_time():
    small_points = [small(backend={"num_cpus": 2}), small(backend={"num_cpus": 2}, train={"seed": 2})]
    big = {"names": ["cnn_lstm"], "cnn_lstm": {"conv_filters": 64, "lstm_units": 64}}
    big_points = [small(backend={"num_cpus": 2}, models=big, federation={"num_nodes": 6, "rounds": 5000}),
                  small(backend={"num_cpus": 2}, models=big, federation={"num_nodes": 6, "rounds": 5000},
                        train={"seed": 2})]

    assert auto_parallel(small_points, None) == 2
    assert auto_parallel(big_points, None) == 1
    assert auto_parallel(small_points[:1], None) == 1
    assert auto_parallel([small(backend={"num_cpus": 1}), small(backend={"num_cpus": 1})], None) == 1


def test_parallel_points_equal_the_plain_loop_and_a_failing_point_leaves_the_others(tmp_path):
    """Three points, two at a time: two finish with the final model the single-process loop
    computes (same code, seeds and decisions, no Flower), bit for bit; one whose nodes all
    crash in round 2 is recorded as not complete, and the error names it."""
    from bflsim.bench.plain_loop import run_plain

    raw = json.loads(json.dumps(SMALL))
    raw["backend"] = {"num_cpus": 2}
    raw["federation"] = {**raw["federation"], "crash_rounds": [2]}
    raw["scenarios"] = [
        {"name": "krum", "set": {}},
        {"name": "median", "set": {"aggregator.name": "median", "train.seed": 2}},
        {"name": "crash", "set": {"federation.crash_nodes": [0, 1, 2, 3, 4, 5]}},
    ]
    plan = plan_from_dict(raw)

    with pytest.raises(RuntimeError, match=r"1 of 3 runs failed \(crash\)"):
        run_plan(plan, tmp_path, None, quiet=True, parallel=2)

    for point, config in plan.points[:2]:
        manifest = json.loads((tmp_path / "fast" / point.name / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        assert manifest["final_model_digest"] == run_plain(config)["final_model_digest"], point.name
    crashed = json.loads((tmp_path / "fast" / "crash" / "manifest.json").read_text())
    assert crashed["status"] in {"failed", "stopped"} and "final_model_digest" not in crashed


def test_sigint_stops_parallel_points_and_running_again_resumes_them(tmp_path):
    """Ctrl-C to the sweep process alone (the workers run in their own process group): each
    worker marks its run interrupted with its completed rounds, one line says so, and the
    same command carries both points on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from bflsim.cli import main
    from bflsim.runfolder import read_checkpoint, read_manifest

    experiment = stop_experiment(tmp_path, delay_seconds=6.0, federation="slow_rounds = [2]",
                                 points='[sweep]\ngrid = { "train.seed" = [1, 2] }')
    out, log = tmp_path / "runs", tmp_path / "log.txt"
    command = [sys.executable, "-m", "bflsim.cli", "sweep", str(experiment), "--out", str(out), "--parallel", "2"]
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        points = [out / "stop" / "seed-1", out / "stop" / "seed-2"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            checkpoints = [read_checkpoint(p) if (p / "manifest.json").exists() else None for p in points]
            if all(c is not None and c.server_round == 1 for c in checkpoints):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # into round 2, held for 6 s by the slow node
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    seconds = time.monotonic() - sent

    text = log.read_text()
    assert code == 130 and seconds < 25, text[-3000:]
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (f"bflsim: interrupted (SIGINT); 2 runs stopped, 0 completed in this call, "
                                             f"under {out / 'stop'}; to carry on: re-run the same command")
    for point in points:
        assert read_manifest(point)["status"] == "interrupted" and read_checkpoint(point).server_round == 1
        assert f"train.seed={point.name[-1]}: interrupted, round 1 kept" in text

    assert main(["sweep", str(experiment), "--out", str(out), "-q"]) == 0
    for point in points:
        manifest = read_manifest(point)
        assert manifest["status"] == "complete" and manifest["resumed"][0]["from_round"] == 1


def test_cli_refuses_more_parallel_runs_than_cores_before_writing_anything(tmp_path, capsys):
    from bflsim.cli import main

    experiment = tmp_path / "grid.toml"
    experiment.write_text(
        '[experiment]\nname = "grid"\nkind = "federated"\n[data]\ndataset = "synthetic"\n'
        '[models]\nnames = ["dnn"]\n[federation]\nnum_nodes = 4\nrounds = 1\n[backend]\nnum_cpus = 2\n'
        '[sweep]\ngrid = { "train.seed" = [1, 2, 3] }\n'
    )

    assert main(["sweep", str(experiment), "--out", str(tmp_path / "runs"), "--parallel", "3"]) == 2

    assert "--parallel 3: 3 runs at once need at least 3 x backend.client_num_cpus 1 = 3 CPUs; Ray has 2 " \
           "(backend.num_cpus); use --parallel 2 or fewer" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_krum_bench_times_all_three_side_by_side_and_checks_the_pick():
    from bflsim.bench.aggregators import KRUM_COLUMNS, krum_rows

    rows = krum_rows(sizes=((10, 400), (13, 257)), repeats=1)

    assert [(r["n"], r["d"]) for r in rows] == [(10, 400), (13, 257)]
    for row in rows:
        assert set(row) == set(KRUM_COLUMNS) and row["same_pick"] is True
        assert row["krum_over_gram"] == pytest.approx(row["krum_seconds"] / row["gram_seconds"])
        assert min(row["krum_seconds"], row["gram_seconds"], row["flower_seconds"]) > 0


def test_memory_of_a_process_tree_counts_its_children(tmp_path):
    import os
    import subprocess
    import sys

    from bflsim.bench.throughput import tree_pss

    alone = tree_pss(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(30)"])
    try:
        import time

        deadline = time.monotonic() + 20
        while tree_pss(os.getpid()) < alone + 150 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tree_pss(os.getpid()) >= alone + 150 * 2**20  # the child's 200 MiB, touched
        assert tree_pss(child.pid) >= 150 * 2**20
    finally:
        child.kill()
        child.wait()
    assert alone > 10 * 2**20


def test_throughput_figure_is_written_with_embedded_truetype_fonts(tmp_path):
    import pandas as pd

    from bflsim.report import figures

    points = pd.DataFrame({"floor_seconds": [1.0, 1.2, 1.1], "parallel_finished_after": [20.0, 21.5, 23.0],
                           "sequential_finished_after": [15.0, 18.0, 21.0]})
    nodes = pd.DataFrame({"nodes": [10, 20], "bflsim_wall_seconds": [21.0, 22.5], "floor_seconds": [1.2, 1.5]})

    figures.save_figure(figures.throughput_panels(points, nodes), tmp_path / "throughput")

    assert (tmp_path / "throughput.png").stat().st_size > 10_000
    pdf = (tmp_path / "throughput.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf
