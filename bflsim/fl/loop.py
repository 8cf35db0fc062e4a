"""The closed loop after training (issue 14, ``[loop]``): edge nodes detect on their devices'
traffic with a committed global model, and the registry quarantines the devices they report.

:func:`run_loop` runs in the ServerApp after the last round, on the same Flower grid, Ray
actors and registry: the devices behind every edge node and the quarantine rule are
registered (:class:`bflsim.ledger.loop.LoopSession`), then the traffic is played slice by
slice (``loop.slice_seconds``), one ``query.detect`` message per edge node and slice. Each
node scores its devices' flows of the slice with the global model of round
``loop.model_round`` (:func:`bflsim.edge_node.detect`) and answers with its counts, the
windows to carry on from, and its signed alerts; the server re-scores every alert's window
with the same model (a false alert is disputed), relays the rest, and tells each node which
of its devices are quarantined from the next slice on. Edge nodes the registry revoked
(false alerts count as rejections) get no more traffic to score: their devices go unwatched.

The run folder keeps, as they are computed, ``loop/slices.csv`` (per slice and node: flows
scored, dropped, flagged, attack flows sent), ``loop/alerts.csv`` (every alert, the window
it carries: its held-out row ids and verdicts, and what became of it) and, at the end, ``loop/devices.csv`` (each device, whether it was
compromised, when it was quarantined); the manifest's ``loop`` entry sums them up.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from bflsim.config import ExperimentConfig, to_wire
from bflsim.edge_node import attack_verdicts, loop_devices, node_traffic
from bflsim.hashing import digest_hex
from bflsim.ledger.loop import OUTCOMES, LoopSession, ReceivedAlert
from bflsim.ledger.session import ChainSession
from bflsim.progress import Progress
from bflsim.runfolder import RunFolder
from bflsim.vectors import Weights
from strategies import protocol as p

SLICE_COLUMNS = ("slice", "start", "end", "node", "scored", "dropped", "flagged", "attack_flows", "alerts", "error")
ALERT_COLUMNS = ("slice", "time", "node", "device", "compromised", "score", "window", "rows", "verdicts", "outcome",
                 "reason", "tx_hash", "gas_used")
DEVICE_COLUMNS = ("device", "edge_node", "compromised", "attack_class", "start", "first_alert", "quarantined_at",
                  "alerts")


def run_loop(grid: Grid, edge_index: dict[int, int], config: ExperimentConfig, session: ChainSession,
             run: RunFolder, weights: Weights, data_dir: str | None, progress: Progress) -> dict[str, Any]:
    """Play the loop's traffic against the registry with global model ``weights``; the
    manifest's ``loop`` entry."""
    loop = config.loop
    assert loop is not None
    started = time.perf_counter()
    if (run.path / "loop").exists():  # a resumed run cut back to its last round: the loop starts again
        run.check_writer()
        shutil.rmtree(run.path / "loop")
    devices = loop_devices(config, data_dir)
    truth = {d.index: d for d in devices}
    chain = LoopSession(session)
    chain.setup([(d.index, d.edge_node) for d in devices], loop.alerts_to_quarantine)
    server_verdicts = attack_verdicts(config, weights, data_dir)

    def genuine(alert: ReceivedAlert) -> bool:
        return int(server_verdicts(np.asarray(alert.rows, dtype=np.int64)).sum()) >= loop.threshold

    arrays, wire = ArrayRecord(weights), to_wire(config)
    flower_id = {node: nid for nid, node in edge_index.items()}
    windows: dict[int, dict[str, list]] = {}
    quarantined_at: dict[int, float] = {}
    first_alert: dict[int, float] = {}
    alert_count: dict[int, int] = {}
    counted: dict[int, int] = {}  # alerts the registry counted per device (relayed or quarantining)
    outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    slices = math.ceil(loop.duration_seconds / loop.slice_seconds - 1e-9)
    for s in range(slices):
        start, end = s * loop.slice_seconds, min((s + 1) * loop.slice_seconds, loop.duration_seconds)
        nodes = session.active_nodes(sorted(edge_index.values()))
        given, configs = chain.contexts(nodes)
        messages = []
        for node in nodes:
            record = p.config_record(chain.loop_round, wire, data_dir, chain=configs[node])
            record[p.SLICE_START], record[p.SLICE_END] = float(start), float(end)
            record[p.QUARANTINED] = sorted(d for d in quarantined_at if truth[d].edge_node == node)
            mine = sorted(d for d in counted if truth[d].edge_node == node)
            record[p.ALERTED_DEVICES], record[p.ALERTED_COUNTS] = mine, [counted[d] for d in mine]
            for key, value in windows.get(node, p.pack_windows({})).items():
                record[key] = value
            messages.append(Message(RecordDict({p.CONFIG: record, p.ARRAYS: arrays}), dst_node_id=flower_id[node],
                                    message_type=p.DETECT))
        replies = grid.send_and_receive(messages, timeout=config.federation.client_timeout)
        alerts: list[ReceivedAlert] = []
        counts: dict[int, tuple] = {}
        errors: dict[int, str] = {}
        for reply in replies:
            node = edge_index.get(reply.metadata.src_node_id)
            if node is None:
                continue
            if reply.has_error():
                errors[node] = p.last_line(reply.error.reason)
                continue
            metrics, record = reply.content[p.METRICS], reply.content.get(p.CHAIN, {})
            counts[node] = (int(metrics[p.SCORED]), int(metrics[p.DROPPED]), int(metrics[p.FLAGGED]))
            windows[node] = {k: list(record.get(k, [])) for k in p.WINDOW_KEYS}
            alerts += p.read_alerts(node, record)
        alerts.sort(key=lambda a: a.node)  # stable: each node's alerts in the order it signed them
        newly = chain.settle(alerts, given, genuine)
        for device in newly:
            quarantined_at.setdefault(device, end)  # the nodes drop its flows from the next slice on
        for alert in alerts:
            first_alert.setdefault(alert.device, alert.time)
            alert_count[alert.device] = alert_count.get(alert.device, 0) + 1
            outcomes[alert.outcome] += 1
            if alert.outcome in ("relayed", "quarantined"):
                counted[alert.device] = counted.get(alert.device, 0) + 1
        run.append_rows("loop/alerts.csv", ALERT_COLUMNS, [
            (s, round(a.time, 3), a.node, a.device, int(truth[a.device].compromised), a.score, digest_hex(a.digest),
             " ".join(map(str, a.rows)), "".join("1" if v else "0" for v in a.verdicts), a.outcome, a.reason,
             a.tx_hash, a.gas_used) for a in alerts])
        run.append_rows("loop/slices.csv", SLICE_COLUMNS, [
            (s, start, end, node, *counts.get(node, ("", "", "")), _attack_flows(config, node, start, end, data_dir),
             sum(1 for a in alerts if a.node == node), errors.get(node, ""))
            for node in nodes])
        caught = sum(1 for d in quarantined_at if truth[d].compromised)
        progress.say(f"loop {end:6.0f} s  alerts {len(alerts):3d}  quarantined {caught}/{loop.compromised} compromised, "
                     f"{len(quarantined_at) - caught} benign  edge nodes {len(nodes)}")
    run.append_rows("loop/devices.csv", DEVICE_COLUMNS, [
        (d.index, d.edge_node, int(d.compromised), "" if d.attack_class is None else d.attack_class,
         d.start if d.compromised else "", first_alert.get(d.index, ""), quarantined_at.get(d.index, ""),
         alert_count.get(d.index, 0)) for d in devices])
    return summary(config, devices, quarantined_at, outcomes, chain, time.perf_counter() - started)


