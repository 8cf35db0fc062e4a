"""``bflsim flwr-run``: one experiment under Flower's own launcher, on a SuperLink of its own.

``flwr run .`` alone needs the federation's size twice (the experiment's
``federation.num_nodes`` and ``--federation-config num-supernodes=N``), and the local
SuperLink it starts on first use listens on a fixed port (39091), shares ``~/.flwr``
with every other run of the user, and outlives the run. This module does what that
launcher does, with three differences:

- the SuperLink is started here (Flower's ``flower-superlink``, with the arguments Flower's
  own local SuperLink gets: simulation, subprocess isolation, loopback only), on a port
  that is given or free (Flower 1.41 serves its Runtime, Control and Fleet APIs on that one
  port), with a ``FLWR_HOME`` of its own that holds its connection (``config.toml``), its
  log and its process id (``superlink.pid``);
- ``flwr run`` is then called with that connection and the federation's size, CPUs per
  node, read from the experiment, so they are said once;
- afterwards the processes started for it, and only those, are stopped by process id: the
  SuperLink and everything it started (SuperExec, ServerApp, Ray) carry that
  ``FLWR_HOME`` in their environment, which no other SuperLink has. ``--keep-superlink``
  leaves it running for the next run with the same ``--flwr-home``;
  ``bflsim flwr-stop DIR`` stops it.

Everything expensive (Ray, TensorFlow, the data) still happens in Flower's processes;
this module only starts and stops them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bflsim.config import ConfigError, ExperimentConfig
from bflsim.fl.server_app import APP_DIR, AppSettings
from bflsim.progress import verbose
from bflsim.runfolder.lifecycle import processes_with_env, stop_processes

# What ``flwr run`` prints that says nothing about this run (shown with --verbose): Flower's
# notes on its defaults and commands (the size given here is the experiment's), the app's
# installation into FLWR_HOME, the log stream's own start and end.
_NOISE = (
    "default simulated SuperNodes changed",
    "To change federation size, use the following command",
    "flwr federation simulation-config",
    "Starting logstream for run_id",
    "Starting Flower Simulation",
    "Successfully installed bflsim to",
    "Using SuperLink: ",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONNECTION = "bflsim"
PID_FILE = "superlink.pid"
LOG_FILE = "superlink.log"
DONE_PREFIX = "done; run folder: "
_FLWR_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # the project's environment as it is
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's node address is 127.0.0.1
}
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::FutureWarning:ray._private.worker",  # Ray's tip on accelerator variables
}


def shown(line: str) -> str | None:
    """A line of ``flwr run``'s output as this command prints it: without colour codes, and
    None for Flower's notes that say nothing about this run (all are shown with --verbose)."""
    line = _ANSI.sub("", line.rstrip("\n"))
    if not verbose() and (any(noise in line for noise in _NOISE) or line.strip() in ("INFO :", "")):
        return None
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_of(home: Path) -> list[int]:
    """Ids of the live processes whose environment has ``FLWR_HOME=home``: a SuperLink started
    with that home and everything it started. No other SuperLink has that home."""
    return processes_with_env(f"FLWR_HOME={home}".encode())


