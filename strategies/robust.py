"""The robust strategy: a Flower Message-API strategy that composes a pure aggregation rule.

Each round it samples a cohort of edge nodes (reproducibly, from the federation seed),
sends them the global model, and hands their updates to :func:`bflsim.aggregators.decide_round`
with a rule of :mod:`bflsim.aggregators` (FedAvg, Krum, Multi-Krum, median, trimmed mean, ...).
Before the first round it asks every node who it is (a ``query`` message): Flower's node ids
are opaque, and the trail and the results speak of edge-node indices.

A cohort node that raises, does not answer within ``federation.client_timeout``, fails
VerifyIntegrity or whose update is refused is a failure of the round; the round goes on with
the other updates as long as the rule still holds for the smaller n (Krum: n > 2f + 2).
Otherwise :class:`RoundFailed` stops the run (completed rounds are on disk). The strategy
refuses an update holding NaN or inf, or claiming another sample count than the node gave
when it said who it is; the ledger session refuses one whose signed transaction is not exactly
the one asked for. A refusal is that node's alone: it is never relayed and never stops the run.

Before committing a round the strategy scores the new global model on the test split
(``score``, the server's evaluator) and commits the digest of its confusion matrix with it.

:meth:`RobustStrategy.start` is Flower's round loop that can also begin after round 1: a
resumed run (:meth:`bflsim.runfolder.RunFolder.resume`) carries on from its checkpoint,
with the strategy's own state (:meth:`RobustStrategy.checkpoint_state`) restored.

The chain is the session's business (:mod:`bflsim.ledger.session`: deploy and enroll, data
registration, open, relay and commit each round; a no-op for Standard FL), and the rows are
the recorder's (:mod:`bflsim.runfolder.recorder`, the one part that knows who is malicious).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from numpy.typing import NDArray

from bflsim.aggregators import AggregatorError, DefenceState, Rule, decide_round
from bflsim.config import FederationConfig
from bflsim.hashing import evaluation_digest
from bflsim.ledger.session import ChainSession, NoChainSession, ReceivedUpdate
from bflsim.runfolder import RoundRecorder, RunStopped
from bflsim.vectors import Weights
from strategies import protocol as p


class RoundFailed(RunStopped):
    """Too few usable updates this round for the aggregation rule; the run stops here."""


class FederationMismatch(RuntimeError):
    """The connected SuperNodes are not the experiment's ``federation.num_nodes`` edge nodes."""


def connected_nodes(grid: Grid, num_nodes: int, *, timeout: float = 120.0, settle: float = 2.0) -> list[int]:
    """The Flower node ids of the federation, which must have ``num_nodes`` SuperNodes.

    The simulation runtime registers all its SuperNodes at once, so the expected count seen
    twice in a row, or another count that holds for ``settle`` seconds, is the federation's
    size; another size raises :class:`FederationMismatch`.
    """
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while True:
        node_ids = list(grid.get_node_ids())
        now = time.monotonic()
        if len(node_ids) != count:
            count, since = len(node_ids), now
        elif count == num_nodes or (count > 0 and now - since >= settle):
            break
        if now > deadline:
            break
        time.sleep(0.05 if count == num_nodes else 0.25)
    if count != num_nodes:
        raise FederationMismatch(
            f"the federation has {count} SuperNodes but federation.num_nodes = {num_nodes}: "
            f"run `flwr run` with --federation-config \"num-supernodes={num_nodes}\" (simulation) or with "
            f"{num_nodes} SuperNodes online (`flwr supernode list`), or set federation.num_nodes = {count}"
        )
    return node_ids


def refuse_unusable(updates: Iterable[ReceivedUpdate], sizes: dict[int, int]) -> None:
    """Refuse each update holding NaN or inf, or claiming another sample count than its node's
    ``sizes`` entry (what it said at enrolment); the others are left as they are."""
    for update in updates:
        if not all(np.isfinite(w).all() for w in update.weights):
            update.refuse("non_finite", f"update of node {update.node} holds NaN or inf")
        elif update.node in sizes and update.num_samples != sizes[update.node]:
            update.refuse("num_samples", f"reported {update.num_samples} samples; node {update.node} "
                                         f"holds {sizes[update.node]}")


