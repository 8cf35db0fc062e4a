"""What the audit catches: tampered copies of a real run, forged runs made without training.

Each tampering case copies a reference run folder and changes one thing (the review's §4
table, T01-T11 and X01). :func:`forge_run` builds a whole run folder without any training,
the way an operator holding the node keys could: fabricated updates signed with the run's
keys, a fresh registry, metrics of the fabricated models, optionally an honest node framed
or censored and accuracies edited (review finding H1), or nodes whose updates the server
rightly refuses (to show the audit raises no false alarm). :func:`audit_table` audits every case
and writes one row per (chain mode, key source, case) to ``audit_table.csv`` and
``audit_table.md``:

    python -m bflsim.tamper --out results/audit [--experiment experiments/audit_tamper.toml] [--no-anvil]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.aggregators import decide_round
from bflsim.audit import AuditError, audit_run
from bflsim.config import ExperimentConfig, parse_recorded, with_overrides
from bflsim.edge_node import load_data, node_partitions, poison, register_data, sign_update
from bflsim.hashing import digest_hex, evaluation_digest, run_digest, weights_digest
from bflsim.ledger.factory import open_ledger
from bflsim.ledger.identity import TxContext
from bflsim.ledger.session import ChainSession, ReceivedUpdate, make_run_facts
from bflsim.metrics import score_probabilities
from bflsim.models import initial_weights, predict
from bflsim.plans import load_plan
from bflsim.runfolder import FINAL_MODEL, RoundRecorder, RunFolder, save_arrays
from strategies.robust import refuse_unusable

__all__ = ["CASES", "Case", "audit_table", "forge_run"]

SECRET_ENV = "BFLSIM_NODE_KEY_SECRET"


# --- files of a run folder ---------------------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_manifest(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _edit_csv(path: Path, keep: Callable[[dict[str, str]], dict[str, str] | None]) -> None:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = [r for r in (keep(row) for row in reader) if r is not None]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _rounds(run_dir: Path) -> list[dict[str, Any]]:
    return _jsonl(run_dir / "trail/rounds.jsonl")


def _transactions(run_dir: Path) -> list[dict[str, Any]]:
    return _jsonl(run_dir / "trail/transactions.jsonl")


# --- the tampering cases -----------------------------------------------------------------


def t01_accuracy(run: Path) -> None:
    last = max(r["round"] for r in _rounds(run))
    _edit_csv(run / "metrics.csv", lambda row: {**row, "value": "0.9912"} if (
        row["split"] == "test" and row["metric"] == "accuracy" and row["round"] == str(last)) else row)


def _drop_round_line(which: Callable[[list[dict]], int]) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        rows = _rounds(run)
        del rows[which(rows)]
        _write_jsonl(run / "trail/rounds.jsonl", rows)
    return change


def _swap_tx(first: Callable[[list[dict]], int], second: Callable[[list[dict]], int]) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        rows = _transactions(run)
        i, j = first(rows), second(rows)
        rows[i], rows[j] = rows[j], rows[i]
        _write_jsonl(run / "trail/transactions.jsonl", rows)
    return change


def _index(kind: str, server_round: int, nth: int = 0) -> Callable[[list[dict]], int]:
    def find(rows: list[dict]) -> int:
        return [i for i, r in enumerate(rows) if r["kind"] == kind and r["round"] == server_round][nth]
    return find


def t03c_submit_after_commit(run: Path) -> None:
    rows = _transactions(run)
    submit = rows.pop(_index("submit_update", 1)(rows))
    rows.insert(_index("commit_round", 1)(rows) + 1, submit)
    _write_jsonl(run / "trail/transactions.jsonl", rows)


def t03d_gas(run: Path) -> None:
    rows = _transactions(run)
    rows[_index("commit_round", 1)(rows)]["gas_used"] *= 2
    _write_jsonl(run / "trail/transactions.jsonl", rows)


def _edit_round(server_round: int, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        rows = _rounds(run)
        change(next(r for r in rows if r["round"] == server_round))
        _write_jsonl(run / "trail/rounds.jsonl", rows)
    return apply


def _first_update(record: dict) -> dict:
    return next(u for u in record["updates"] if u["node"] in record["accepted"])


def t04a_samples(record: dict) -> None:
    _first_update(record)["num_samples"] = 9999


def t04b_refused(record: dict) -> None:
    update = _first_update(record)
    update["refused"] = f"update digest mismatch: signed 0x{'00' * 32}, received weights hash to {update['digest']}"


def t04c_scores(record: dict) -> None:
    record["scores"] = [s * 0.5 for s in record["scores"]]
    record["rejected"] = []


def _swap_blobs(a: Path, b: Path) -> None:
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def t05a_update_blobs(run: Path) -> None:
    record = _rounds(run)[1]
    digests = [u["digest"] for u in record["updates"][:2]]
    _swap_blobs(*(run / "blobs" / f"{d[2:]}.npz" for d in digests))


def t05b_global_blobs(run: Path) -> None:
    rows = [r for r in _rounds(run) if r["round"] > 0]
    _swap_blobs(run / "blobs" / f"{rows[0]['new_global_digest'][2:]}.npz",
                run / "blobs" / f"{rows[1]['new_global_digest'][2:]}.npz")


def _config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the manifest's config, and its seeds block to match (as a careful forger would)."""

    def edit(manifest: dict) -> None:
        change(manifest["config"])
        manifest["seeds"] = parse_recorded(manifest["config"]).seeds()
    return lambda run: _edit_manifest(run, edit)


