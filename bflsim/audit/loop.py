"""The audit of a run's closed loop (``[loop]``, registry v4).

From the chain's events, the run folder's ``loop/`` rows and the data:

- the devices registered behind each edge node are the ones the run's config draws
  (:func:`bflsim.edge_node.loop_devices`), and the quarantine rule is the config's;
- every alert counted on chain (``DeviceAlerted``) comes from the edge node the device sits
  behind, and its window is in ``loop/alerts.csv``: the rows and verdicts kept there hash to
  the digest on chain, and the global model the loop used (the one committed in round
  ``loop.model_round``) scores at least ``loop.threshold`` of those rows as attacks. A
  window that does not is an alert the server should have disputed;
- every dispute (``AlertDisputed``) names a window whose rows the model scores below the
  threshold: a genuine alert disputed frames its edge node;
- the devices quarantined on chain (``DeviceQuarantined``) are those ``loop/devices.csv``
  reports quarantined.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bflsim.audit.context import _blob, _Context
from bflsim.audit.verdict import RoundVerdict
from bflsim.hashing import digest_hex
from bflsim.traffic import window_digest


def _loop_model(ctx: _Context, model_round: int, problems: list[str]) -> Any:
    """The committed global model of ``model_round`` (0: the one round 1 opened from)."""
    if model_round == 0:
        opened = ctx.events["RoundOpened"].get(1, [])
        digest = bytes(opened[0]["globalDigest"]) if opened else None
    else:
        committed = ctx.events["RoundCommitted"].get(model_round, [])
        digest = bytes(committed[0]["newGlobalDigest"]) if committed else None
    if digest is None:
        problems.append(f"the loop's model (round {model_round}) was never committed on chain")
        return None
    return _blob(ctx.store, digest, f"the loop's model (round {model_round})", problems)


def _window(row: Any) -> tuple[list[int], list[bool]]:
    rows = [int(r) for r in str(row["rows"]).split()]
    verdicts = [c == "1" for c in str(row["verdicts"])]
    return rows, verdicts


def check_loop(ctx: _Context, replayed: list[str], verdict: RoundVerdict) -> None:
    """The loop's section of the audit (see the module docstring)."""
    loop = ctx.config.loop
    verdict.problems.extend(replayed)
    folder = ctx.run.path / "loop"
    if loop is None:
        return
    entry = ctx.run.manifest.get("loop")
    if not (folder / "alerts.csv").is_file() or entry is None:
        if ctx.run.status != "complete":
            verdict.notes.append(f"the run ended ({ctx.run.status}) before its loop finished: nothing to check")
        else:
            verdict.problems.append("the config has [loop] but the run folder has no loop rows (loop/, manifest 'loop')")
        return
    alerts = pd.read_csv(folder / "alerts.csv", dtype={"verdicts": str, "rows": str, "window": str})
    devices = pd.read_csv(folder / "devices.csv") if (folder / "devices.csv").is_file() else None
    missing = sorted({"node", "device", "window", "rows", "verdicts", "outcome"} - set(alerts.columns))
    if missing or devices is None or "quarantined_at" not in devices.columns:
        verdict.problems.append(f"loop/alerts.csv lacks {missing} or loop/devices.csv is missing or incomplete: "
                                "the windows cannot be checked")
        return
    all_events = {name: ctx.events[name].get("all", []) for name in
                  ("QuarantineRuleSet", "DeviceRegistered", "DeviceAlerted", "AlertDisputed", "DeviceQuarantined")}
    rules = [(int(e["alertsPerNode"]), int(e["quorum"])) for e in all_events["QuarantineRuleSet"]]
    if rules != [(loop.alerts_to_quarantine, 1)]:
        verdict.problems.append(f"quarantine rule on chain {rules}, the config's is [({loop.alerts_to_quarantine}, 1)]")
    on_chain_pairs = sorted((int(e["device"]), int(e["edgeNode"])) for e in all_events["DeviceRegistered"])
    quarantined_chain = sorted(int(e["device"]) for e in all_events["DeviceQuarantined"])
    quarantined_rows = sorted(int(d) for d in devices.loc[devices["quarantined_at"].notna(), "device"])
    if quarantined_chain != quarantined_rows:
        verdict.problems.append(f"devices quarantined on chain {quarantined_chain}, loop/devices.csv reports "
                                f"{quarantined_rows}")

    by_digest = {str(r["window"]).lower(): r for _, r in alerts.iterrows()}
    index_of = ctx.index_of
    windows: list[tuple[str, bytes, Any]] = []
    for kind, event_name in (("alert", "DeviceAlerted"), ("dispute", "AlertDisputed")):
        for event in all_events[event_name]:
            digest = bytes(event["windowDigest"])
            row = by_digest.get(digest_hex(digest))
            if row is None:
                verdict.problems.append(f"{kind} about device {event['device']}: window {digest_hex(digest)[:12]}… "
                                        "is not in loop/alerts.csv")
                continue
            rows, verdicts = _window(row)
            if window_digest(int(row["device"]), rows, verdicts) != digest:
                verdict.problems.append(f"{kind} about device {row['device']}: the rows and verdicts kept do not hash "
                                        f"to the window digest on chain")
                continue
            if index_of.get(event["node"]) != int(row["node"]):
                verdict.problems.append(f"{kind} about device {row['device']}: sent by {event['node']}, "
                                        f"loop/alerts.csv says edge node {row['node']}")
            windows.append((kind, digest, row))

    if ctx.data is None:
        why = "--skip-data" if ctx.skip_data else (ctx.data_missing or "no data")
        verdict.unchecked.append(f"devices and windows not re-scored ({why})")
        verdict.notes.append(f"{len(all_events['DeviceAlerted'])} alerts, {len(all_events['AlertDisputed'])} "
                             f"disputes, {len(quarantined_chain)} quarantines on chain")
        return
    from bflsim.edge_node import attack_verdicts, loop_devices

    expected_pairs = sorted((d.index, d.edge_node) for d in loop_devices(ctx.config, ctx.data_path))
    if on_chain_pairs != expected_pairs:
        verdict.problems.append(f"{len(on_chain_pairs)} (device, edge node) pairs registered on chain; the config "
                                f"draws {len(expected_pairs)}, and they differ")
    model_round = int(entry.get("model_round", ctx.config.federation.rounds))
    weights = _loop_model(ctx, model_round, verdict.problems)
    if weights is None:
        return
    score = attack_verdicts(ctx.config, weights, ctx.data_path)
    wrong = 0
    for kind, digest, row in windows:
        rows, _ = _window(row)
        attacks = int(np.sum(score(np.asarray(rows, dtype=np.int64))))
        genuine = attacks >= loop.threshold
        if kind == "alert" and not genuine:
            wrong += 1
            verdict.problems.append(f"alert about device {row['device']} counted on chain, but the round-{model_round} "
                                    f"model scores {attacks} of its window's {len(rows)} flows as attacks "
                                    f"(threshold {loop.threshold})")
        elif kind == "dispute" and genuine:
            wrong += 1
            verdict.problems.append(f"edge node {row['node']}'s alert about device {row['device']} disputed, but the "
                                    f"model scores {attacks} of {len(rows)} flows as attacks (threshold "
                                    f"{loop.threshold}): a genuine alert was framed")
    if not wrong:
        verdict.notes.append(
            f"{len(all_events['DeviceAlerted'])} alerts and {len(all_events['AlertDisputed'])} disputes re-scored with "
            f"the round-{model_round} model, {len(quarantined_chain)} quarantines as reported")
