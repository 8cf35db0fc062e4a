"""The round and node rows of a federated run: the one place that knows who is malicious.

The defence never reads who is malicious; the bookkeeping that scores it does. Per round
(``split = "round"``): updates received, failures, poisoned updates received and accepted,
the poisoned share of the aggregate, honest nodes rejected, the defence's detection, and
what the ledger session reports (gas, transactions, chain time).

"Accepted" means the update contributed to the aggregate with some weight: for Krum, it was
the one picked; for the median or the trimmed mean, it supplied at least one coordinate's
middle value, which says little (``poisoned_weight``, the malicious rows' mean coefficient
in the aggregate, says how much). Detection is about the rows the rule *judged outliers*
(:meth:`bflsim.aggregators.Rule.rejected`, what the chain counts against a node):
``poisoned_flagged`` / ``honest_flagged`` count them, ``detection_precision`` =
flagged malicious / flagged (logged when the rule flagged any), ``detection_recall`` =
flagged malicious / malicious received (logged when a malicious update was received). Per node (``split = "node"``): selected, score,
weight, malicious; ``failed`` or ``integrity_failed`` for a node without a usable update,
and ``refused`` beside ``failed`` when the server refused the node's update.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bflsim.aggregators import RoundDecision
from bflsim.config import ExperimentConfig
from bflsim.runfolder.folder import RunFolder


@dataclass
class RoundStats:
    """What the last round did (read by the progress line)."""

    received: int = 0
    failures: int = 0
    poisoned_received: int = 0
    poisoned_accepted: int = 0
    started: float = field(default_factory=time.perf_counter)


class RoundRecorder:
    """Writes a federated run's per-round and per-node rows, and the manifest's node notes."""

    def __init__(self, run: RunFolder, config: ExperimentConfig) -> None:
        self.run = run
        self.config = config
        self.model = config.models.names[0]
        self.stats = RoundStats()
        self.node_failures: list[dict] = []

    def restore(self, manifest: Mapping[str, object]) -> None:
        """Carry on a resumed run's node notes (its manifest as at the checkpoint)."""
        self.node_failures = list(manifest.get("node_failures") or [])  # type: ignore[call-overload]

    def start_round(self) -> None:
        self.stats = RoundStats()

    def record_ledger(self, info: Mapping[str, object]) -> None:
        """The run's registry: backend, endpoint, chain id, contract, node addresses (manifest ``ledger``)."""
        self.run.write_manifest(ledger=dict(info))

    def record_excluded(self, excluded: Mapping[int, str]) -> None:
        """The nodes left out of every later cohort, and why (manifest ``excluded_nodes``)."""
        self.run.write_manifest(excluded_nodes={str(k): v for k, v in sorted(excluded.items())})

    def record_integrity_failed(self, server_round: int, nodes: Mapping[int, str]) -> None:
        for node in sorted(nodes):
            self.run.log({"integrity_failed": 1.0}, model=self.model, split="node", round=server_round, node=node)

    def record_failures(self, server_round: int, failed: Mapping[int, str]) -> int:
        """Log each cohort node without a usable update (``failed`` rows, the reason in the manifest)."""
        for node, reason in sorted(failed.items()):
            self.node_failures.append({"round": server_round, "node": node, "reason": reason})
            self.run.log({"failed": 1.0}, model=self.model, split="node", round=server_round, node=node)
        if failed:
            self.run.write_manifest(node_failures=self.node_failures)
        self.stats.failures = len(failed)
        return len(failed)

    def record_refused(self, server_round: int, refused: Mapping[int, str]) -> None:
        """Log each node whose update the server refused (``refused`` rows; the reason is in
        the manifest's node failures and the trail)."""
        for node in sorted(refused):
            self.run.log({"refused": 1.0}, model=self.model, split="node", round=server_round, node=node)

    def record_reference(self, server_round: int, reference: np.ndarray) -> None:
        """The server's reference update of the round (FLTrust), for the audit's replay."""
        self.run.save_reference(server_round, reference)

    def record_unusable(self, server_round: int, received: int) -> None:
        """The round's counts when it cannot be aggregated (the run stops after it)."""
        self.run.log({"updates_received": received, "failures": self.stats.failures}, model=self.model,
                     split="round", round=server_round)

    def record_decision(
        self, server_round: int, decision: RoundDecision, extra: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Log which nodes the rule kept and whether poisoned updates got through."""
        nodes = np.array(decision.nodes, dtype=np.int64)
        selection = decision.selection
        malicious = np.isin(nodes, self.config.malicious_nodes(server_round))
        selected = np.isin(np.arange(len(nodes)), selection.selected)
        self.stats.received = len(nodes)
        self.stats.poisoned_received = int(malicious.sum())
        self.stats.poisoned_accepted = int((malicious & selected).sum())
        flagged = np.isin(nodes, np.asarray(decision.rejected, dtype=np.int64))
        detection = {"poisoned_flagged": float((malicious & flagged).sum()),
                     "honest_flagged": float((~malicious & flagged).sum())}
        if flagged.any():
            detection["detection_precision"] = detection["poisoned_flagged"] / float(flagged.sum())
        if malicious.any():
            detection["detection_recall"] = detection["poisoned_flagged"] / float(malicious.sum())
        round_metrics = {
            "updates_received": float(len(nodes)),
            "failures": float(self.stats.failures),
            "poisoned_received": float(self.stats.poisoned_received),
            "poisoned_accepted": float(self.stats.poisoned_accepted),
            "poisoned_weight": float(selection.weights[malicious].sum()),
            "honest_rejected": float((~malicious & ~selected).sum()),
            **detection,
            **(extra or {}),
        }
        self.run.log(round_metrics, model=self.model, split="round", round=server_round)
        for i, node in enumerate(decision.nodes):
            self.run.log(
                {"selected": float(selected[i]), "score": float(selection.scores[i]),
                 "weight": float(selection.weights[i]), "malicious": float(malicious[i])},
                model=self.model, split="node", round=server_round, node=node,
            )
        return round_metrics
