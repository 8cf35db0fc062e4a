"""The robust strategy: a Flower Message-API strategy that composes a pure aggregator.

Each round it samples a cohort of edge nodes (reproducibly, from the federation seed),
sends them the global model, and hands the returned weights, stacked as an (n, d) matrix,
to a rule of :mod:`bflsim.aggregators` (FedAvg, Krum, Multi-Krum, median, trimmed mean).
The rule returns the aggregate and which nodes it kept, so the strategy records, per round,
which nodes were selected and whether a poisoned update got through.

Before the first round it asks every node who it is (a ``query`` message): Flower's node
ids are opaque, and the audit trail and the results speak of edge-node indices. A
federation whose size differs from ``federation.num_nodes`` stops the run there.

A cohort node that raises or does not answer within ``federation.client_timeout`` is a
failure of the round: it is logged (``failures`` per round, ``failed`` per node, the reason
in the manifest's ``node_failures``), and the round goes on with the other updates as long
as the rule's condition still holds for the smaller n (Krum: n > 2f + 2, Blanchard et al.,
NeurIPS 2017). Otherwise :class:`RoundFailed` stops the run; completed rounds are already
on disk.

With a ledger (``[ledger]``, :class:`bflsim.fl.chain.ChainSession`), the query step also
deploys the registry, enrolls every node's key and relays each node's signed data
registration; every round then samples the cohort from the nodes the contract still counts
as active, opens the round with the global model's digest, sends each node its transaction
context and registered data digest, checks and relays the nodes' signed ``submitUpdate``
transactions, and commits the new global digest, the accepted nodes (those aggregated and
not judged outliers, :func:`bflsim.aggregators.rejected`) and the digest of the scores. A node
whose data fails VerifyIntegrity is excluded from later cohorts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from numpy.typing import NDArray

from bflsim.aggregators import AggregatorError, Selection, aggregate, rejected, validate_aggregator
from bflsim.config import ExperimentConfig
from bflsim.fl.chain import ChainSession, Received
from bflsim.fl.node import experiment_to_json, malicious_nodes
from bflsim.ledger import Ledger, NoLedger
from bflsim.results import RunFolder
from bflsim.vectors import Shapes, flatten, unflatten

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


class RoundFailed(RuntimeError):
    """Too few usable updates this round for the aggregation rule; the run stops here."""


class FederationMismatch(RuntimeError):
    """The connected SuperNodes are not the experiment's ``federation.num_nodes`` edge nodes."""


@dataclass
class RoundStats:
    """What the last round's aggregation did (read by the progress line)."""

    received: int = 0
    failures: int = 0
    poisoned_received: int = 0
    poisoned_accepted: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Updates:
    """A round's usable replies, ordered by edge-node index; ``matrix`` is (n, d)."""

    nodes: NDArray[np.int64]
    matrix: NDArray[np.float32]
    shapes: Shapes
    num_samples: NDArray[np.int64]
    train_losses: list[float]

    @classmethod
    def from_replies(cls, replies: list[Message]) -> Updates:
        ok = sorted(
            (m for m in replies if not m.has_error() and "arrays" in m.content),
            key=lambda m: int(m.content["metrics"]["node"]),
        )
        metrics = [m.content["metrics"] for m in ok]
        flat = [flatten(m.content["arrays"].to_numpy_ndarrays()) for m in ok]
        return cls(
            nodes=np.array([int(m["node"]) for m in metrics], dtype=np.int64),
            matrix=np.stack([v for v, _ in flat]) if flat else np.empty((0, 0), np.float32),
            shapes=flat[0][1] if flat else (),
            num_samples=np.array([int(m["num-examples"]) for m in metrics], dtype=np.int64),
            train_losses=[float(m["train-loss"]) for m in metrics if "train-loss" in m],
        )


def last_line(reason: str) -> str:
    """The last line of an error reply's reason (Flower sends the node's traceback), uncoloured."""
    lines = [line.strip() for line in _ANSI_CODES.sub("", reason).splitlines() if line.strip()]
    return lines[-1].removesuffix("'>") if lines else reason


def connected_nodes(grid: Grid, num_nodes: int, *, timeout: float = 120.0, settle: float = 2.0) -> list[int]:
    """The Flower node ids of the federation, which must have ``num_nodes`` SuperNodes.

    The simulation runtime registers all its SuperNodes at once, so a count that holds for
    ``settle`` seconds is the federation's size.

    Raises
    ------
    FederationMismatch
        When that size is not ``num_nodes`` (``federation.num_nodes``).
    """
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while True:
        node_ids = list(grid.get_node_ids())
        now = time.monotonic()
        if len(node_ids) != count:
            count, since = len(node_ids), now
        if (count > 0 and now - since >= settle) or now > deadline:
            break
        time.sleep(0.25)
    if count != num_nodes:
        raise FederationMismatch(
            f"the federation has {count} SuperNodes but federation.num_nodes = {num_nodes}: "
            f"run `flwr run` with --federation-config \"num-supernodes={num_nodes}\", "
            f"or set federation.num_nodes = {count}"
        )
    return node_ids