def t06b_other_attacker(config: dict) -> None:
    from bflsim.config import parse_experiment

    before = parse_experiment(config).malicious_nodes(1).tolist()
    for seed in range(1, 100):
        config["attack"]["seed"] = seed
        if parse_experiment(config).malicious_nodes(1).tolist() != before:
            return
    raise RuntimeError("no attack seed draws other attackers")


def t06d_claims_no_attack(config: dict) -> None:
    config["attack"]["name"] = "none"
    config["attack"]["params"] = {}
    config["aggregator"]["assumed_malicious"] = max(1, config["attack"].get("num_malicious") or 1)


def t08b_fractions(run: Path) -> None:
    """Another test split, with the manifest's data description made to match it."""

    def edit(manifest: dict) -> None:
        manifest["config"]["data"]["fractions"] = [0.7, 0.2, 0.1]
        data = load_data(parse_recorded(manifest["config"]).data, None)
        manifest["data"] = {**manifest["data"], **{k: v for k, v in data.describe().items() if k != "sources"}}
    _edit_manifest(run, edit)


def _drop_last_round(run: Path, *, status: str, keep_open: bool) -> None:
    """Remove the last round: its commit (and, unless ``keep_open``, its open and submissions),
    trail line, metric rows; the final model becomes the previous commit (complete) or goes."""
    rounds = _rounds(run)
    last = rounds[-1]["round"]
    _write_jsonl(run / "trail/rounds.jsonl", rounds[:-1])
    txs = _transactions(run)
    kept = [t for t in txs if t["round"] != last or (keep_open and t["kind"] != "commit_round")]
    _write_jsonl(run / "trail/transactions.jsonl", kept)
    for name in ("metrics.csv", "confusion.csv"):
        _edit_csv(run / name, lambda row: None if row["round"] == str(last) else row)
    previous = rounds[-2]["new_global_digest"]
    if status == "complete":
        shutil.copy(run / "blobs" / f"{previous[2:]}.npz", run / FINAL_MODEL)
        _edit_manifest(run, lambda m: m.update(final_model_digest=previous))
    else:
        (run / FINAL_MODEL).unlink(missing_ok=True)
        _edit_manifest(run, lambda m: (m.update(status=status, error=f"round {last}: updates hold NaN or inf"),
                                       m.pop("final_model_digest", None)))


