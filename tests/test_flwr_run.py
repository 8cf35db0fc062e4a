"""`flwr run .`: the ServerApp's run config, then one real run on a local SuperLink.

The end-to-end test starts Flower's detached local SuperLink on free loopback ports with its
own FLWR_HOME, checks that every process it started listens on loopback only, and stops
them all (found by that FLWR_HOME in their environment) before it returns.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port, is_loopback, listening_addresses, processes_with, stop

from bflsim.config import ConfigError
from bflsim.fl.server_app import AppSettings, redact_token

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

EXPERIMENT = """
[experiment]
name = "flwr_run_test"
kind = "federated"

[data]
dataset = "synthetic"
synthetic = { num_samples = 1500 }

[models]
names = ["cnn_lstm"]
cnn_lstm = { conv_filters = 8, lstm_units = 8 }

[train]
batch_size = 64
learning_rate = 0.005

[federation]
num_nodes = 5
rounds = 3

[attack]
name = "gaussian"
num_malicious = 1
sigma = 5.0

[aggregator]
name = "krum"
"""


def test_run_config_resolves_the_experiment_and_splits_the_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = AppSettings.from_run_config(
        {
            "experiment": "experiments/quick_poisoning.toml",
            "overrides": " federation.rounds=2  data.fractions=[0.8, 0.1, 0.1] attack.name='sign_flip' ",
            "out-dir": "runs",
            "data-dir": "",
        },
        app_dir=REPO,
    )

    config = settings.experiment_config()
    assert settings.experiment == REPO / "experiments" / "quick_poisoning.toml"  # not in ./, found in the app
    assert settings.overrides == ("federation.rounds=2", "data.fractions=[0.8, 0.1, 0.1]", "attack.name='sign_flip'")
    assert (config.federation.rounds, config.data.fractions, config.attack.name) == (2, (0.8, 0.1, 0.1), "sign_flip")
    assert settings.out_dir == tmp_path / "runs" and settings.data_dir is None


def test_run_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"run config `experiment`: 'nope.toml' not found"):
        AppSettings.from_run_config({"experiment": "nope.toml"}, app_dir=tmp_path)
    settings = AppSettings.from_run_config(
        {"experiment": str(REPO / "experiments" / "quick_poisoning.toml"), "overrides": "federation.nodes=3"}
    )
    with pytest.raises(ConfigError, match="unknown key 'federation.nodes'"):
        settings.experiment_config()
    sweep = AppSettings.from_run_config({"experiment": str(REPO / "experiments" / "sweep_attackers.toml")})
    with pytest.raises(ConfigError, match=r"`flwr run` runs one experiment, this file makes \d+ runs"):
        sweep.experiment_config()


def test_the_launch_token_is_kept_out_of_the_manifest():
    assert redact_token(["flwr-simulation", "--token", "s3cret", "--insecure"]) == [
        "flwr-simulation", "--token", "<redacted>", "--insecure",
    ]


# --- one real `flwr run .` ---------------------------------------------------------------


@pytest.fixture
def flwr_env(tmp_path):
    """Environment for `flwr`: own FLWR_HOME and ports; stops what it started afterwards."""
    home = tmp_path / "flwr-home"
    port = free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's node IP is localhost: loopback only
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    marker = f"FLWR_HOME={home}".encode()
    yield env
    stop(processes_with(marker))
    assert not processes_with(marker), "processes started by `flwr run` survived"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the SuperLink still listens"


def flwr_run(env: dict, run_config: str, federation_config: str, timeout: float = 400) -> tuple[str, set]:
    """Run `flwr run . --stream`; return its output and every address our processes listened on."""
    command = [str(VENV_BIN / "flwr"), "run", ".", "--run-config", run_config,
               "--federation-config", federation_config, "--stream"]
    marker = f"FLWR_HOME={env['FLWR_HOME']}".encode()
    listened = set()
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as cli:
        deadline = time.monotonic() + timeout
        while cli.poll() is None:
            listened |= listening_addresses(processes_with(marker))
            if time.monotonic() > deadline:
                cli.kill()
                pytest.fail(f"`flwr run` took over {timeout} s")
            time.sleep(1.0)
        output = cli.stdout.read()
    assert cli.returncode == 0, output
    return output, listened


def test_flwr_run_runs_the_experiment_on_a_local_superlink(tmp_path, flwr_env):
    experiment = tmp_path / "experiment.toml"
    experiment.write_text(EXPERIMENT)
    out = tmp_path / "runs"
    run_config = f"experiment='{experiment}' out-dir='{out}' overrides='federation.rounds=2'"

    started = time.perf_counter()
    output, listened = flwr_run(flwr_env, run_config, "num-supernodes=5 client-resources-num-cpus=1")
    seconds = time.perf_counter() - started
    wrong_size, _ = flwr_run(flwr_env, run_config, "num-supernodes=2 client-resources-num-cpus=1")

    [run_dir] = out.iterdir()  # the wrong-size run stopped before making a folder
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = pd.read_csv(run_dir / "metrics.csv")
    test_rounds = sorted(metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["round"])
    rounds = metrics[metrics["split"] == "round"]
    assert "Successfully started run" in output, output
    assert manifest["status"] == "complete", output
    assert test_rounds == [0, 1, 2]  # the override cut rounds from 3 to 2
    assert rounds[rounds["metric"] == "updates_received"]["value"].tolist() == [5.0, 5.0]
    assert manifest["launcher"]["tool"] == "flwr run" and "<redacted>" in manifest["command"]
    assert (run_dir / "final_model.npz").is_file()
    assert "the federation has 2 SuperNodes but federation.num_nodes = 5" in wrong_size
    assert listened and all(is_loopback(address) for address, _ in listened), sorted(listened)
    print(f"flwr run: {seconds:.0f} s; listened on {sorted(listened)}")


def test_bflsim_flwr_run_says_the_size_once_and_stops_only_its_own_superlink(tmp_path):
    """`bflsim flwr-run`: the federation's size from the experiment; a SuperLink kept with
    --keep-superlink serves the next run; `bflsim flwr-stop` stops it and what it started, by
    process id, and leaves a process of another FLWR_HOME alone."""
    experiment = tmp_path / "experiment.toml"
    experiment.write_text(EXPERIMENT)
    home, other_home, out = tmp_path / "home", tmp_path / "other-home", tmp_path / "runs"
    command = [str(VENV_BIN / "bflsim"), "flwr-run", str(experiment), "--set", "federation.rounds=1",
               "--out", str(out), "--flwr-home", str(home), "--keep-superlink"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    bystander = subprocess.Popen(["sleep", "300"], env={**env, "FLWR_HOME": str(other_home)})
    marker = f"FLWR_HOME={home}".encode()
    try:
        first = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        link_pid, port = (int(v) for v in (home / "superlink.pid").read_text().split())
        listened = listening_addresses(processes_with(marker))
        second = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        stopped = subprocess.run([str(VENV_BIN / "bflsim"), "flwr-stop", str(home)], check=False, env=env,
                                 capture_output=True, text=True, timeout=60)

        assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr + second.stderr
        assert "(5 simulated SuperNodes)" in first.stdout  # from federation.num_nodes, said once
        assert f"SuperLink pid {link_pid} on 127.0.0.1:{port}" in first.stdout
        assert f"SuperLink pid {link_pid} on 127.0.0.1:{port} (FLWR_HOME={home}), kept" in second.stdout
        assert "default simulated SuperNodes changed" not in first.stdout + first.stderr  # Flower's note, dropped
        assert len(list(out.iterdir())) == 2
        assert all(json.loads((d / "manifest.json").read_text())["status"] == "complete" for d in out.iterdir())
        assert listened and all(is_loopback(address) for address, _ in listened), sorted(listened)
        assert str(link_pid) in stopped.stdout and stopped.returncode == 0
        assert not processes_with(marker), "flwr-stop left processes of its FLWR_HOME"
        assert not (home / "superlink.pid").exists()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the SuperLink still listens"
        assert bystander.poll() is None, "flwr-stop stopped a process of another FLWR_HOME"
    finally:
        stop(processes_with(marker))
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("change, message", [
    ('\n[sweep]\nzip = { "train.seed" = [1, 2] }\n', "flwr-run runs one experiment; this file makes 2 runs"),
    ('\n[backend]\nclient_num_cpus = 0.5\n', "backend.client_num_cpus = 0.5: flwr run's federation config takes whole CPUs"),
])
def test_bflsim_flwr_run_refuses_bad_input_before_any_process_starts(tmp_path, change, message, capsys):
    from bflsim.cli import main

    experiment = tmp_path / "experiment.toml"
    experiment.write_text(EXPERIMENT + change)
    home = tmp_path / "home"

    assert main(["flwr-run", str(experiment), "--flwr-home", str(home)]) == 2

    assert message in capsys.readouterr().err
    assert not home.exists()  # nothing was started, not even the SuperLink's folder


def test_flwr_runs_notes_are_filtered_and_colour_codes_dropped(monkeypatch):
    from bflsim.fl.launch import shown

    monkeypatch.delenv("BFLSIM_VERBOSE", raising=False)
    assert shown("\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.\n") is None
    assert shown("\x1b[92mINFO \x1b[0m:      \n") is None
    assert shown("[0:24] round   2/2  accuracy 0.5000\n") == "[0:24] round   2/2  accuracy 0.5000"
    assert shown("\x1b[91mERROR \x1b[0m:     ServerApp raised an exception\n") == "ERROR :     ServerApp raised an exception"
