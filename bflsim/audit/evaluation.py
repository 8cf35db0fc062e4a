"""Audit checks of what a paper reports: every committed model scored again on the recomputed test split against metrics.csv, confusion.csv and the committed evaluation digests; the final model file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bflsim.audit.context import _Context
from bflsim.audit.verdict import EVALUATED_METRICS, AuditReport, RoundVerdict, _ranges
from bflsim.edge_node import success_rows
from bflsim.hashing import (
    digest_hex,
    evaluation_digest,
    weights_digest,
)
from bflsim.metrics import attack_success_rate, score_probabilities
from bflsim.runfolder import (
    FINAL_MODEL,
    BlobError,
    Run,
)


def _check_evaluation(
    ctx: _Context, committed: dict[int, bytes], chosen: list[int] | None, verdict: RoundVerdict, report: AuditReport
) -> None:
    """Score committed global models again on the recomputed test split; compare with
    metrics.csv, confusion.csv and (v2) the committed evaluation digests."""
    if chosen == []:
        verdict.notes.append("skipped (--rounds none)")
        return
    rounds = sorted({0, *committed}) if chosen is None else chosen
    unknown = [r for r in rounds if r != 0 and r not in committed]
    if unknown:
        verdict.problems.append(f"--rounds names rounds {unknown}, which were never committed")
    try:
        metrics, confusion = ctx.run.metrics(), ctx.run.confusion()
    except FileNotFoundError as err:
        verdict.problems.append(f"{err}")
        return
    name = ctx.config.models.names[0]
    tested = metrics[(metrics["split"] == "test") & (metrics["model"] == name)]
    reported = sorted({int(r) for r in tested["round"].dropna()})
    extra = [r for r in reported if r != 0 and r not in committed]
    if extra:
        verdict.problems.append(f"metrics.csv reports test metrics for rounds {extra}, which were never committed")
    if ctx.data_unchecked(verdict, "global models not re-evaluated"):
        return
    assert ctx.data is not None
    from bflsim.models import initial_weights, predict

    data = ctx.data
    last_committed = max(committed, default=0)
    aimed = success_rows(ctx.config, data)
    checked = []
    for server_round in rounds:
        if server_round == 0:
            weights = initial_weights(ctx.config.models, ctx.config.train, data.num_features, data.num_classes)
        elif server_round in committed:
            try:
                weights = ctx.store.get(committed[server_round])
            except BlobError as err:
                verdict.problems.append(f"round {server_round}: {err}")
                continue
        else:
            continue
        proba = predict(ctx.config.models, ctx.config.train, weights, data.x_test, data.num_classes)
        scores, cm = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)
        if aimed is not None:  # a targeted attack: its success rate on its own test rows
            hit = predict(ctx.config.models, ctx.config.train, weights, aimed[0], data.num_classes)
            scores["attack_success_rate"] = attack_success_rate(hit, aimed[1])
        rows = tested[tested["round"] == server_round]
        if rows.empty:
            if server_round == last_committed and report.status != "complete":
                verdict.notes.append(f"round {server_round} committed but not evaluated before the run ended")
            else:
                verdict.problems.append(f"round {server_round}: no test metrics in metrics.csv")
            continue
        logged = dict(zip(rows["metric"], rows["value"], strict=False))
        for metric in (*EVALUATED_METRICS, "attack_success_rate"):
            if metric not in scores:
                continue
            if metric not in logged:
                verdict.problems.append(f"round {server_round}: metrics.csv has no {metric} row")
            elif not math.isclose(float(logged[metric]), scores[metric], rel_tol=1e-9, abs_tol=1e-12):
                verdict.problems.append(f"round {server_round}: metrics.csv says {metric} {float(logged[metric]):.6g}, "
                                        f"the committed model scores {scores[metric]:.6g} on the test split")
        _compare_confusion(confusion, name, server_round, cm, data.class_names, verdict)
        commits = ctx.events["RoundCommitted"].get(server_round, [])
        if (server_round > 0 and commits and "evaluationDigest" in commits[0]
                and bytes(commits[0]["evaluationDigest"]) != evaluation_digest(server_round, cm)):
            verdict.problems.append(f"round {server_round}: the committed evaluation digest is not that of the "
                                    "model's confusion matrix on the recomputed test split")
        checked.append(server_round)
    if checked:
        verdict.notes.append(f"rounds {_ranges(checked)} re-scored on the {len(data.y_test)}-row test split: "
                             f"{', '.join(EVALUATED_METRICS)}{', attack_success_rate' if aimed is not None else ''} "
                             "and confusion matrices match")


def _compare_confusion(table: Any, model: str, server_round: int, cm: np.ndarray, class_names: Sequence[str],
                       verdict: RoundVerdict) -> None:
    rows = table[(table["split"] == "test") & (table["model"] == model) & (table["round"] == server_round)]
    if rows.empty:
        verdict.problems.append(f"round {server_round}: no confusion matrix in confusion.csv")
        return
    index = {name: i for i, name in enumerate(class_names)}
    logged = np.zeros_like(cm)
    for row in rows.itertuples():
        if row.true not in index or row.predicted not in index:
            verdict.problems.append(f"round {server_round}: confusion.csv names an unknown class")
            return
        logged[index[row.true], index[row.predicted]] = int(row.count)
    if not np.array_equal(logged, cm):
        verdict.problems.append(f"round {server_round}: confusion.csv differs from the committed model's confusion "
                                "matrix on the test split")


def _check_final(run: Run, committed: dict[int, bytes], verdict: RoundVerdict) -> None:
    path = run.path / FINAL_MODEL
    if not path.is_file():
        if run.status == "complete":
            verdict.problems.append(f"{path} is missing")
        else:
            verdict.notes.append(f"none (run {run.status})")
        return
    if not committed:
        verdict.problems.append(f"{FINAL_MODEL} exists but no round was committed on chain")
        return
    final = weights_digest(run.final_model())
    last = committed[max(committed)]
    if final != last:
        verdict.problems.append(f"{FINAL_MODEL} hashes to {digest_hex(final)}, the last committed global "
                                f"digest (round {max(committed)}) is {digest_hex(last)}")
    if run.manifest.get("final_model_digest") not in (None, digest_hex(last)):
        verdict.problems.append("the manifest's final_model_digest is not the last committed digest")
    if final == last:
        verdict.notes.append(f"round {max(committed)}'s committed global model")