def t10_final_zeros(run: Path) -> None:
    with np.load(run / FINAL_MODEL) as npz:
        arrays = [np.zeros_like(npz[k]) for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]
    save_arrays(run / FINAL_MODEL, arrays)
    _edit_manifest(run, lambda m: m.update(status="stopped", error="chain stopped"))


@dataclass(frozen=True)
class Case:
    """One row of the table: ``change`` edits a copy of the reference run in place."""

    name: str
    what: str
    change: Callable[[Path], None]


CASES: tuple[Case, ...] = (
    Case("T00", "untouched reference run", lambda run: None),
    Case("T01", "accuracy of the last round edited in metrics.csv (-> 0.9912)", t01_accuracy),
    Case("T02a", "round-2 line deleted from trail/rounds.jsonl", _drop_round_line(lambda rows: 2)),
    Case("T02b", "round-0 line (data digests) deleted from trail/rounds.jsonl", _drop_round_line(lambda rows: 0)),
    Case("T02c", "last line deleted from trail/rounds.jsonl", _drop_round_line(lambda rows: -1)),
    Case("T03a", "two round-1 submitUpdate lines swapped", _swap_tx(_index("submit_update", 1, 0),
                                                                     _index("submit_update", 1, 1))),
    Case("T03b", "round-1 commit swapped with round-2 open", _swap_tx(_index("commit_round", 1),
                                                                       _index("open_round", 2))),
    Case("T03c", "a round-1 submitUpdate moved after the round-1 commit", t03c_submit_after_commit),
    Case("T03d", "gas_used of the round-1 commit doubled in transactions.jsonl", t03d_gas),
    Case("T04a", "an accepted update's num_samples in rounds.jsonl -> 9999", _edit_round(1, t04a_samples)),
    Case("T04b", "an accepted update marked refused in rounds.jsonl", _edit_round(1, t04b_refused)),
    Case("T04c", "the trail's scores halved and rejected emptied", _edit_round(1, t04c_scores)),
    Case("T05a", "two update blobs' names swapped", t05a_update_blobs),
    Case("T05b", "round-1 and round-2 global-model blobs swapped", t05b_global_blobs),
    Case("T06a", "manifest attack sigma 5 -> 0.5", _config(lambda c: c["attack"]["params"].update(sigma=0.5))),
    Case("T06b", "manifest attack seed changed: other attackers", _config(t06b_other_attacker)),
    Case("T06c", "manifest attack.name = none", _config(lambda c: c["attack"].update(name="none", params={}))),
    Case("T06d", "manifest attack none, aggregator.assumed_malicious = 1", _config(t06d_claims_no_attack)),
    Case("T07a", "manifest federation.seed 42 -> 43", _config(lambda c: c["federation"].update(seed=43))),
    Case("T07b", "manifest train.seed 42 -> 7 (initial model)", _config(lambda c: c["train"].update(seed=7))),
    Case("T07c", "manifest seeds block only", lambda run: _edit_manifest(run, lambda m: m["seeds"].update(
        train_seed=7))),
    Case("T08a", "manifest data.seed 42 -> 43", _config(lambda c: c["data"].update(seed=43))),
    Case("T08b", "manifest data.fractions (0.7, 0.15, 0.15) -> (0.7, 0.2, 0.1): another test split "
         "(data description edited to match)", t08b_fractions),
    Case("T08c", "manifest data.rows.test edited", lambda run: _edit_manifest(run, lambda m: m["data"]["rows"].update(
        test=m["data"]["rows"]["test"] + 100))),
    Case("T09", "last round dropped consistently (trail, transactions, metrics, final model)",
         lambda run: _drop_last_round(run, status="complete", keep_open=False)),
    Case("T10", "final_model.npz replaced with zeros, status -> stopped", t10_final_zeros),
    Case("T11", "manifest aggregator.reject_factor -> 1e9",
         _config(lambda c: c["aggregator"].update(reject_factor=1e9))),
    Case("X01", "failed run: last round opened and submitted, never committed (status failed)",
         lambda run: _drop_last_round(run, status="failed", keep_open=True)),
)