class RobustStrategy(Strategy):
    """Sample, send, aggregate with a robust rule, and record the selection and failures."""

    def __init__(
        self, config: ExperimentConfig, run: RunFolder, data_dir: str | None = None, ledger: Ledger | None = None
    ) -> None:
        self.config = config
        self.run = run
        self.data_dir = data_dir
        self.experiment_json = experiment_to_json(config)
        self.edge_index: dict[int, int] = {}  # Flower node id -> edge-node index
        self.cohort: list[int] = []
        self.stats = RoundStats()
        self.node_failures: list[dict] = []
        self.model_name = config.models.names[0]
        ledger = ledger or NoLedger()
        self.chain = ChainSession(config, ledger, run.path) if ledger.enabled else None
        self.excluded: dict[int, str] = {}  # edge node -> why it takes no further part
        self.refusals: dict[int, str] = {}  # this round: edge node -> why its update was refused

    def summary(self) -> None:
        agg, fed = self.config.aggregator, self.config.federation
        print(
            f"RobustStrategy: {agg.name} (f={self.config.declared_malicious}), cohort "
            f"{fed.cohort_size}/{fed.num_nodes}, {fed.rounds} rounds",
            flush=True,
        )

    # --- nodes and cohorts -----------------------------------------------------------

    def register_nodes(self, grid: Grid) -> None:
        """Ask every connected node for its edge-node index; the counts must match."""
        expected = self.config.federation.num_nodes
        node_ids = connected_nodes(grid, expected)
        record = RecordDict({"config": self._config_record(0)})
        messages = [Message(record, dst_node_id=nid, message_type=MessageType.QUERY) for nid in node_ids]
        errors = []
        for reply in grid.send_and_receive(messages, timeout=self.config.federation.client_timeout):
            if reply.has_error():
                errors.append(reply.error.reason)
            else:
                self.edge_index[reply.metadata.src_node_id] = int(reply.content["metrics"]["node"])
        if len(self.edge_index) != expected:
            raise FederationMismatch(
                f"only {len(self.edge_index)} of {expected} edge nodes said who they are"
                + (f"; first error: {last_line(errors[0])}" if errors else "")
            )
        if self.chain is not None:
            self.run.write_manifest(ledger=self.chain.setup())
            self.register_data(grid)

    def register_data(self, grid: Grid) -> None:
        """Every node signs the digest of its data batch; the server relays it to the registry."""
        flower_id = {edge: nid for nid, edge in self.edge_index.items()}
        contexts = self.chain.contexts(sorted(flower_id))
        messages = [
            Message(RecordDict({"config": ConfigRecord({**self._config_record(0), **contexts[edge]})}),
                    dst_node_id=flower_id[edge], message_type=f"{MessageType.QUERY}.register_data")
            for edge in sorted(flower_id)
        ]
        signed, digests, failed = {}, {}, {}
        for reply in grid.send_and_receive(messages, timeout=self.config.federation.client_timeout):
            edge = self.edge_index[reply.metadata.src_node_id]
            if reply.has_error():
                failed[edge] = f"data registration failed: {last_line(reply.error.reason)}"
            else:
                signed[edge] = bytes(reply.content["chain"]["tx"])
                digests[edge] = bytes(reply.content["chain"]["data-digest"])
        failed.update(self.chain.register_data(signed, digests))
        for edge in set(flower_id) - set(signed) - set(failed):
            failed[edge] = f"no data registration within federation.client_timeout = {self.config.federation.client_timeout:g} s"
        self.exclude(failed)

    def exclude(self, nodes: dict[int, str]) -> None:
        """Leave ``{node: why}`` out of every later cohort; the manifest lists them."""
        if nodes:
            self.excluded.update(nodes)
            self.run.write_manifest(excluded_nodes={str(k): v for k, v in sorted(self.excluded.items())})

    def sample_cohort(self, server_round: int) -> list[int]:
        """Edge-node indices of this round's cohort, reproducible from the federation seed.

        With a ledger, from the nodes the contract still counts as active, less excluded ones.
        """
        fed = self.config.federation
        rng = np.random.default_rng([fed.seed, server_round])
        available = sorted(self.edge_index.values())
        if self.chain is not None:
            active = set(self.chain.eligible())
            available = [i for i in available if i in active and i not in self.excluded]
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
        self.refusals = {}
        self.cohort = self.sample_cohort(server_round)
        base = self._config_record(server_round)
        chain_configs = (
            self.chain.open_round(server_round, arrays.to_numpy_ndarrays(), self.cohort) if self.chain else {}
        )
        return [
            Message(
                RecordDict({"arrays": arrays, "config": ConfigRecord({**base, **chain_configs.get(edge, {})})}),
                dst_node_id=nid, message_type=MessageType.TRAIN,
            )
            for nid, edge in self.edge_index.items()
            if edge in self.cohort
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.check_integrity(server_round, replies)
        received = self.relay_updates(server_round, replies) if self.chain else []
        usable = [m for m in replies if self._edge(m) not in self.refusals]
        updates = Updates.from_replies(usable)
        failures = self.record_failures(server_round, replies, updates.nodes)
        n, f, agg = len(updates.nodes), self.config.declared_malicious, self.config.aggregator
        try:
            validate_aggregator(agg.name, n, f, num_selected=agg.num_selected, trim_fraction=agg.trim_fraction)
        except AggregatorError as err:
            self.run.log({"updates_received": n, "failures": failures}, model=self.model_name,
                         split="round", round=server_round)
            raise RoundFailed(f"round {server_round}: {n} usable updates after {failures} failures: {err}") from err

        selection = aggregate(
            agg.name, updates.matrix, num_samples=updates.num_samples, num_malicious=f,
            num_selected=agg.num_selected, trim_fraction=agg.trim_fraction,
        )
        new_weights = unflatten(selection.aggregate.astype(np.float32), updates.shapes)
        chain_metrics = {}
        if self.chain is not None:
            nodes = [int(i) for i in updates.nodes]
            chain_metrics = self.chain.commit_round(
                server_round, self.cohort, received, nodes,
                selected=[nodes[i] for i in selection.selected],
                rejected=[nodes[i] for i in rejected(agg.name, selection, f, agg.reject_factor)],
                scores=selection.scores, new_weights=new_weights,
            )
        round_metrics = self.record_selection(server_round, updates.nodes, selection, failures, chain_metrics)
        losses = updates.train_losses
        return ArrayRecord(new_weights), MetricRecord(
            {**round_metrics, "train-loss": float(np.mean(losses)) if losses else 0.0}
        )

    def _edge(self, reply: Message) -> int | None:
        return self.edge_index.get(reply.metadata.src_node_id)

    def check_integrity(self, server_round: int, replies: list[Message]) -> None:
        """Exclude the nodes whose data failed VerifyIntegrity (they said so instead of training)."""
        failed = {
            self._edge(reply): str(reply.content["chain"]["reason"])
            for reply in replies
            if not reply.has_error() and "integrity-failed" in reply.content["metrics"]
        }
        for edge in failed:
            self.run.log({"integrity_failed": 1.0}, model=self.model_name, split="node", round=server_round, node=edge)
        self.refusals.update(failed)
        self.exclude(failed)

    def relay_updates(self, server_round: int, replies: list[Message]) -> list[Received]:
        """Hand every update with its signed transaction to the chain session; note refusals."""
        received = [
            Received(
                node=self._edge(m), weights=m.content["arrays"].to_numpy_ndarrays(),
                num_samples=int(m.content["metrics"]["num-examples"]), raw_tx=bytes(m.content["chain"]["tx"]),
            )
            for m in replies
            if not m.has_error() and "arrays" in m.content
        ]
        received.sort(key=lambda u: u.node)
        self.chain.relay_updates(server_round, received)
        self.refusals.update({u.node: u.refused for u in received if u.refused})
        return received

    def record_selection(
        self, server_round: int, nodes: NDArray[np.int64], selection: Selection, failures: int,
        chain_metrics: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Log which nodes the rule kept and whether poisoned updates got through."""
        malicious = np.isin(nodes, malicious_nodes(self.config, server_round))
        selected = np.isin(np.arange(len(nodes)), selection.selected)
        self.stats.received, self.stats.failures = len(nodes), failures
        self.stats.poisoned_received = int(malicious.sum())
        self.stats.poisoned_accepted = int((malicious & selected).sum())
        round_metrics = {
            "updates_received": len(nodes),
            "failures": failures,
            "poisoned_received": self.stats.poisoned_received,
            "poisoned_accepted": self.stats.poisoned_accepted,
            "poisoned_weight": float(selection.weights[malicious].sum()),
            "honest_rejected": int((~malicious & ~selected).sum()),
            **(chain_metrics or {}),
        }
        self.run.log(round_metrics, model=self.model_name, split="round", round=server_round)
        for i, node in enumerate(nodes):
            self.run.log(
                {"selected": float(selected[i]), "score": float(selection.scores[i]),
                 "weight": float(selection.weights[i]), "malicious": float(malicious[i])},
                model=self.model_name, split="node", round=server_round, node=int(node),
            )
        return round_metrics

    def record_failures(self, server_round: int, replies: list[Message], usable: NDArray[np.int64]) -> int:
        """Log each cohort node without a usable update (``failed`` rows, the reason in the manifest)."""
        reasons = {
            self.edge_index.get(m.metadata.src_node_id): last_line(m.error.reason) for m in replies if m.has_error()
        }
        reasons.update(self.refusals)
        timeout = self.config.federation.client_timeout
        usable_nodes = set(usable.tolist())
        failed = [node for node in self.cohort if node not in usable_nodes]
        for node in failed:
            reason = reasons.get(node, f"no reply within federation.client_timeout = {timeout:g} s")
            self.node_failures.append({"round": server_round, "node": node, "reason": reason})
            self.run.log({"failed": 1.0}, model=self.model_name, split="node", round=server_round, node=node)
        if failed:
            self.run.write_manifest(node_failures=self.node_failures)
        return len(failed)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return []  # the global model is evaluated on the server's held-out test split

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None
