"""The ServerApp that ``flwr run .`` starts (``[tool.flwr.app.components]`` in pyproject.toml).

Its run config (``[tool.flwr.app.config]``, overridden with ``--run-config``) says which
experiment to run and where its results go:

- ``experiment``: an experiment TOML file of one federated run (not a sweep); an absolute
  path, or relative to the current directory, or to the app's own directory (so
  ``experiments/...`` always resolves);
- ``overrides``: dotted ``KEY=VALUE`` overrides with TOML values, separated by spaces, as
  ``bflsim run --set`` takes them (``"federation.rounds=3 attack.sigma=2.0"``);
- ``out-dir``: where run folders go, made absolute (``~`` expands);
- ``data-dir``: the data directory; empty means ``$BFLSIM_DATA_DIR``, else ``./data``.

Flower runs this app from a copy of the project under ``$FLWR_HOME``, in a process the
SuperLink starts: the current directory and the environment are the SuperLink's, so give
absolute paths when in doubt. The nodes learn their edge-node index from their node config
(``partition-id``, :func:`bflsim.fl.deployment.node_settings`); the federation must have
``federation.num_nodes`` SuperNodes, each with its own index, or the run stops before round 1.
In simulation that is ``--federation-config "num-supernodes=N"``; with Flower's deployment
engine (a SuperLink and one SuperNode per device, :mod:`bflsim.fl.deployment`) it is N
SuperNodes started with ``--node-config "partition-id=i num-partitions=N"``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from bflsim.config import ConfigError, ExperimentConfig, parse_overrides
from bflsim.plans import load_plan, with_point_overrides
from bflsim.progress import Progress
from bflsim.runfolder import RunFolder

APP_DIR = Path(__file__).resolve().parents[2]

# An override starts where a dotted key and "=" follow whitespace, so values may hold spaces.
_OVERRIDE_START = re.compile(r"\s+(?=[A-Za-z_][\w-]*(?:\.[\w-]+)*=)")


@dataclass(frozen=True)
class AppSettings:
    """The ServerApp's run config, resolved."""

    experiment: Path
    overrides: tuple[str, ...]
    out_dir: Path
    data_dir: str | None

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], app_dir: Path = APP_DIR) -> AppSettings:
        text = str(run_config.get("overrides", "")).strip()
        return cls(
            experiment=find_experiment(str(run_config.get("experiment", "")), app_dir),
            overrides=tuple(_OVERRIDE_START.split(text)) if text else (),
            out_dir=Path(str(run_config.get("out-dir") or "~/bflsim-runs")).expanduser().absolute(),
            data_dir=str(run_config.get("data-dir", "")) or None,
        )

    def experiment_config(self) -> ExperimentConfig:
        """The experiment file with the overrides applied; it must be one federated run."""
        plan = load_plan(self.experiment)
        if len(plan.points) != 1:
            names = ", ".join(point.name for point, _ in plan.points)
            raise ConfigError(
                f"{self.experiment}: `flwr run` runs one experiment, this file makes "
                f"{len(plan.points)} runs ({names}); run it with `bflsim sweep`"
            )
        config = plan.points[0][1]
        if self.overrides:
            config = with_point_overrides(config, parse_overrides(list(self.overrides)))
        if config.kind != "federated":
            raise ConfigError(f"{self.experiment}: `flwr run` needs kind = 'federated'; got {config.kind!r}")
        return config


def find_experiment(path: str, app_dir: Path = APP_DIR) -> Path:
    """``path`` if absolute, else the first of ``./path`` and ``app_dir/path`` that exists."""
    if not path:
        raise ConfigError("run config `experiment` is empty; name an experiment TOML file")
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, app_dir / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"run config `experiment`: {path!r} not found (looked at {', '.join(map(str, candidates))})"
    )


def redact_token(argv: list[str]) -> list[str]:
    """The command line without the value of ``--token`` (the SuperLink's launch secret)."""
    return [
        "<redacted>" if i > 0 and argv[i - 1] == "--token" else arg for i, arg in enumerate(argv)
    ]


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured experiment; its run folder records every round as it completes."""
    from bflsim.fl.server_main import describe, prepare_run, serve
    from strategies.robust import connected_nodes

    settings = AppSettings.from_run_config(context.run_config)
    config = settings.experiment_config()
    connected_nodes(grid, config.federation.num_nodes)  # a wrong federation size stops here
    progress = Progress()
    data_path, facts = prepare_run(config, settings.data_dir)
    launcher = {"tool": "flwr run", "flwr_run_id": context.run_id, "app_dir": str(APP_DIR),
                "run_config": dict(context.run_config)}
    with RunFolder.start(settings.out_dir, config, command=redact_token(sys.argv), launcher=launcher,
                         **facts) as run:
        progress.say(describe(config))
        progress.say(f"run folder: {run.path}")
        serve(grid, config, run, data_path, progress)
    progress.say(f"done; run folder: {run.path}")