# --- forging a run without training ------------------------------------------------------


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def forge_run(
    config: ExperimentConfig,
    parent: str | Path,
    *,
    frame: int | None = None,
    censor: int | None = None,
    accuracy: float | None = None,
    secret: str | None = None,
    data_dir: str | None = None,
    misbehave: dict[int, str] | None = None,
) -> Path:
    """A complete run folder for ``config`` made without training (review finding H1).

    Every honest update is the global model plus noise (an attacker whose attack needs no
    training sends what the attack gives), signed with the run's node keys (``secret``:
    the key secret the forger uses for ``key_source = "env"``, default: the environment's;
    without the real one the keys are not the run's). ``frame``: that honest node's update is relayed, then refused with a
    made-up digest mismatch. ``censor``: that node is left out of every cohort.
    ``accuracy``: every logged test accuracy is replaced by it. ``misbehave``: {node: how} for
    round 1, nodes whose update the server rightly refuses: ``"round"`` (signed for round 2),
    ``"digest"`` (signed another digest), ``"to"`` (signed to another address), ``"nan"``
    (NaN in its weights). Returns the folder.
    """
    if config.ledger.mode != "per-node":
        raise ValueError(f"forge_run forges per-node registries; ledger.mode = {config.ledger.mode!r}")
    data = load_data(config.data, data_dir)
    fed = config.federation
    sizes = [len(rows) for rows in node_partitions(config.data, fed, data_dir)]
    rng = np.random.default_rng(2026)
    name = config.models.names[0]
    facts = {"data": data.describe(), "malicious_nodes": config.malicious_nodes(1).tolist()}
    keys = _env(config.ledger.key_secret_env, secret) if secret is not None else contextlib.nullcontext()
    with keys, open_ledger(config.ledger) as ledger:
        folder = RunFolder.create(parent, config, **facts)
        recorder = RoundRecorder(folder, config)
        run_facts = make_run_facts(config, run_id=folder.run_id, git_commit=folder.manifest.get("git_commit"),
                                   sources=facts["data"]["sources"], x_test=data.x_test, y_test=data.y_test)
        folder.write_manifest(run_facts=run_facts, run_digest=digest_hex(run_digest(run_facts)))
        session = ChainSession(config, ledger, folder.path, run_facts)
        folder.write_manifest(ledger=session.setup())
        nodes = list(range(fed.num_nodes))
        contexts = session.contexts(nodes)
        signed, digests = {}, {}
        for node in nodes:
            ctx = TxContext.from_config(contexts[node], prefix="")
            digests[node], signed[node] = register_data(config, node, ctx, int(time.time()), data_dir)
        session.register_data(signed, digests, {node: sizes[node] for node in nodes})

        def evaluate(server_round: int, weights: list[np.ndarray]) -> bytes:
            """Log the model's test rows (accuracy replaced when asked); its evaluation digest."""
            proba = predict(config.models, config.train, weights, data.x_test, data.num_classes)
            metrics, cm = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)
            if accuracy is not None:
                metrics["accuracy"] = accuracy
            folder.log(metrics, model=name, split="test", round=server_round)
            folder.log_confusion(cm, data.class_names, model=name, split="test", round=server_round)
            return evaluation_digest(server_round, cm)

        weights = initial_weights(config.models, config.train, data.num_features, data.num_classes)
        evaluate(0, weights)
        for server_round in range(1, fed.rounds + 1):
            eligible = [i for i in session.active_nodes(nodes) if i != censor]
            cohort = fed.sample_cohort(server_round, eligible)
            recorder.start_round()
            chain = session.open_round(server_round, weights, cohort)
            received = []
            attackers = set(config.malicious_nodes(server_round).tolist())
            attack = config.attack.record
            for node in cohort:
                fabricated = [(w + rng.normal(0.0, 0.01, w.shape)).astype(np.float32) for w in weights]
                if node in attackers and attack is not None and not attack.trains:
                    # what the attack sends needs no training: the forger sends exactly that
                    fabricated = poison(config, attack, node, server_round, weights, weights, cohort, data_dir)
                ctx = TxContext.from_config(chain[node], prefix="")
                how = (misbehave or {}).get(node) if server_round == 1 else None
                signed_round, signed_weights = server_round, fabricated
                if how == "round":
                    signed_round += 1
                elif how == "digest":
                    signed_weights = [w + np.float32(1.0) for w in fabricated]
                elif how == "to":
                    ctx = dataclasses.replace(ctx, contract_address="0x" + "12" * 20)
                elif how == "nan":
                    fabricated = [w.copy() for w in fabricated]
                    fabricated[0].flat[0] = np.nan
                    signed_weights = fabricated
                raw = sign_update(config, node, ctx, signed_round, signed_weights, sizes[node])[1]
                received.append(ReceivedUpdate(node, fabricated, sizes[node], raw))
            refuse_unusable(received, dict(enumerate(sizes)))  # as the strategy does before relaying
            session.relay_updates(server_round, received)
            for update in received:
                if update.node == frame:  # what the server would write for a real digest mismatch
                    update.refuse("update_digest", f"submitUpdate update digest mismatch: signed 0x{'ab' * 32}, "
                                                   "received weights hash to something else")
            usable = [u for u in received if u.refused is None]
            decision = decide_round(config.rule, [u.node for u in usable], [u.weights for u in usable], weights,
                                    [u.num_samples for u in usable], config.aggregator.reject_factor)
            weights = decision.new_weights
            evaluation = evaluate(server_round, weights)  # scored before the commit, as the strategy does
            recorder.record_decision(server_round, decision,
                                     session.commit_round(server_round, cohort, received, decision, evaluation))
        folder.save_final_model(weights)
        folder.finish("complete", final_model_digest=digest_hex(weights_digest(weights)))
    return folder.path


FORGERIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("F0", "forged run, no training: fabricated updates, metrics of the fabricated models", {}),
    ("F1", "forged run + an honest node framed (relayed, refused with a made-up digest mismatch)", {"frame": 3}),
    ("F2", "forged run + an honest node censored (left out of every cohort)", {"censor": 3}),
    ("F3", "forged run + every test accuracy edited to 0.999", {"accuracy": 0.999}),
    ("H1", "forged run + framed node + edited accuracies (the review's H1)", {"frame": 3, "accuracy": 0.999}),
    ("R1", ("forged run whose nodes 4, 5 are rightly refused in round 1 (signed for round 2; signed another "
           "digest): no false alarm"), {"misbehave": {4: "round", 5: "digest"}}),
    ("R2", ("forged run whose nodes 3, 6 are rightly refused in round 1 (signed to another address; NaN "
           "weights): no false alarm"), {"misbehave": {3: "to", 6: "nan"}}),
)


# --- the table ---------------------------------------------------------------------------


def _verdict(run_dir: Path, env: dict[str, str | None], data_dir: str | None) -> tuple[str, int, str, str]:
    with contextlib.ExitStack() as stack:
        for key, value in env.items():
            stack.enter_context(_env(key, value))
        try:
            report = audit_run(run_dir, data_dir=data_dir)
        except AuditError as err:
            return "CANNOT AUDIT", 2, str(err)[:200], ""
    blamed = " / ".join(f"{s.head.strip()}: {s.problems[0]}" for s in report.sections if s.problems)
    if not blamed:
        blamed = "; ".join(f"{s.head.strip()}: {s.unchecked[0]}" for s in report.sections if s.unchecked)
    word = {0: "PASS", 1: "FAIL", 2: "NOT CHECKED"}[report.exit_code]
    return word, report.exit_code, (blamed or report.run_summary())[:300], report.trust_level()