class RobustStrategy(Strategy):
    """Sample, send, decide the round with a robust rule, score and commit it, record it.

    ``score(server_round, weights)`` is the new global model's confusion matrix on the test
    split (the server's evaluator, which keeps it for the round's evaluation rows).
    """

    def __init__(
        self, rule: Rule, reject_factor: float, federation: FederationConfig, experiment: str,
        data_dir: str | None, session: ChainSession | NoChainSession, recorder: RoundRecorder,
        *, score: Callable[[int, Weights], NDArray], defence: DefenceState | None = None,
    ) -> None:
        self.rule, self.reject_factor, self.federation = rule, reject_factor, federation
        self.defence = DefenceState(rule) if defence is None else defence  # what the rule carries between rounds
        self.experiment, self.data_dir = experiment, data_dir  # what every message carries
        self.session, self.recorder, self.score = session, recorder, score
        self.sizes: dict[int, int] = {}  # edge node -> the sample count it gave when enrolled
        self.edge_index: dict[int, int] = {}  # Flower node id -> edge-node index
        self.excluded: dict[int, str] = {}  # edge node -> why it takes no further part
        self.cohort: list[int] = []
        self.global_weights: list[np.ndarray] = []
        self.resumed = False  # the registry and the nodes' data were set up before a checkpoint

    def summary(self) -> None:
        """Flower calls this at the start; the run's first progress line says the same."""

    def start(  # type: ignore[override]
        self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
        train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None, *,
        first_round: int = 1, on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    ) -> Result:
        """Flower's round loop (train, then the server-side evaluation) from ``first_round``.

        ``initial_arrays`` is the global model before ``first_round``; the model before round
        1 is evaluated as round 0 only when starting at 1. ``on_round_end(round, arrays)``
        runs after each round's evaluation (the checkpoint). The nodes evaluate nothing
        (:meth:`configure_evaluate`), so that half of Flower's loop is left out.
        """
        train_config = ConfigRecord() if train_config is None else train_config
        result, arrays = Result(), initial_arrays
        result.arrays = arrays
        if evaluate_fn and first_round == 1 and (metrics := evaluate_fn(0, arrays)) is not None:
            result.evaluate_metrics_serverapp[0] = metrics
        for server_round in range(first_round, num_rounds + 1):
            replies = grid.send_and_receive(self.configure_train(server_round, arrays, train_config, grid),
                                            timeout=timeout)
            new_arrays, train_metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                result.arrays = arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            if evaluate_fn and (metrics := evaluate_fn(server_round, arrays)) is not None:
                result.evaluate_metrics_serverapp[server_round] = metrics
            if on_round_end is not None:
                on_round_end(server_round, arrays)
        return result

    def checkpoint_state(self) -> dict[str, Any]:
        """What the next round needs besides the global model (the cohort and every random
        draw are seeded from the round; the chain is rebuilt from the trail)."""
        return {"excluded": {str(node): why for node, why in sorted(self.excluded.items())}}

    def restore(self, state: dict[str, Any], defence: list[np.ndarray] | None = None) -> None:
        """Carry on from :meth:`checkpoint_state` (and the defence's arrays, for rules that
        carry any): the registry and the nodes' data are set up."""
        self.excluded = {int(node): why for node, why in state.get("excluded", {}).items()}
        if defence is not None:
            self.defence.restore(defence)
        self.resumed = True

    def _messages(self, nodes: Iterable[int], message_type: str, server_round: int,
                  chain: dict[int, dict] | None = None, arrays: ArrayRecord | None = None) -> list[Message]:
        flower_id = {edge: nid for nid, edge in self.edge_index.items()}
        messages = []
        for node in nodes:
            config = p.config_record(server_round, self.experiment, self.data_dir, cohort=self.cohort,
                                     chain=(chain or {}).get(node))
            content = RecordDict({p.CONFIG: config, **({p.ARRAYS: arrays} if arrays is not None else {})})
            messages.append(Message(content, dst_node_id=flower_id[node], message_type=message_type))
        return messages

    # --- before round 1 ---------------------------------------------------------------

    def register_nodes(self, grid: Grid) -> None:
        """Learn every node's edge-node index; with a ledger, enroll them and register their data.

        In the ledger's batched mode the registry is deployed first and every node signs its
        data registration in its answer to "who are you" (one message per node instead of two:
        what set-up costs at 10,000 nodes)."""
        expected = self.federation.num_nodes
        node_ids = connected_nodes(grid, expected)
        at_once = self.session.enabled and not self.resumed and self.session.registers_at_identify
        chain = None
        if at_once:
            self.recorder.record_ledger(self.session.setup())
            chain = self.session.contexts([0])[0]  # the same for every node: chain, registry, run
        config = RecordDict({p.CONFIG: p.config_record(0, self.experiment, self.data_dir, chain=chain)})
        messages = [Message(config, dst_node_id=nid, message_type=p.QUERY) for nid in node_ids]
        errors, registrations = [], []
        for reply in grid.send_and_receive(messages, timeout=self.federation.client_timeout):
            if reply.has_error():
                errors.append(reply.error.reason)
            else:
                node = int(reply.content[p.METRICS][p.NODE])
                self.edge_index[reply.metadata.src_node_id] = node
                self.sizes[node] = int(reply.content[p.METRICS][p.NUM_EXAMPLES])
                registrations.append((node, reply))
        claimed: dict[int, list[int]] = {}
        for flower_id, node in sorted(self.edge_index.items()):
            claimed.setdefault(node, []).append(flower_id)
        if twice := {node: ids for node, ids in claimed.items() if len(ids) > 1}:
            node, ids = min(twice.items())
            raise FederationMismatch(
                f"SuperNodes {', '.join(map(str, ids))} all say they are edge node {node}: each SuperNode "
                f"needs its own node config partition-id in 0..{expected - 1}"
            )
        if len(self.edge_index) != expected:
            raise FederationMismatch(
                f"only {len(self.edge_index)} of {expected} edge nodes said who they are"
                + (f"; first error: {p.last_line(errors[0])}" if errors else "")
            )
        if at_once:
            self.submit_registrations(registrations)
        elif self.session.enabled and not self.resumed:
            self.recorder.record_ledger(self.session.setup())
            self.register_data(grid)

    def register_data(self, grid: Grid) -> None:
        """Every node signs the digest of its data batch; the session relays it to the registry."""
        nodes = sorted(self.edge_index.values())
        messages = self._messages(nodes, p.REGISTER_DATA, 0, chain=self.session.contexts(nodes))
        replies = grid.send_and_receive(messages, timeout=self.federation.client_timeout)
        self.submit_registrations([(self.edge_index[r.metadata.src_node_id], r) for r in replies])

    def submit_registrations(self, replies: list[tuple[int, Message]]) -> None:
        """Hand the nodes' signed data registrations to the session; nodes without a valid one
        are left out of every cohort."""
        signed, digests, timestamps, failed = {}, {}, {}, {}
        for node, reply in replies:
            chain = reply.content.get(p.CHAIN, {}) if not reply.has_error() else {}
            if reply.has_error():
                failed[node] = f"data registration failed: {p.last_line(reply.error.reason)}"
            elif p.TX not in chain:
                failed[node] = f"data registration failed: {chain.get(p.REASON, 'no signed registration')}"
            else:
                signed[node] = bytes(chain[p.TX])
                digests[node] = bytes(chain[p.DATA_DIGEST])
                timestamps[node] = int(chain[p.TIMESTAMP])
        failed.update(self.session.register_data(signed, digests, self.sizes, timestamps))
        timeout = f"no data registration within federation.client_timeout = {self.federation.client_timeout:g} s"
        nodes = sorted(self.edge_index.values())
        self.exclude({**{node: timeout for node in set(nodes) - set(signed) - set(failed)}, **failed})

    def exclude(self, nodes: dict[int, str]) -> None:
        """Leave ``{node: why}`` out of every later cohort."""
        if nodes:
            self.excluded.update(nodes)
            self.recorder.record_excluded(self.excluded)

    # --- Flower hooks -----------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.edge_index:
            self.register_nodes(grid)
        self.recorder.start_round()
        eligible = [i for i in self.session.active_nodes(sorted(self.edge_index.values())) if i not in self.excluded]
        self.cohort = self.federation.sample_cohort(server_round, eligible)
        self.global_weights = arrays.to_numpy_ndarrays()
        chain = self.session.open_round(server_round, self.global_weights, self.cohort)
        return self._messages(self.cohort, p.TRAIN, server_round, chain=chain, arrays=arrays)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = p.read_train_replies(replies, self.edge_index)
        self.recorder.record_integrity_failed(server_round, replies.integrity_failed)
        self.exclude(replies.integrity_failed)
        refuse_unusable(replies.updates, self.sizes)
        self.session.relay_updates(server_round, replies.updates)
        usable = [u for u in replies.updates if u.refused is None]
        reasons = {**replies.errors, **replies.integrity_failed, **{u.node: u.refused for u in replies.updates}}
        no_reply = f"no reply within federation.client_timeout = {self.federation.client_timeout:g} s"
        usable_nodes = {u.node for u in usable}
        failures = self.recorder.record_failures(server_round, {
            node: reasons.get(node) or no_reply for node in self.cohort if node not in usable_nodes
        })
        refused = {u.node: u.refused for u in replies.updates if u.refused is not None}
        self.recorder.record_refused(server_round, refused)
        nodes, weights = [u.node for u in usable], [u.weights for u in usable]
        try:
            context = self.defence.context(server_round, nodes, weights, self.global_weights)
            decision = decide_round(
                self.rule, nodes, weights, self.global_weights, [u.num_samples for u in usable], self.reject_factor,
                context=context,
            )
        except AggregatorError as err:
            self.recorder.record_unusable(server_round, len(usable))
            raise RoundFailed(f"round {server_round}: {len(usable)} usable updates after {failures} failures: {err}") from err
        self.defence.advance(nodes, weights, self.global_weights)
        if context.reference is not None:
            self.recorder.record_reference(server_round, context.reference)
        evaluation = evaluation_digest(server_round, self.score(server_round, decision.new_weights))
        chain_metrics = self.session.commit_round(server_round, self.cohort, replies.updates, decision, evaluation)
        metrics = self.recorder.record_decision(
            server_round, decision, {"refused_updates": float(len(refused)), **chain_metrics}
        )
        losses = [u.train_loss for u in usable if u.train_loss is not None]
        return ArrayRecord(decision.new_weights), MetricRecord(
            {**metrics, "train-loss": float(np.mean(losses)) if losses else 0.0}
        )

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # the global model is evaluated on the server's held-out test split

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None
