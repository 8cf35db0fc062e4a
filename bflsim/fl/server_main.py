"""The server side of a federated run: check the data, run the strategy, evaluate every round.

:func:`prepare_run` and :func:`serve` are what a Flower ServerApp's ``main`` does, whichever
way the app is started (``bflsim run`` on the Ray simulation backend, or ``flwr run .``); the
caller holds the run folder open (:meth:`bflsim.runfolder.RunFolder.start`), which sets the
run's status. Every round's new global model is scored on the held-out test split once, by
the strategy before it commits the round (the confusion matrix's digest goes on chain), and
the round's rows reach the run folder before the next round starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from bflsim.aggregators import DefenceState
from bflsim.config import ExperimentConfig, to_wire
from bflsim.data import PreparedData, check_enough_rows, check_node_rows, run_data_dir
from bflsim.edge_node import (
    check_attack_data,
    load_data,
    loop_attack_class,
    node_partitions,
    root_update,
    success_rows,
)
from bflsim.hashing import digest_hex, run_digest, weights_digest
from bflsim.ledger.factory import check_ledger, open_ledger
from bflsim.ledger.session import make_run_facts, open_session
from bflsim.metrics import attack_success_rate, score_probabilities
from bflsim.models import initial_weights, predict
from bflsim.progress import Progress, format_seconds
from bflsim.runfolder import Checkpoint, RoundRecorder, RunFolder
from bflsim.vectors import Weights
from strategies.robust import RobustStrategy


@dataclass
class GlobalEvaluator:
    """Scores the global model on the test split, once per round, and logs the rows.

    :meth:`score` is what the strategy calls before committing a round (it needs the
    confusion matrix); calling the evaluator (Flower's ``evaluate_fn``) logs that round's rows
    from the scores already computed, or scores the model itself (round 0).
    """

    config: ExperimentConfig
    data: PreparedData
    run: RunFolder
    recorder: RoundRecorder
    progress: Progress
    started: float = field(default_factory=time.perf_counter)
    last: dict[str, float] = field(default_factory=dict)
    _scored: dict[int, tuple[bytes, dict[str, float], Any]] = field(default_factory=dict)
    _aimed: tuple[Any, int] | None = field(init=False)  # a targeted attack's test rows and target

    def __post_init__(self) -> None:
        self._aimed = success_rows(self.config, self.data)

    def score(self, server_round: int, weights: Weights) -> Any:
        """The confusion matrix of ``weights`` on the test split (kept for the round's rows),
        and for a targeted attack its success rate on the attack's test rows."""
        data = self.data
        proba = predict(self.config.models, self.config.train, weights, data.x_test, data.num_classes)
        metrics, cm = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)
        if self._aimed is not None:
            rows, target = self._aimed
            hit = predict(self.config.models, self.config.train, weights, rows, data.num_classes)
            metrics["attack_success_rate"] = attack_success_rate(hit, target)
        self._scored[server_round] = (weights_digest(weights), metrics, cm)
        return cm

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = arrays.to_numpy_ndarrays()
        scored = self._scored.pop(server_round, None)
        if scored is None or scored[0] != weights_digest(weights):  # not the model scored before the commit
            self.score(server_round, weights)
            scored = self._scored.pop(server_round)
        _, metrics, cm = scored
        data, name = self.data, self.config.models.names[0]
        metrics = dict(metrics)
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
    """Load the data and check everything a run needs before Ray, the chain or the run folder
    start: bad data, too few training rows for the nodes, a node left with fewer than
    ``federation.min_node_rows`` rows, an RPC endpoint that is unreachable, on another chain
    or cannot pay, a targeted attack whose classes or columns the data lacks. Return the data directory the server and the nodes read (``--data-dir``,
    else ``data.data_dir``, else ``$BFLSIM_DATA_DIR``, else ``./data``; None for synthetic
    data) and the manifest's run facts."""
    root = run_data_dir(config.data, data_dir)
    data_path = str(root) if root is not None else None
    data = load_data(config.data, data_path)
    check_enough_rows(config.federation, len(data.y_train))
    check_node_rows(config.federation, node_partitions(config.data, config.federation, data_path))
    check_ledger(config)
    check_attack_data(config, data)
    if config.loop is not None:
        loop_attack_class(config, data)  # a class the held-out rows lack is refused here
    malicious = "per round" if config.attack.redraw_each_round else config.malicious_nodes(1).tolist()
    return data_path, {"data": data.describe(), "malicious_nodes": malicious}


def run_facts(config: ExperimentConfig, data: PreparedData, run: RunFolder) -> dict[str, str]:
    """The run's facts and digest (``bflsim.ledger.session.make_run_facts``), written to the
    manifest as ``run_facts`` / ``run_digest``; a run folder that has them keeps them."""
    facts = run.manifest.get("run_facts")
    if not facts:
        facts = make_run_facts(
            config, run_id=run.run_id, git_commit=run.manifest.get("git_commit"),
            sources=run.manifest.get("data", {}).get("sources", []), x_test=data.x_test, y_test=data.y_test,
        )
        run.write_manifest(run_facts=facts, run_digest=digest_hex(run_digest(facts)))
    return dict(facts)


def describe(config: ExperimentConfig) -> str:
    """The run's first progress line."""
    return (
        f"{config.name}: {config.federation.num_nodes} edge nodes, {config.federation.rounds} rounds, "
        f"{config.aggregator.name} (f={config.assumed_malicious}), attack {config.attack.name} x {config.num_malicious}"
    )


def closed_loop(grid: Grid, edge_index: dict[int, int], config: ExperimentConfig, session: Any, run: RunFolder,
                final: Weights, data_dir: str | None, progress: Progress) -> dict[str, Any]:
    """The closed loop with the global model of ``loop.model_round`` (the final one when unset)."""
    from bflsim.fl.loop import committed_model, run_loop

    loop = config.loop
    assert loop is not None
    last = config.federation.rounds
    model_round = last if loop.model_round is None else loop.model_round
    weights = final if model_round == last else committed_model(session, model_round)
    progress.say(f"closed loop: {config.federation.num_nodes * loop.devices_per_node} devices, {loop.compromised} "
                 f"compromised, {loop.duration_seconds:g} s of traffic, the global model of round {model_round}")
    return {"model_round": model_round, **run_loop(grid, edge_index, config, session, run, weights, data_dir,
                                                   progress)}


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
    facts = run_facts(config, data, run)
    with open_ledger(config.ledger) as ledger:
        evaluator = GlobalEvaluator(config, data, run, recorder, progress)
        session = open_session(config, ledger, run.path, facts)
        reference = None
        if "reference" in config.rule.needs:
            def reference(server_round: int, weights: Weights) -> Any:
                return root_update(config, server_round, weights, data_dir)
        strategy = RobustStrategy(
            config.rule, config.aggregator.reject_factor, config.federation, to_wire(config), data_dir,
            session, recorder, score=evaluator.score,
            defence=DefenceState(config.rule, config.aggregator.seed, reference),
        )
        if checkpoint is None:
            first_round = 1
            initial = initial_weights(config.models, config.train, data.num_features, data.num_classes)
        else:
            session.resume()
            strategy.restore(checkpoint.state, checkpoint.defence)
            recorder.restore(run.manifest)
            first_round, initial = checkpoint.server_round + 1, checkpoint.weights
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial),
            num_rounds=config.federation.rounds,
            timeout=config.federation.client_timeout,
            evaluate_fn=evaluator,
            first_round=first_round,
            on_round_end=lambda server_round, arrays: run.save_checkpoint(
                server_round, arrays.to_numpy_ndarrays(), strategy.checkpoint_state(),
                strategy.defence.arrays() if config.rule.needs else None),
        )
        final = result.arrays.to_numpy_ndarrays()
        if config.loop is not None:
            loop_summary = closed_loop(grid, strategy.edge_index, config, session, run, final, data_dir, progress)
            run.write_manifest(loop=loop_summary)
    run.save_final_model(final)
    run.write_manifest(
        final_accuracy=evaluator.last.get("accuracy"),
        final_model_digest=digest_hex(weights_digest(final)),
        wall_seconds=round(time.perf_counter() - evaluator.started, 2),
    )