def _reference_run(config: ExperimentConfig, parent: Path, data_dir: str | None) -> Path:
    from bflsim.fl.simulation import run_federated

    return run_federated(config, parent, data_dir).path


def audit_table(
    experiment: str | Path, out: str | Path, *, anvil: bool = True, data_dir: str | None = None,
    work: str | Path | None = None,
) -> Path:
    """Make the reference runs, apply every case, audit each; write the CSV and markdown table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work is not None else out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = load_plan(experiment).points[0][1]
    rows: list[dict[str, Any]] = []
    backends = ["embedded"] + (["anvil"] if anvil else [])
    secret = "reference-secret-" + "7" * 16
    forger = "forger-guess-" + "1" * 16
    for backend in backends:
        for key_source in ("seed", "env"):
            config = with_overrides(base, {"ledger.backend": backend, "ledger.key_source": key_source})
            env = {SECRET_ENV: secret if key_source == "env" else None}
            tag = f"{backend}-{key_source}"
            with _env(SECRET_ENV, env[SECRET_ENV]):
                reference = _reference_run(config, work / tag / "reference", data_dir)
            cases = CASES if key_source == "seed" else CASES[:1]  # tampering does not depend on the key mode
            for case in cases:
                target = work / tag / case.name
                shutil.copytree(reference, target)
                case.change(target)
                rows.append(_row(backend, key_source, case.name, case.what, target, env, data_dir))
            for name, what, options in FORGERIES:
                # The forger holds the folder only: the seed is in it, the secret is not. The R
                # cases stand for genuine runs with refusals, so they are made with the secret.
                genuine = name.startswith("R")
                made_with = (secret if genuine else forger) if key_source == "env" else None
                forged = forge_run(config, work / tag / name, secret=made_with, data_dir=data_dir, **options)
                rows.append(_row(backend, key_source, name, what, forged, env, data_dir))
                if key_source == "env" and name == "F0":
                    rows.append(_row(backend, key_source, "F0-nosecret", what + "; audited without the secret",
                                     forged, {SECRET_ENV: None}, data_dir))
                    insider = forge_run(config, work / tag / "F0-insider", secret=secret, data_dir=data_dir,
                                        **options)
                    rows.append(_row(backend, key_source, "F0-insider", what + "; forged by the operator, who "
                                     "holds the secret (the limit of a chain the operator runs)", insider, env,
                                     data_dir))
    return _write_table(rows, out)


def _row(backend: str, key_source: str, case: str, what: str, run_dir: Path, env: dict[str, str | None],
         data_dir: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    verdict, code, blamed, trust = _verdict(run_dir, env, data_dir)
    print(f"{backend:8} {key_source:5} {case:12} {verdict:12} {blamed[:100]}", flush=True)
    return {"chain": backend, "key_source": key_source, "case": case, "tampering": what, "verdict": verdict,
            "exit": code, "blamed": blamed, "trust": trust, "seconds": round(time.perf_counter() - started, 1)}


def _write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    fields = ["chain", "key_source", "case", "tampering", "verdict", "exit", "blamed", "trust", "seconds"]
    with open(out / "audit_table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| chain | keys | case | tampering | verdict (exit) | first finding per failing check / run state |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        blamed = str(r["blamed"]).replace("|", "\\|")
        lines.append(f"| {r['chain']} | {r['key_source']} | {r['case']} | {r['tampering']} | "
                     f"**{r['verdict']}** ({r['exit']}) | {blamed} |")
    (out / "audit_table.md").write_text("\n".join(lines) + "\n")
    return out / "audit_table.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bflsim.tamper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="experiments/audit_tamper.toml")
    parser.add_argument("--out", default="results/audit")
    parser.add_argument("--work", default=None, help="where the run folders go (default: OUT/work)")
    parser.add_argument("--no-anvil", action="store_true")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    print(audit_table(args.experiment, args.out, anvil=not args.no_anvil, data_dir=args.data_dir, work=args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())