def committed_model(session: ChainSession, server_round: int) -> Weights:
    """The global model a run committed in ``server_round`` (0: the model round 1 opened
    from), read back from the trail's blobs by its digest."""
    from bflsim.runfolder import read_rounds

    rounds = {int(r["round"]): r for r in read_rounds(session.run_dir)}
    record = rounds.get(max(server_round, 1))
    if record is None:
        raise ValueError(f"loop.model_round = {server_round}: the trail has no round {max(server_round, 1)}")
    digest = record["global_digest"] if server_round == 0 else record["new_global_digest"]
    return session.trail.blobs.get(bytes.fromhex(str(digest).removeprefix("0x")))


def _attack_flows(config: ExperimentConfig, node: int, start: float, end: float, data_dir: str | None) -> int:
    """Attack flows the node's devices sent in ``[start, end)`` (the ground truth, dropped ones included)."""
    traffic = node_traffic(config, node, data_dir)
    return int(traffic.attack[(traffic.time >= start) & (traffic.time < end)].sum())


def summary(config: ExperimentConfig, devices, quarantined_at: dict[int, float], outcomes: dict[str, int],
            chain: LoopSession, seconds: float) -> dict[str, Any]:
    """The manifest's ``loop`` entry: what the loop caught, missed and cost."""
    loop = config.loop
    assert loop is not None
    compromised = [d for d in devices if d.compromised]
    delays = [quarantined_at[d.index] - d.start for d in compromised if d.index in quarantined_at]
    caught = [t for t in delays if t >= 0]  # caught attacking; the others were quarantined before they turned
    hours = loop.duration_seconds / 3600
    gas = sum(int(t.gas_used) for t in chain.ledger.records if t.kind in ("alert", "dispute_alert"))
    return {
        "devices": len(devices),
        "compromised": len(compromised),
        "quarantined_compromised": len(delays),
        "quarantined_before_attack": len(delays) - len(caught),
        "missed_compromised": len(compromised) - len(delays),
        "quarantined_benign": sum(1 for d in devices if not d.compromised and d.index in quarantined_at),
        "median_seconds_to_quarantine": float(np.median(caught)) if caught else None,
        "alerts": outcomes,
        "alerts_per_hour": sum(outcomes.values()) / hours,
        "alert_gas": gas,
        "alert_gas_per_hour": gas / hours,
        "chain_seconds": round(chain.seconds, 3),
        "wall_seconds": round(seconds, 2),
    }
