"""The server side of a federated run: run folder, initial model, strategy loop, evaluation.

:func:`start_run` and :func:`serve` are what a Flower ServerApp's ``main`` does, whichever
way the app is started (``bflsim run`` on the Ray simulation backend, or ``flwr run .``).
After every round the global model is scored on the held-out test split and the round's
rows reach the run folder before the next round starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from bflsim.config import ExperimentConfig, config_to_dict
from bflsim.data import PreparedData, resolve_data_dir
from bflsim.fl.node import cached_model, initial_weights, load_data, malicious_nodes
from bflsim.hashing import digest_hex, weights_digest
from bflsim.ledger import LedgerError
from bflsim.ledger.factory import open_ledger
from bflsim.metrics import confusion_matrix, summary_metrics
from bflsim.progress import Progress, format_seconds
from bflsim.results import RunFolder
from strategies.robust import RobustStrategy, RoundFailed


@dataclass
class GlobalEvaluator:
    """Scores the global model on the test split after each round and logs the rows."""

    config: ExperimentConfig
    data: PreparedData
    run: RunFolder
    strategy: RobustStrategy
    progress: Progress
    started: float = field(default_factory=time.perf_counter)
    last: dict[str, float] = field(default_factory=dict)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = cached_model(self.config, self.data.num_features, self.data.num_classes)
        model.set_weights(arrays.to_numpy_ndarrays())
        proba = model.predict(self.data.x_test, batch_size=4096, verbose=0)
        y = self.data.y_test
        cm = confusion_matrix(y, np.argmax(proba, axis=1), self.data.num_classes)
        metrics = summary_metrics(cm, self.data.normal_class)
        metrics["loss"] = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0))))
        elapsed = time.perf_counter() - self.started
        metrics["elapsed_seconds"] = elapsed
        if server_round > 0:
            metrics["round_seconds"] = time.perf_counter() - self.strategy.stats.started
        name = self.config.models.names[0]
        self.run.log(metrics, model=name, split="test", round=server_round)
        self.last = metrics
        self._say(server_round, metrics, elapsed)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    def _say(self, server_round: int, metrics: dict[str, float], elapsed: float) -> None:
        rounds = self.config.federation.rounds
        line = f"round {server_round:>3}/{rounds}  accuracy {metrics['accuracy']:.4f}  f1 {metrics['f1_macro']:.4f}"
        if server_round > 0:
            stats = self.strategy.stats
            eta = elapsed / server_round * (rounds - server_round)
            line += (
                f"  poisoned accepted {stats.poisoned_accepted}/{stats.poisoned_received}"
                f"  failures {stats.failures}  elapsed {format_seconds(elapsed)}  eta {format_seconds(eta)}"
            )
        self.progress.say(line)


def start_run(
    config: ExperimentConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    run_dir: Path | None = None,
    point: dict | None = None,
    **manifest: Any,
) -> tuple[RunFolder, str | None]:
    """Check the data, create the run folder and write its manifest (plus ``manifest`` entries).

    Returns the folder and the data directory the server and the nodes read (None for
    synthetic data). ``run_dir`` and ``point`` place the run at a sweep point's folder.
    """
    progress = progress or Progress(quiet=True)
    data_path = str(resolve_data_dir(data_dir)) if config.data.dataset != "synthetic" else None
    data = load_data(config.data, data_path)  # bad data fails here, before any node starts
    seeds = {
        "data_seed": config.data.seed, "train_seed": config.train.seed,
        "federation_seed": config.federation.seed, "attack_seed": config.attack.seed,
    }
    run = RunFolder.create(Path(out_dir), config.name, config_to_dict(config), seeds, path=run_dir, point=point)
    run.write_manifest(
        data=data.describe(),
        malicious_nodes=malicious_nodes(config, 1).tolist() if not config.attack.redraw_each_round else "per round",
        **manifest,
    )
    progress.say(
        f"{config.name}: {config.federation.num_nodes} edge nodes, {config.federation.rounds} rounds, "
        f"{config.aggregator.name}, attack {config.attack.name} x {config.num_malicious}"
    )
    return run, data_path


def serve(grid: Grid, config: ExperimentConfig, run: RunFolder, data_dir: str | None, progress: Progress) -> None:
    """Run all rounds; mark the run complete, or stopped with the reason.

    The ledger of ``[ledger]`` is open for the length of the run (an anvil started for it is
    stopped after); a chain that fails midway stops the run like a failed round.
    """
    data = load_data(config.data, data_dir)
    try:
        with open_ledger(config.ledger) as ledger:
            strategy = RobustStrategy(config, run, data_dir, ledger)
            evaluator = GlobalEvaluator(config, data, run, strategy, progress)
            result = strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord(initial_weights(config, data.num_features, data.num_classes)),
                num_rounds=config.federation.rounds,
                timeout=config.federation.client_timeout,
                evaluate_fn=evaluator,
            )
    except (RoundFailed, LedgerError) as err:
        run.finish(status="stopped", error=str(err))
        raise
    final = result.arrays.to_numpy_ndarrays()
    np.savez(run.path / "final_model.npz", *final)
    run.finish(
        final_accuracy=evaluator.last.get("accuracy"),
        final_model_digest=digest_hex(weights_digest(final)),
        wall_seconds=round(time.perf_counter() - evaluator.started, 2),
    )
