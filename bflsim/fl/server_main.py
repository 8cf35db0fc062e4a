"""The server side of a federated run: check the data, run the strategy, evaluate every round.

:func:`prepare_run` and :func:`serve` are what a Flower ServerApp's ``main`` does, whichever
way the app is started (``bflsim run`` on the Ray simulation backend, or ``flwr run .``); the
caller holds the run folder open (:meth:`bflsim.runfolder.RunFolder.start`), which sets the
run's status. After every round the global model is scored on the held-out test split and
the round's rows reach the run folder before the next round starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from bflsim.config import ExperimentConfig, to_wire
from bflsim.data import PreparedData, resolve_data_dir
from bflsim.edge_node import load_data
from bflsim.hashing import digest_hex, weights_digest
from bflsim.ledger.factory import open_ledger
from bflsim.ledger.session import open_session
from bflsim.metrics import score_probabilities
from bflsim.models import cached_model, initial_weights
from bflsim.progress import Progress, format_seconds
from bflsim.runfolder import Checkpoint, RoundRecorder, RunFolder
from strategies.robust import RobustStrategy


@dataclass
class GlobalEvaluator:
    """Scores the global model on the test split after each round and logs the rows."""

    config: ExperimentConfig
    data: PreparedData
    run: RunFolder
    recorder: RoundRecorder
    progress: Progress
    started: float = field(default_factory=time.perf_counter)
    last: dict[str, float] = field(default_factory=dict)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        data, name = self.data, self.config.models.names[0]
        model = cached_model(self.config.models, self.config.train, data.num_features, data.num_classes)
        model.set_weights(arrays.to_numpy_ndarrays())
        proba = model.predict(data.x_test, batch_size=4096, verbose=0)
        metrics, cm = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)
        elapsed = time.perf_counter() - self.started
        metrics["elapsed_seconds"] = elapsed
        if server_round > 0:
            metrics["round_seconds"] = time.perf_counter() - self.recorder.stats.started
        self.run.log(metrics, model=name, split="test", round=server_round)
        self.run.log_confusion(cm, data.class_names, model=name, split="test", round=server_round)
        self.last = metrics
        self._say(server_round, metrics, elapsed)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    def _say(self, server_round: int, metrics: dict[str, float], elapsed: float) -> None:
        rounds = self.config.federation.rounds
        line = f"round {server_round:>3}/{rounds}  accuracy {metrics['accuracy']:.4f}  f1 {metrics['f1_macro']:.4f}"
        if server_round > 0:
            stats = self.recorder.stats
            eta = elapsed / server_round * (rounds - server_round)
            line += (
                f"  poisoned accepted {stats.poisoned_accepted}/{stats.poisoned_received}"
                f"  failures {stats.failures}  elapsed {format_seconds(elapsed)}  eta {format_seconds(eta)}"
            )
        self.progress.say(line)


def prepare_run(config: ExperimentConfig, data_dir: str | Path | None = None) -> tuple[str | None, dict[str, Any]]:
    """Load the data (bad data fails here, before any node starts); return the data directory
    the server and the nodes read (None for synthetic data) and the manifest's run facts."""
    data_path = str(resolve_data_dir(data_dir)) if config.data.dataset != "synthetic" else None
    data = load_data(config.data, data_path)
    malicious = "per round" if config.attack.redraw_each_round else config.malicious_nodes(1).tolist()
    return data_path, {"data": data.describe(), "malicious_nodes": malicious}


def describe(config: ExperimentConfig) -> str:
    """The run's first progress line."""
    return (
        f"{config.name}: {config.federation.num_nodes} edge nodes, {config.federation.rounds} rounds, "
        f"{config.aggregator.name} (f={config.assumed_malicious}), attack {config.attack.name} x {config.num_malicious}"
    )


def serve(grid: Grid, config: ExperimentConfig, run: RunFolder, data_dir: str | None, progress: Progress,
          checkpoint: Checkpoint | None = None) -> None:
    """Run all rounds (after ``checkpoint``'s, when resuming); write the final model and its
    facts to the run folder. A checkpoint is saved after every round.

    The ledger of ``[ledger]`` is open for the length of the run (an anvil started for it is
    stopped after); a resumed run's chain is rebuilt from its trail first. A round the rule
    cannot aggregate or a chain that fails midway raises a :class:`bflsim.runfolder.RunStopped`.
    """
    data = load_data(config.data, data_dir)
    recorder = RoundRecorder(run, config)
    with open_ledger(config.ledger) as ledger:
        session = open_session(config, ledger, run.path)
        strategy = RobustStrategy(
            config.rule, config.aggregator.reject_factor, config.federation, to_wire(config), data_dir,
            session, recorder,
        )
        if checkpoint is None:
            first_round = 1
            initial = initial_weights(config.models, config.train, data.num_features, data.num_classes)
        else:
            session.resume()
            strategy.restore(checkpoint.state)
            recorder.restore(run.manifest)
            first_round, initial = checkpoint.server_round + 1, checkpoint.weights
        evaluator = GlobalEvaluator(config, data, run, recorder, progress)
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial),
            num_rounds=config.federation.rounds,
            timeout=config.federation.client_timeout,
            evaluate_fn=evaluator,
            first_round=first_round,
            on_round_end=lambda server_round, arrays: run.save_checkpoint(
                server_round, arrays.to_numpy_ndarrays(), strategy.checkpoint_state()),
        )
    final = result.arrays.to_numpy_ndarrays()
    run.save_final_model(final)
    run.write_manifest(
        final_accuracy=evaluator.last.get("accuracy"),
        final_model_digest=digest_hex(weights_digest(final)),
        wall_seconds=round(time.perf_counter() - evaluator.started, 2),
    )
