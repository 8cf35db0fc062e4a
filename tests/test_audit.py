"""The audit's catches, on run folders forged without Ray (``bflsim.tamper.forge_run``).

A forged folder is a complete, consistent ledger-backed run made in a few seconds: the same
registry, trail, blobs and metric rows a real run writes, with fabricated updates. It
passes the audit in seed mode (that is finding H1, stated in the verdict's trust level),
so each test breaks one thing in a copy and asserts the audit names it. The real Flower +
Ray run is audited in tests/test_ledger_fl.py.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bflsim.audit import AuditError, audit_run, parse_rounds, trust_statement
from bflsim.cli import main
from bflsim.config import parse_experiment
from bflsim.hashing import digest_hex, evaluation_digest, weights_digest
from bflsim.ledger import REGISTRY_VERSION
from bflsim.ledger.identity import (
    derive_identities,
    expected_addresses,
    keystore_identities,
    node_identities,
)
from bflsim.tamper import CASES, forge_run

SECRET = "a-test-secret-0123456789abcdef"
V1_RUN = Path(__file__).parent / "data" / "v1_run"
V2_RUN = Path(__file__).parent / "data" / "v2_run"  # experiments/audit_tamper.toml at 8bd60af (registry v2)

RAW = {
    "experiment": {"name": "audit_test", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 900}},
    "models": {"names": ["cnn_lstm"], "cnn_lstm": {"conv_filters": 4, "lstm_units": 4}},
    "train": {"batch_size": 64, "learning_rate": 0.005, "seed": 42},
    "federation": {"num_nodes": 7, "rounds": 3, "seed": 42},
    "attack": {"name": "gaussian", "num_malicious": 1, "seed": 0, "params": {"mode": "replace", "sigma": 5.0}},
    "aggregator": {"name": "krum"},
    "ledger": {"backend": "embedded", "max_rejections": 2},
}


def config_with(**ledger):
    raw = json.loads(json.dumps(RAW))
    raw["ledger"].update(ledger)
    return parse_experiment(raw)


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    return forge_run(config_with(), tmp_path_factory.mktemp("forged"))


@pytest.fixture
def copy_of(forged, tmp_path):
    target = tmp_path / forged.name
    shutil.copytree(forged, target)
    return target


def case(name):
    return next(c for c in CASES if c.name == name)


def tampered(copy_of, name):
    case(name).change(copy_of)
    return audit_run(copy_of)


def problems(report):
    return " | ".join(p for s in report.sections for p in s.problems)


# --- the consistent forgery and the trust level --------------------------------------------


def test_a_consistent_forgery_passes_in_seed_mode_and_the_verdict_says_so(forged):
    report = audit_run(forged)

    assert report.exit_code == 0, "\n".join(report.lines())
    verdict = report.lines()[-1]
    assert verdict.startswith("verdict: PASS (run complete, 3 of 3 rounds committed")
    assert report.registry_version == REGISTRY_VERSION and "v1 registry" not in verdict
    assert "self-consistency only" in verdict and "a forged folder can pass" in verdict


def test_a_v1_registry_run_stays_auditable_and_says_what_is_not_on_chain(tmp_path):
    run_dir = tmp_path / "v1_run"
    shutil.copytree(V1_RUN, run_dir)  # a real run (Flower + Ray) made before the v2 registry

    report = audit_run(run_dir)

    assert report.exit_code == 0, "\n".join(report.lines())
    assert report.registry_version == 1
    assert "not recorded on chain (v1 registry): run configuration, evaluations, partition sizes" in report.lines()[-1]
    assert "round 2" not in report.rounds[0].line()  # node 2's integrity failure in round 2 re-checked, justified


def test_a_v2_registry_run_stays_auditable(tmp_path):
    run_dir = tmp_path / "v2_run"
    shutil.copytree(V2_RUN, run_dir)  # a real run with the 255-node bitmap registry

    report = audit_run(run_dir)

    assert report.exit_code == 0, "\n".join(report.lines())
    assert report.registry_version == 2 and not report.not_on_chain
    assert "accepted [0, 2, 3, 4, 5, 6]" in report.rounds[1].line()  # the commit's bitmap, read as indices
    tampered = run_dir / "trail" / "rounds.jsonl"
    tampered.write_text(tampered.read_text().replace('"accepted": [0, 3, 4, 5, 6]', '"accepted": [0, 3, 4, 5]', 1))
    assert audit_run(run_dir).exit_code == 1


def test_a_forgery_in_env_mode_fails_for_an_auditor_holding_the_secret(tmp_path, monkeypatch):
    config = config_with(key_source="env")
    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", "the-forgers-guess-0000000000")
    forged = forge_run(config, tmp_path)  # the forger has the folder, not the secret

    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)
    with_secret = audit_run(forged, rounds="none")
    monkeypatch.delenv("BFLSIM_NODE_KEY_SECRET")
    without = audit_run(forged, rounds="none")

    assert with_secret.exit_code == 1
    assert "are not the addresses of the run's keys" in with_secret.rounds[0].line()
    assert without.exit_code == 0  # nothing to check the keys against: said in the trust level
    assert "node keys not checked here" in without.lines()[-1]


def test_a_forgery_in_keystore_mode_fails_for_an_auditor_holding_the_keystore(tmp_path):
    real = tmp_path / "real-keys"
    keystore_identities(real, 7)  # the lab's keys; the forger never saw them
    forged = forge_run(config_with(key_source="keystore", keystore=str(tmp_path / "forger-keys")), tmp_path / "runs")
    path = forged / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["ledger"]["keystore"] = str(real)  # claims the lab's keystore
    path.write_text(json.dumps(manifest))

    report = audit_run(forged, rounds="none")

    assert report.exit_code == 1
    assert "are not the addresses of the run's keys" in report.rounds[0].line()
    assert "checked against the keystore" in " ".join(report.trust)


# --- tampering: each catch -----------------------------------------------------------------


def test_t01_an_edited_accuracy_fails_the_re_evaluation(copy_of):
    report = tampered(copy_of, "T01")

    assert report.exit_code == 1
    assert "round 3: metrics.csv says accuracy 0.9912" in report.evaluation.line()


def test_t02b_a_deleted_data_registration_line_fails(copy_of):
    report = tampered(copy_of, "T02b")

    assert "no round-0 line" in report.rounds[0].line()


def test_t04b_an_accepted_update_marked_refused_is_framing(copy_of):
    report = tampered(copy_of, "T04b")

    assert report.exit_code == 1
    assert "but its signed transaction, blob and sample count are valid (framed)" in report.rounds[1].line()


def test_t06a_t06b_the_manifests_attack_must_reproduce_the_attackers_updates(copy_of, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(copy_of, other)

    sigma = tampered(copy_of, "T06a")
    attackers = tampered(other, "T06b")

    assert "is an attacker per the manifest (gaussian), but its update is not" in problems(sigma)
    assert "is an attacker per the manifest" in problems(attackers)


def test_t06d_a_manifest_claiming_no_attack_contradicts_the_poisoned_rows(copy_of):
    report = tampered(copy_of, "T06d")

    assert report.exit_code == 1
    assert "metrics.csv says poisoned_received 1" in problems(report)


def test_t07b_another_train_seed_is_another_initial_model(copy_of):
    report = tampered(copy_of, "T07b")

    assert "not from the initial model of train.seed = 7" in report.rounds[1].line()


def test_t08b_another_test_split_fails_the_re_evaluation(copy_of):
    report = tampered(copy_of, "T08b")

    assert report.exit_code == 1
    assert report.run.ok, report.run.line()  # the manifest's data description was edited to match
    assert "confusion.csv differs" in report.evaluation.line()


def test_t09_a_complete_run_must_commit_every_configured_round(copy_of):
    report = tampered(copy_of, "T09")

    assert "marked complete but 2 of the 3 configured rounds were committed" in report.run.line()


def test_t10_a_replaced_final_model_fails_even_when_the_run_is_marked_stopped(copy_of):
    report = tampered(copy_of, "T10")

    assert "final_model.npz hashes to" in report.final.line()
    assert "run stopped after round 3 of 3" in report.lines()[-1]


def test_t05b_swapped_global_blobs_blame_their_rounds_not_the_final_model(copy_of):
    report = tampered(copy_of, "T05b")

    assert not report.rounds[1].ok and not report.rounds[2].ok
    assert report.final.ok, report.final.line()


def test_t03b_a_reordered_commit_is_blamed_on_its_rounds_not_on_setup(copy_of):
    report = tampered(copy_of, "T03b")

    assert report.rounds[0].ok, report.rounds[0].line()
    assert "refused on replay" in report.rounds[1].line() or "refused on replay" in report.rounds[2].line()


def test_x01_a_failed_run_passes_only_with_its_status_and_open_round_shown(copy_of):
    report = tampered(copy_of, "X01")

    assert report.exit_code == 0, "\n".join(report.lines())
    assert report.lines()[-1].startswith("verdict: PASS (run failed after round 2 of 3; round 3 opened, never committed")
    assert report.final.line() == "final model: OK (none (run failed))"


def test_a_stopped_round_that_left_no_transaction_is_shown_from_metrics_csv(copy_of):
    from bflsim.tamper import _drop_last_round

    _drop_last_round(copy_of, status="stopped", keep_open=False)
    with open(copy_of / "metrics.csv", "a") as fh:
        fh.write(f"{copy_of.name},cnn_lstm,node,3,,4,,failed,1.0\n")

    report = audit_run(copy_of, rounds="none")

    assert report.exit_code == 0, "\n".join(report.lines())
    assert "run stopped after round 2 of 3; round 3 started (rows in metrics.csv, nothing on chain)" in report.lines()[-1]


def test_rows_for_an_uncommitted_round_in_a_complete_run_fail(copy_of):
    with open(copy_of / "metrics.csv", "a") as fh:  # what a stale thread of an older run appended (H4)
        fh.write(f"{copy_of.name},cnn_lstm,node,4,,0,,failed,1.0\n")

    report = audit_run(copy_of, rounds="none")

    assert "metrics.csv has rows for rounds [4], after the last committed round 3" in report.run.line()


def test_data_is_looked_for_where_the_runs_files_were(tmp_path):
    from bflsim.audit.context import _data_dir_candidates
    from bflsim.runfolder import Run

    raw = json.loads(json.dumps(RAW))
    raw["data"] = {"dataset": "nsl-kdd"}
    config = parse_experiment(raw)
    manifest = {"config": {}, "data": {"sources": [{"path": "/srv/data/nsl-kdd/KDDTrain+.txt.gz", "sha256": "x"}]},
                "cwd": "/home/me/project", "data_dir": "data"}

    found = [str(path) for _, path in _data_dir_candidates(Run(tmp_path, manifest), config, None)]

    assert found[:2] == ["/home/me/project/data", "/srv/data"]
    assert [str(p) for _, p in _data_dir_candidates(Run(tmp_path, manifest), config, "/x")] == ["/x"]


@pytest.mark.parametrize("misbehave", [{4: "round", 5: "digest"}, {3: "to", 6: "nan"}])
def test_updates_refused_for_true_reasons_pass_with_the_reasons_confirmed(tmp_path, misbehave):
    report = audit_run(forge_run(config_with(), tmp_path, misbehave=misbehave), rounds="none")

    assert report.exit_code == 0, "\n".join(report.lines())
    assert "2 refused (reasons confirmed)" in report.rounds[1].line()


# --- censoring and framing by the operator ---------------------------------------------------


def test_an_honest_node_left_out_of_the_cohorts_is_caught(tmp_path):
    report = audit_run(forge_run(config_with(), tmp_path, censor=3), rounds="none")

    assert report.exit_code == 1
    assert "left out [3]" in report.rounds[1].line()


def test_an_honest_node_framed_with_a_made_up_refusal_is_caught(tmp_path):
    report = audit_run(forge_run(config_with(), tmp_path, frame=2), rounds="none")

    assert "node 2's update was refused" in report.rounds[1].line() and "(framed)" in report.rounds[1].line()


def test_a_submitted_update_dropped_from_the_candidates_is_censorship(copy_of):
    path = copy_of / "trail/rounds.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    record = rows[1]
    node = record["candidates"][0]
    record["updates"] = [u for u in record["updates"] if u["node"] != node]
    record["candidates"] = [n for n in record["candidates"] if n != node]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    report = audit_run(copy_of, rounds="none")

    assert f"node {node}'s update was submitted on chain but is neither aggregated nor refused" in problems(report)


# --- exit codes, data, rounds ---------------------------------------------------------------


def test_cli_exit_codes_pass_mismatch_and_cannot_audit(forged, copy_of, tmp_path, capsys):
    assert main(["audit", str(forged), "--rounds", "last"]) == 0
    case("T01").change(copy_of)
    assert main(["audit", str(copy_of)]) == 1
    assert main(["audit", str(tmp_path / "nothing")]) == 2
    assert "cannot audit" in capsys.readouterr().err


def test_cli_audits_every_ledger_run_below_a_folder_and_writes_what_it_printed(forged, tmp_path, capsys):
    experiment = tmp_path / "experiment"
    good, bad = experiment / "a", experiment / "b"
    shutil.copytree(forged, good)
    shutil.copytree(forged, bad)
    rounds = bad / "trail" / "rounds.jsonl"
    rows = [json.loads(line) for line in rounds.read_text().splitlines()]
    rows[1]["candidates"] = rows[1]["candidates"][1:]  # a submitted update dropped: censorship
    rounds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "audits" / "experiment.txt"

    assert main(["audit", str(experiment), "--rounds", "none", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert printed.count("== ") == 2 and f"== {good}" in printed and f"== {bad}" in printed
    assert printed.rstrip().endswith("2 runs: 1 PASS, 1 FAIL, 0 could not check")
    assert main(["audit", str(good), "--rounds", "none", "--out", str(out)]) == 0
    assert "== " not in out.read_text() and "verdict: PASS" in out.read_text()


def csv_config(path):
    raw = json.loads(json.dumps(RAW))
    raw["data"] = {"dataset": "csv", "path": str(path), "label_column": "label", "normal_label": "benign"}
    return parse_experiment(raw)


def write_csv(path, rows=700):
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(rows) < 0.5, "benign", "attack")
    features = rng.normal(size=(rows, 4)) + (labels == "attack")[:, None]
    lines = ["f1,f2,f3,f4,label"] + [",".join(f"{v:.5f}" for v in f) + f",{y}" for f, y in zip(features, labels)]
    path.write_text("\n".join(lines) + "\n")


def test_missing_data_is_never_a_pass_and_a_relative_path_resolves_as_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "flows.csv")
    run_dir = forge_run(csv_config("flows.csv"), tmp_path / "runs")  # relative data.path, cwd = tmp_path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    found = audit_run(run_dir, rounds="none")
    (tmp_path / "flows.csv").rename(tmp_path / "moved.csv")
    missing = audit_run(run_dir, rounds="none")
    skipped = audit_run(run_dir, rounds="none", check_data=False)

    assert found.exit_code == 0, "\n".join(found.lines())
    assert missing.exit_code == 2
    assert missing.lines()[-1].startswith("verdict: NOT CHECKED (configuration, round setup could not be checked")
    assert "the run's data was not found" in missing.rounds[0].line()
    assert skipped.exit_code == 0 and "skipped: data checks (--skip-data)" in skipped.lines()[-1]


def test_rounds_to_re_evaluate():
    assert parse_rounds(None, [1, 2, 3]) is None
    assert parse_rounds("none", [1, 2, 3]) == []
    assert parse_rounds("1,last", [1, 2, 3, 4, 5]) == [1, 5]
    assert parse_rounds("sample:3", [1, 2, 3, 4, 5]) == [1, 3, 5]
    with pytest.raises(ValueError, match="'1,5,last'"):
        parse_rounds("every", [1])


def test_an_audit_with_sampled_rounds_scores_only_those(copy_of):
    case("T01").change(copy_of)  # round 3 edited

    assert audit_run(copy_of, rounds="1").exit_code == 0
    assert audit_run(copy_of, rounds="last").exit_code == 1


# --- registry v2: run digest and evaluation digests --------------------------------------------


def test_v2_run_digest_and_evaluation_digests_are_checked(forged):
    report = audit_run(forged)

    assert report.registry_version == REGISTRY_VERSION and not report.not_on_chain
    assert "matches the manifest (config, test split)" in report.configuration.line()
    assert "checked only through" not in report.configuration.line()


def test_v2_a_manifest_config_other_than_the_recorded_one_fails(copy_of):
    case("T06d").change(copy_of)  # claims no attack

    report = audit_run(copy_of, rounds="none")

    assert "is not the one whose digest was recorded on chain" in report.configuration.line()


def test_v2_edited_run_facts_fail(copy_of):
    for name in ("manifest.json", "trail/chain.json"):
        path = copy_of / name
        document = json.loads(path.read_text())
        facts = document["run_facts"]
        facts["test_split"] = "0x" + "00" * 32
        path.write_text(json.dumps(document))

    report = audit_run(copy_of, rounds="none")

    assert "run_digest(run_facts)" in report.configuration.line()
    assert "the recomputed test split hashes to" in report.configuration.line()


def test_v2_a_committed_evaluation_digest_must_be_the_models(copy_of, monkeypatch):
    from bflsim import audit

    original = audit._by_kind

    def by_kind(events):  # as if the aggregator had committed another confusion matrix for round 2
        grouped = original(events)
        commit = grouped["RoundCommitted"][2][0]
        grouped["RoundCommitted"][2][0] = dict(commit, evaluationDigest=evaluation_digest(2, np.eye(5, dtype=int)))
        return grouped

    monkeypatch.setattr(audit, "_by_kind", by_kind)
    report = audit_run(copy_of)

    assert "round 2: the committed evaluation digest is not" in report.evaluation.line()


# --- key sources ------------------------------------------------------------------------------


def test_env_keys_need_the_secret_and_differ_from_seed_keys(monkeypatch):
    config = config_with(key_source="env")
    monkeypatch.delenv("BFLSIM_NODE_KEY_SECRET", raising=False)
    with pytest.raises(ValueError, match=r"\$BFLSIM_NODE_KEY_SECRET"):
        node_identities(config)
    assert expected_addresses(config)[0] is None

    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)
    env_keys = [i.address for i in node_identities(config)]
    seed_keys = [i.address for i in derive_identities(42, 7)]
    assert env_keys != seed_keys and len(set(env_keys)) == 7
    assert list(expected_addresses(config)[0].values()) == env_keys


def test_keystore_keys_are_created_once_and_read_back(tmp_path):
    config = config_with(key_source="keystore", keystore=str(tmp_path / "keys"))
    assert expected_addresses(config)[0] is None  # the audit never creates keys

    first = [i.address for i in keystore_identities(tmp_path / "keys", 7)]
    again = [i.address for i in keystore_identities(tmp_path / "keys", 7, create=False)]

    assert first == again and first == list(expected_addresses(config)[0].values())
    assert oct((tmp_path / "keys" / "node-0.key").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="needs ledger.keystore"):
        config_with(key_source="keystore")


def test_trust_statement_per_chain_and_key_mode():
    assert "a forged folder can pass" in trust_statement("embedded", True, "seed", "the run's key seed")[0]
    assert "not checked here" in trust_statement("anvil", True, "env", None)[0]
    assert "key holders" in trust_statement("rpc", False, "keystore", "the keystore k")[0]
    assert "kept by others" in trust_statement("rpc", False, "keystore", "the keystore k")[0]


def test_a_non_run_folder_cannot_be_audited(tmp_path):
    with pytest.raises(AuditError, match="not a run folder"):
        audit_run(tmp_path)


def test_weights_digest_of_the_final_model_is_the_last_commit(forged):
    from bflsim.runfolder import read_rounds, read_run

    last = read_rounds(forged)[-1]["new_global_digest"]
    assert digest_hex(weights_digest(read_run(forged).final_model())) == last


def test_scores_a_few_ulps_off_pass_only_with_the_same_selection_and_the_committed_trail():
    """Another CPU's BLAS kernel rounds the distances differently (SkylakeX vs Haswell): the
    re-run's scores may differ in the last bits; anything more, or another choice, fails."""
    from types import SimpleNamespace

    from bflsim.audit.rounds import _scores_within_rounding
    from bflsim.hashing import scores_digest

    recorded = np.array([0.12352173234798108, 64355.25717742872, 0.17699827290899395])
    trail = {"selected": [0], "scores": recorded.tolist()}
    committed = scores_digest([0], recorded)

    def decision(scores, selected=(0,)):
        return SimpleNamespace(selected=list(selected), selection=SimpleNamespace(scores=np.asarray(scores)))

    ulps = np.nextafter(recorded, np.inf)
    assert 0 < _scores_within_rounding(trail, decision(ulps), committed) < 1e-15
    assert _scores_within_rounding(trail, decision(recorded * (1 + 1e-6)), committed) is None
    assert _scores_within_rounding(trail, decision(ulps, selected=(2,)), committed) is None
    forged = {**trail, "scores": [0.1, 64355.25717742872, 0.17699827290899395]}
    assert _scores_within_rounding(forged, decision(ulps), committed) is None  # not what was committed