@dataclass(frozen=True)
class SuperLink:
    """A ``flower-superlink`` this module started, known by its ``FLWR_HOME`` and process id."""

    home: Path
    port: int  # its HTTP APIs: Runtime, Control (``flwr``) and Fleet (Flower's local one: 39091)
    pid: int

    @property
    def environment(self) -> dict[str, str]:
        """The environment of ``flwr`` and of the SuperLink: this home, and the venv first on PATH."""
        venv_bin = str(Path(sys.executable).parent)
        return {**os.environ, **_FLWR_ENV, **({} if verbose() else _QUIET_ENV), "FLWR_HOME": str(self.home),
                "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    @classmethod
    def running(cls, home: Path) -> SuperLink | None:
        """The SuperLink that ``home``'s pid file names, if it is alive and was started with ``home``."""
        pid_file = home / PID_FILE
        if not pid_file.is_file():
            return None
        try:
            pid, port = (int(v) for v in pid_file.read_text().split())
        except ValueError:
            return None
        if pid not in processes_of(home):
            return None  # gone, or the id now belongs to another process
        return cls(home, port, pid)

    @classmethod
    def start(cls, home: Path, port: int | None = None, timeout: float = 60.0) -> SuperLink:
        """Start ``flower-superlink`` on 127.0.0.1:``port`` (a free port when None) with ``home``
        as its ``FLWR_HOME``; wait until it answers."""
        home = home.expanduser().absolute()
        home.mkdir(parents=True, exist_ok=True)
        if (other := processes_of(home)):
            raise RuntimeError(f"--flwr-home {home}: processes {other} already use it; "
                               f"stop them with: bflsim flwr-stop {home}")
        port = port or free_port()
        if _port_in_use(port):
            raise RuntimeError(f"--port {port}: 127.0.0.1:{port} is in use; give another port, or none for a free one")
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n')
        command = [str(Path(sys.executable).parent / "flower-superlink"), "--insecure", "--simulation",
                   "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(port),
                   "--log-file", str(home / LOG_FILE)]
        link = cls(home, port, pid=0)
        process = subprocess.Popen(command, env=link.environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        link = cls(home, port, process.pid)
        (home / PID_FILE).write_text(f"{process.pid} {port}\n")
        deadline = time.monotonic() + timeout
        while not _port_in_use(port):
            if process.poll() is not None or time.monotonic() > deadline:
                link.stop()
                raise RuntimeError(f"flower-superlink did not start (exit code {process.poll()}); "
                                   f"see {home / LOG_FILE}")
            time.sleep(0.2)
        return link

    def stop(self) -> list[int]:
        """Stop this SuperLink and every process it started (by id); the ids stopped."""
        stopped = stop_processes(processes_of(self.home))
        (self.home / PID_FILE).unlink(missing_ok=True)
        return stopped


def flwr_command(config: ExperimentConfig, settings: AppSettings) -> list[str]:
    """``flwr run`` of the project's app on this module's SuperLink connection, with the
    federation's size and CPUs per node from ``config``."""
    run_config = (f"experiment='{settings.experiment}' out-dir='{settings.out_dir}' "
                  f"overrides='{' '.join(settings.overrides)}' data-dir='{settings.data_dir or ''}'")
    cpus = config.backend.client_num_cpus
    if cpus != int(cpus):
        raise ConfigError(f"backend.client_num_cpus = {cpus}: flwr run's federation config takes whole CPUs per node")
    federation = f"num-supernodes={config.federation.num_nodes} client-resources-num-cpus={int(cpus)}"
    if not verbose():  # as bflsim run: the nodes' own start-up logs (TensorFlow's) stay in Ray's log files
        federation += " init-args-log-to-driver=false"
    return [str(Path(sys.executable).parent / "flwr"), "run", str(APP_DIR), CONNECTION, "--stream",
            "--run-config", run_config, "--federation-config", federation]


def flwr_run(
    experiment: Path, overrides: list[str], out_dir: Path, data_dir: str | None = None, *,
    home: Path | None = None, port: int | None = None, keep: bool = False,
    say: Callable[[str], None] = print,
) -> Path:
    """Run ``experiment`` (one federated run) with ``flwr run`` on a SuperLink of its own; the run folder.

    The experiment and overrides are checked here first, so a bad file stops before anything
    starts. ``home`` (default: a new temporary folder) is the SuperLink's ``FLWR_HOME``; a
    SuperLink already running there (``keep`` earlier) is reused.
    """
    for value in overrides:
        if "'" in value:
            raise ConfigError(f"--set {value!r}: flwr run's run config cannot carry a ' quote; use \" in TOML values")
    settings = AppSettings(experiment=experiment.expanduser().resolve(), overrides=tuple(overrides),
                           out_dir=out_dir.expanduser().absolute(), data_dir=data_dir)
    if not settings.experiment.is_file():
        raise ConfigError(f"{experiment}: no such experiment file")
    command = flwr_command(settings.experiment_config(), settings)
    temporary = home is None
    home = (home or Path(tempfile.mkdtemp(prefix="bflsim-flwr-"))).expanduser().absolute()
    link = SuperLink.running(home)
    if link is not None:
        say(f"SuperLink pid {link.pid} on 127.0.0.1:{link.port} (FLWR_HOME={home}), kept from an earlier run")
    else:
        link = SuperLink.start(home, port)
        say(f"SuperLink pid {link.pid} on 127.0.0.1:{link.port} (FLWR_HOME={home})")
    run_dir = None
    try:
        with subprocess.Popen(command, cwd=APP_DIR, env=link.environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as cli:
            assert cli.stdout is not None
            for line in cli.stdout:
                if (text := shown(line)) is not None:
                    say(text)
                if DONE_PREFIX in line:
                    run_dir = Path(line.split(DONE_PREFIX, 1)[1].strip())
    finally:
        if keep:
            say(f"SuperLink kept (pid {link.pid}); stop it with: bflsim flwr-stop {home}")
        else:
            stopped = link.stop()
            say(f"stopped the SuperLink and what it started (pids {', '.join(map(str, sorted(stopped)))})")
    if cli.returncode != 0 or run_dir is None:
        raise RuntimeError(f"flwr run ended without a finished run (exit code {cli.returncode}); "
                           f"the SuperLink's log: {home / LOG_FILE}")
    if temporary and not keep:
        shutil.rmtree(home, ignore_errors=True)  # the app's copy and the log of a run that finished
    return run_dir


def flwr_stop(home: Path) -> list[int]:
    """Stop the SuperLink kept at ``home`` and what it started; the ids stopped (none: nothing ran)."""
    home = home.expanduser().absolute()
    stopped = stop_processes(processes_of(home))
    (home / PID_FILE).unlink(missing_ok=True)
    return stopped
