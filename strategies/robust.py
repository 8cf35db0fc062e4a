"""The robust strategy: a Flower Message-API strategy that composes a pure aggregator.

Each round it samples a cohort of edge nodes (reproducibly, from the federation seed),
sends them the global model, and hands the returned weights, stacked as an (n, d) matrix,
to a rule of :mod:`bflsim.aggregators` (FedAvg, Krum, Multi-Krum, median, trimmed mean).
The rule returns the aggregate and which nodes it kept, so the strategy records, per round,
which nodes were selected and whether a poisoned update got through.

Before the first round it asks every node who it is (a ``query`` message): Flower's node
ids are opaque, and the audit trail and the results speak of edge-node indices.

A node that fails or times out is counted as a failure; the round goes on with the others
as long as the rule's condition still holds (Krum: n > 2f + 2), and stops the run cleanly
otherwise (completed rounds are already on disk).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from bflsim.aggregators import AggregatorError, aggregate, validate_aggregator
from bflsim.config import ExperimentConfig
from bflsim.fl.node import experiment_to_json, malicious_nodes
from bflsim.results import RunFolder
from bflsim.vectors import flatten, unflatten


class RoundFailed(RuntimeError):
    """Too few usable updates this round for the aggregation rule; the run stops here."""


@dataclass
class RoundStats:
    """What the last round's aggregation did (read by the progress line)."""

    received: int = 0
    failures: int = 0
    poisoned_received: int = 0
    poisoned_accepted: int = 0
    started: float = field(default_factory=time.perf_counter)


class RobustStrategy(Strategy):
    """Sample, send, aggregate with a robust rule, and record the selection."""

    def __init__(self, config: ExperimentConfig, run: RunFolder, data_dir: str | None = None) -> None:
        self.config = config
        self.run = run
        self.data_dir = data_dir
        self.experiment_json = experiment_to_json(config)
        self.edge_index: dict[int, int] = {}  # Flower node id -> edge-node index
        self.stats = RoundStats()
        self.model_name = config.models.names[0]

    def summary(self) -> None:
        agg, fed = self.config.aggregator, self.config.federation
        print(
            f"RobustStrategy: {agg.name} (f={self.config.declared_malicious}), cohort "
            f"{fed.cohort_size}/{fed.num_nodes}, {fed.rounds} rounds",
            flush=True,
        )

    # --- nodes and cohorts -----------------------------------------------------------

    def register_nodes(self, grid: Grid) -> None:
        """Ask every connected node for its edge-node index."""
        expected = self.config.federation.num_nodes
        deadline = time.monotonic() + 120
        while len(node_ids := list(grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise RoundFailed(f"only {len(node_ids)} of {expected} edge nodes connected")
            time.sleep(0.5)
        record = RecordDict({"config": self._config_record(0)})
        messages = [Message(record, dst_node_id=nid, message_type=MessageType.QUERY) for nid in node_ids]
        for reply in grid.send_and_receive(messages, timeout=self.config.federation.client_timeout):
            if not reply.has_error():
                self.edge_index[reply.metadata.src_node_id] = int(reply.content["metrics"]["node"])

    def sample_cohort(self, server_round: int) -> list[int]:
        """Edge-node indices of this round's cohort, reproducible from the federation seed."""
        fed = self.config.federation
        rng = np.random.default_rng([fed.seed, server_round])
        available = sorted(self.edge_index.values())
        size = min(fed.cohort_size, len(available))
        return sorted(int(i) for i in rng.choice(available, size=size, replace=False))

    def _config_record(self, server_round: int) -> ConfigRecord:
        return ConfigRecord(
            {"server-round": server_round, "experiment": self.experiment_json, "data-dir": self.data_dir or ""}
        )

    # --- Flower hooks ------------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.edge_index:
            self.register_nodes(grid)
        self.stats = RoundStats()
        cohort = set(self.sample_cohort(server_round))
        record = RecordDict({"arrays": arrays, "config": self._config_record(server_round)})
        self.cohort_size = len(cohort)
        return [
            Message(record, dst_node_id=nid, message_type=MessageType.TRAIN)
            for nid, edge in self.edge_index.items()
            if edge in cohort
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        failures = self.cohort_size - len(ok)
        nodes = np.array([int(m.content["metrics"]["node"]) for m in ok], dtype=np.int64)
        order = np.argsort(nodes)
        nodes = nodes[order]
        weights = [ok[i].content["arrays"].to_numpy_ndarrays() for i in order]
        num_samples = np.array([int(ok[i].content["metrics"]["num-examples"]) for i in order])

        agg = self.config.aggregator
        f = self.config.declared_malicious
        try:
            validate_aggregator(agg.name, len(nodes), f, num_selected=agg.num_selected, trim_fraction=agg.trim_fraction)
        except AggregatorError as err:
            self.run.log({"failures": failures}, split="round", round=server_round)
            raise RoundFailed(f"round {server_round}: {len(nodes)} usable updates, {failures} failures: {err}") from err

        shapes = None
        rows = []
        for w in weights:
            flat, shapes = flatten(w)
            rows.append(flat)
        selection = aggregate(
            agg.name, np.stack(rows), num_samples=num_samples, num_malicious=f,
            num_selected=agg.num_selected, trim_fraction=agg.trim_fraction,
        )
        new_weights = unflatten(selection.aggregate.astype(np.float32), shapes)

        malicious = np.isin(nodes, malicious_nodes(self.config, server_round))
        selected = np.zeros(len(nodes), dtype=bool)
        selected[selection.selected] = True
        self.stats.received = len(nodes)
        self.stats.failures = failures
        self.stats.poisoned_received = int(malicious.sum())
        self.stats.poisoned_accepted = int((malicious & selected).sum())
        round_metrics = {
            "updates_received": len(nodes),
            "failures": failures,
            "poisoned_received": self.stats.poisoned_received,
            "poisoned_accepted": self.stats.poisoned_accepted,
            "poisoned_weight": float(selection.weights[malicious].sum()),
            "honest_rejected": int((~malicious & ~selected).sum()),
        }
        self.run.log(round_metrics, model=self.model_name, split="round", round=server_round)
        for i, node in enumerate(nodes):
            self.run.log(
                {"selected": float(selected[i]), "score": float(selection.scores[i]),
                 "weight": float(selection.weights[i]), "malicious": float(malicious[i])},
                model=self.model_name, split="node", round=server_round, node=int(node),
            )
        losses = [float(ok[i].content["metrics"]["train-loss"]) for i in order if "train-loss" in ok[i].content["metrics"]]
        train_metrics = MetricRecord({**round_metrics, "train-loss": float(np.mean(losses)) if losses else 0.0})
        return ArrayRecord(new_weights), train_metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return []  # the global model is evaluated on the server's held-out test split

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None
