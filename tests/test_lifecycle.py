"""Run lifecycle: one writer per folder, dead runs recognised, signals, checkpoints and resume.

Unit tests first (no Ray), then a real ``bflsim sweep`` stopped with SIGINT and resumed;
tests/test_resume.py compares a resumed run with an uninterrupted one.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import stop_experiment

from bflsim.config import config_digest, parse_experiment, with_overrides
from bflsim.runfolder import (
    RunFolder,
    RunInterrupted,
    StaleWriter,
    Trail,
    effective_status,
    exit_code,
    raise_on_signals,
    read_checkpoint,
    read_manifest,
    status_line,
    stop_leftovers,
)
from bflsim.runfolder.lifecycle import process_alive, process_identity, start_ticks
from bflsim.runner import examine_point, move_aside

CONFIG = parse_experiment({"experiment": {"name": "exp", "kind": "federated"}, "models": {"names": ["dnn"]}})
WEIGHTS = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float32)]


def dead_process() -> dict:
    """The identity of a process that has exited (as a SIGKILLed run's manifest records it)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    identity = process_identity()
    identity.update(pid=child.pid, start_ticks=start_ticks(child.pid))
    child.kill()
    child.wait()
    return identity


def as_if_killed(run: RunFolder) -> None:
    """Rewrite the run's manifest as a SIGKILL leaves it: ``running``, its process gone."""
    manifest = read_manifest(run.path)
    manifest["writer"] = {**dead_process(), "token": manifest["writer"]["token"]}
    (run.path / "manifest.json").write_text(json.dumps(manifest))


# --- one writer per folder ---------------------------------------------------------------


def test_a_stale_writer_cannot_write_into_a_newer_run_at_its_path(tmp_path):
    old = RunFolder.create(tmp_path, CONFIG, path=tmp_path / "point")
    old_trail = Trail(old.path)
    move_aside(old.path)  # a re-run of the plan keeps the old folder aside ...
    new = RunFolder.create(tmp_path, CONFIG, path=tmp_path / "point")  # ... and starts again at the path
    new.log({"accuracy": 0.9}, split="test", round=1)
    before = {p.name: p.read_bytes() for p in new.path.iterdir() if p.is_file()}

    writes = [
        lambda: old.log({"failed": 1.0}, split="node", round=3, node=0),
        lambda: old.log_confusion(np.eye(2, dtype=int), ("a", "b"), model="m", split="test", round=3),
        lambda: old.write_manifest(status_note="stale"),
        lambda: old.save_final_model(WEIGHTS),
        lambda: old.save_checkpoint(3, WEIGHTS, {}),
        lambda: old.finish("stopped", error="round 3: 0 usable updates"),
        lambda: Trail(new.path).__class__.write_round(old_trail, {"round": 3}),
    ]
    for write in writes:
        with pytest.raises(StaleWriter, match="another run|gone"):
            write()

    after = {p.name: p.read_bytes() for p in new.path.iterdir() if p.is_file()}
    assert after == before  # the newer run's manifest, rows and confusion are untouched
    assert read_manifest(new.path)["status"] == "running"


def test_a_stale_trail_cannot_write_rounds_transactions_or_blobs_into_a_newer_run(tmp_path):
    old = RunFolder.create(tmp_path, CONFIG, path=tmp_path / "point")
    trail = Trail(old.path)
    trail.write_round({"round": 1})
    move_aside(old.path)
    RunFolder.create(tmp_path, CONFIG, path=tmp_path / "point")

    for write in (lambda: trail.write_round({"round": 2}), lambda: trail.append_transactions([{"round": 2}]),
                  lambda: trail.blobs.put(WEIGHTS), lambda: trail.write_chain({})):
        with pytest.raises(StaleWriter):
            write()
    assert not (tmp_path / "point" / "trail").exists() and not (tmp_path / "point" / "blobs").exists()


def test_nothing_is_written_once_the_run_has_finished(tmp_path):
    with pytest.raises(KeyboardInterrupt), RunFolder.start(tmp_path, CONFIG) as run:
        trail = Trail(run.path)
        run.log({"accuracy": 0.5}, split="test", round=1)
        raise RunInterrupted(signal.SIGINT)
    rows = run.metrics_path.read_bytes()

    with pytest.raises(StaleWriter, match="finished"):
        run.log({"failed": 1.0}, split="node", round=2, node=0)
    with pytest.raises(StaleWriter, match="interrupted"):
        trail.write_round({"round": 2})
    with pytest.raises(StaleWriter):
        run.finish("stopped", error="late")
    assert run.metrics_path.read_bytes() == rows
    manifest = read_manifest(run.path)
    assert manifest["status"] == "interrupted" and manifest["error"] == "interrupted (SIGINT)"


def test_the_manifest_names_its_writer_and_config_digest(tmp_path):
    run = RunFolder.create(tmp_path, CONFIG)
    manifest = read_manifest(run.path)

    assert manifest["config_digest"] == config_digest(CONFIG)
    writer = manifest["writer"]
    assert writer["token"] == run.token and writer["pid"] == os.getpid()
    assert writer["host"] == socket.gethostname() and writer["start_ticks"] > 0


# --- dead runs ---------------------------------------------------------------------------


def test_a_running_run_whose_process_is_gone_is_interrupted(tmp_path):
    run = RunFolder.create(tmp_path, CONFIG)
    live = read_manifest(run.path)
    reused = {**live, "writer": {**live["writer"], "start_ticks": live["writer"]["start_ticks"] + 1}}
    elsewhere = {**live, "writer": {**live["writer"], "host": "another-host", "pid": 1}}
    as_if_killed(run)
    killed = read_manifest(run.path)

    assert effective_status(live) == "running"
    assert effective_status(killed) == "interrupted"
    assert status_line(killed) == f"interrupted (process gone: pid {killed['writer']['pid']} on {socket.gethostname()})"
    assert effective_status(reused) == "interrupted"  # the pid now belongs to a process started later
    assert effective_status(elsewhere) == "running" and "cannot check" in status_line(elsewhere)
    assert effective_status({"status": "running"}) == "running"  # written before processes were recorded
    assert effective_status({**killed, "status": "complete"}) == "complete"


def test_leftover_helpers_of_a_dead_run_are_stopped_by_id_and_start_time(tmp_path):
    leftover = subprocess.Popen(["sleep", "60"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        ticks = {p.pid: start_ticks(p.pid) for p in (leftover, bystander)}
        manifest = {"status": "running", "writer": dead_process(), "helpers": [
            {"pid": leftover.pid, "start_ticks": ticks[leftover.pid], "name": "ray::DashboardAgent"},
            {"pid": bystander.pid, "start_ticks": ticks[bystander.pid] + 7, "name": "reused pid"},
        ]}

        stopped = stop_leftovers(manifest, grace=5.0)

        assert [p["pid"] for p in stopped] == [leftover.pid]
        assert leftover.wait(timeout=5) == -signal.SIGTERM
        assert bystander.poll() is None  # its id matches but it started at another time
        live = {**manifest, "writer": process_identity()}
        assert stop_leftovers(live) == []  # the run's own process lives: nothing is touched
    finally:
        for proc in (leftover, bystander):
            proc.kill()
            proc.wait()


def test_process_alive_tells_dead_zombie_and_live_processes_apart():
    assert process_alive(process_identity()) is True
    assert process_alive(dead_process()) is False
    assert process_alive({**process_identity(), "host": "elsewhere"}) is None


# --- signals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_raise_run_interrupted_with_the_shell_exit_code(sig, code):
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        raise_on_signals()
        with pytest.raises(RunInterrupted) as caught:
            os.kill(os.getpid(), sig)
            time.sleep(1)
        assert caught.value.signum == sig and exit_code(caught.value) == code
        assert signal.getsignal(sig) is not saved[sig]  # a second signal is ignored while stopping
        os.kill(os.getpid(), sig)  # ... so it raises nothing here
        time.sleep(0.05)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_stopped_grid_wait_ends_at_once_not_after_the_client_timeout():
    from bflsim.fl.simulation import StoppableGrid

    class SilentGrid:  # pushes, but no node ever answers
        def push_messages(self, messages):
            return ["m1", "m2"]

        def pull_messages(self, ids):
            return []

    stop = threading.Event()
    grid = StoppableGrid(SilentGrid(), stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()

    with pytest.raises(RunInterrupted):
        grid.send_and_receive([object()], timeout=900)
    assert time.monotonic() - started < 2.0
    with pytest.raises(RunInterrupted):
        grid.get_node_ids()


# --- checkpoints and resume --------------------------------------------------------------


def interrupted_after_two_rounds(tmp_path):
    """A run with rows and a checkpoint after round 2, then half of round 3, then SIGINT."""
    with pytest.raises(KeyboardInterrupt), RunFolder.start(tmp_path, CONFIG) as run:
        for server_round in (1, 2):
            run.log({"accuracy": 0.5 + server_round / 10}, split="test", round=server_round)
            run.write_manifest(node_failures=[{"round": server_round, "node": 0, "reason": "x"}])
            run.save_checkpoint(server_round, WEIGHTS, {"excluded": {"3": "integrity"}})
        run.log({"failed": 1.0}, split="node", round=3, node=1)
        run.write_manifest(node_failures=[{"round": 3, "node": 1, "reason": "late"}])
        raise RunInterrupted(signal.SIGINT)
    return run


def test_resume_carries_on_after_the_checkpoint_and_drops_the_round_in_progress(tmp_path):
    old = interrupted_after_two_rounds(tmp_path)

    with RunFolder.resume(old.path) as run:
        assert run.resumed_from.server_round == 2
        assert [a.tolist() for a in run.resumed_from.weights] == [w.tolist() for w in WEIGHTS]
        assert run.resumed_from.state == {"excluded": {"3": "integrity"}}
        assert read_manifest(run.path)["status"] == "running"
        with pytest.raises(StaleWriter, match="finished"):
            old.log({"accuracy": 0.0}, split="test", round=3)
        stale = RunFolder(old.path, old.run_id, token=old.token)  # e.g. a thread of the first process
        with pytest.raises(StaleWriter, match="another run"):
            stale.log({"accuracy": 0.0}, split="test", round=3)
        run.log({"accuracy": 0.8}, split="test", round=3)

    manifest = read_manifest(run.path)
    metrics = pd.read_csv(run.metrics_path)
    assert manifest["status"] == "complete" and "error" not in manifest
    assert metrics["round"].tolist() == [1, 2, 3] and "failed" not in set(metrics["metric"])
    assert manifest["node_failures"] == [{"round": 2, "node": 0, "reason": "x"}]  # as at the checkpoint
    [resumed] = manifest["resumed"]
    assert resumed["from_round"] == 2 and resumed["dropped_lines"] == {"metrics.csv": 1}
    assert resumed["previous"]["status"] == "interrupted"
    assert manifest["writer"]["token"] == run.token != old.token


def test_a_killed_run_resumes_but_a_live_complete_or_unstarted_one_does_not(tmp_path):
    killed = RunFolder.create(tmp_path, CONFIG)
    killed.save_checkpoint(1, WEIGHTS, {})
    live = RunFolder.create(tmp_path, CONFIG)
    with RunFolder.start(tmp_path, CONFIG) as complete:
        pass
    with pytest.raises(KeyboardInterrupt), RunFolder.start(tmp_path, CONFIG) as unstarted:
        raise RunInterrupted(signal.SIGTERM)
    as_if_killed(killed)

    with RunFolder.resume(killed.path) as run:
        assert run.resumed_from.server_round == 1
    with pytest.raises(RuntimeError, match="still running"):
        RunFolder.resume(live.path).__enter__()
    with pytest.raises(ValueError, match="only an interrupted run.*complete"):
        RunFolder.resume(complete.path).__enter__()
    with pytest.raises(ValueError, match="no round was completed"):
        RunFolder.resume(unstarted.path).__enter__()


def test_a_checkpoint_whose_weights_were_changed_is_refused(tmp_path):
    run = interrupted_after_two_rounds(tmp_path)
    from bflsim.runfolder import save_arrays

    save_arrays(run.path / "checkpoint" / "global.npz", [w + 1 for w in WEIGHTS])

    with pytest.raises(ValueError, match="does not hash to the digest"):
        read_checkpoint(run.path)


# --- plan points: done, resumable, stale ------------------------------------------------


def test_a_point_is_done_only_if_its_stored_config_digest_is_the_requested_one(tmp_path):
    with RunFolder.start(tmp_path, CONFIG, path=tmp_path / "p") as run:
        pass
    changed = with_overrides(CONFIG, {"federation.rounds": 2, "train.seed": 7})
    manifest = read_manifest(run.path)
    del manifest["config_digest"]  # a folder from before the digest was recorded
    (run.path / "manifest.json").write_text(json.dumps(manifest))

    same, stale = examine_point(run.path, CONFIG), examine_point(run.path, changed)

    assert same.action == "skip"
    assert stale.action == "rerun"
    assert stale.why == (f"config changed (stored {config_digest(CONFIG)[:10]}, requested "
                         f"{config_digest(changed)[:10]}: federation.rounds, train.seed differ)")


def test_an_interrupted_point_with_a_checkpoint_resumes_and_a_live_one_is_left_alone(tmp_path):
    interrupted = interrupted_after_two_rounds(tmp_path)
    live = RunFolder.create(tmp_path, CONFIG)

    assert examine_point(interrupted.path, CONFIG).action == "resume"
    assert "resuming after round 2" in examine_point(interrupted.path, CONFIG).why
    assert examine_point(live.path, CONFIG).action == "busy"
    assert examine_point(tmp_path / "none", CONFIG).action == "run"


def test_sigint_stops_a_sweep_within_seconds_and_running_it_again_resumes_the_point(tmp_path):
    from bflsim.cli import main

    experiment = stop_experiment(tmp_path, delay_seconds=4.0, points='[[scenarios]]\nname = "only"')
    out, log = tmp_path / "runs", tmp_path / "log.txt"
    command = [sys.executable, "-m", "bflsim.cli", "sweep", str(experiment), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as sink:
        # bflsim sets its own SIGINT handler, even where the shell left SIGINT ignored
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 240
        while "round   1/3" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # into round 2, whose slow node holds it for seconds
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    seconds = time.monotonic() - sent

    text = log.read_text()
    point = out / "stop" / "only"
    assert code == 130 and seconds < 20, text[-2000:]
    assert "Traceback" not in text and "ERROR" not in text
    assert text.strip().splitlines()[-1] == f"bflsim: interrupted (SIGINT); round 1 is kept in {point}; " \
                                            "to carry on: re-run the same command"
    assert read_manifest(point)["status"] == "interrupted" and read_checkpoint(point).server_round == 1

    assert main(["sweep", str(experiment), "--out", str(out), "-q"]) == 0

    manifest = read_manifest(point)
    test_rows = pd.read_csv(point / "metrics.csv").query("split == 'test' and metric == 'accuracy'")
    assert manifest["status"] == "complete" and manifest["resumed"][0]["from_round"] == 1
    assert test_rows["round"].tolist() == [0, 1, 2, 3]
    assert not list((out / "stop").glob("only.interrupted-*"))  # resumed in place, not run again
