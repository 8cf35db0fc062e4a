"""Resume: a federated run stopped after round 2 of 4 and resumed equals an uninterrupted run
(its rows but timings, every digest, its trail), with no ledger, on the embedded chain and on
anvil (both rebuilt from the trail); the audit then replays the resumed run's whole chain.

Kept apart from tests/test_lifecycle.py so that ``pytest -n 2 --dist loadfile`` spreads the
two files' Ray runs over both workers.
"""

import json
import signal

import pandas as pd
import pytest
from conftest import require_anvil

from bflsim.config import parse_experiment
from bflsim.runfolder import RunInterrupted, read_checkpoint, read_manifest

RUNTIME_BACKEND = {"num_cpus": 2}  # the runs below share one warm Ray runtime (conftest.warm_runtime)

# --- end to end: stopped after round 2 of 4, resumed, equal to an uninterrupted run ------------

FEDERATED = {
    "experiment": {"name": "resume", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 1200}},
    "models": {"names": ["dnn"], "dnn": {"hidden_units": [16], "dropout": 0.0}},
    "train": {"batch_size": 64, "learning_rate": 0.01},
    "federation": {"num_nodes": 6, "rounds": 4},
    "attack": {"name": "gaussian", "num_malicious": 1, "params": {"mode": "replace", "sigma": 5.0}},
    "aggregator": {"name": "krum"},
    "ledger": {"max_rejections": 2},  # the attacker is revoked in round 2: the chain decides round 3's cohort
    "backend": {"num_cpus": 2},
}
TIMING = {"elapsed_seconds", "round_seconds", "ledger_seconds", "chain_latency_seconds"}
# Every submitUpdate carries the run digest, whose random run nonce differs between two runs:
# calldata costs 4 gas per zero byte and 16 per other byte, so a round's gas differs by a
# multiple of 12, at most 12 x 32 per submission (checked apart from the other rows).
RUN_SPECIFIC = {"gas_used"}


def comparable(run_dir):
    metrics = pd.read_csv(run_dir / "metrics.csv").drop(columns="run_id")
    return metrics[~metrics["metric"].isin(TIMING | RUN_SPECIFIC)].reset_index(drop=True)


def round_gas(run_dir):
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[metrics["metric"] == "gas_used"].set_index("round")["value"]


def trail_rounds(run_dir):
    if not (run_dir / "trail").is_dir():
        return []
    lines = (run_dir / "trail" / "rounds.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["round"] > 0]  # round 0: data digests carry a timestamp


def stopped_in_round_3(config, out, monkeypatch):
    """Run ``config`` into ``out`` and stop it by SIGINT in round 3, after its commit and
    before its checkpoint; the interrupted run folder."""
    from bflsim.fl import server_main
    from bflsim.fl.simulation import run_federated

    evaluate = server_main.GlobalEvaluator.__call__

    def stop_in_round_3(self, server_round, arrays):
        if server_round == 3:
            raise RunInterrupted(signal.SIGINT)
        return evaluate(self, server_round, arrays)

    monkeypatch.setattr(server_main.GlobalEvaluator, "__call__", stop_in_round_3)
    with pytest.raises(RunInterrupted):
        run_federated(config, out)
    monkeypatch.setattr(server_main.GlobalEvaluator, "__call__", evaluate)
    [stopped] = out.iterdir()
    return stopped


@pytest.mark.parametrize("backend", ["embedded", "none", "anvil"])
def test_a_run_stopped_after_round_2_and_resumed_equals_an_uninterrupted_run(tmp_path, monkeypatch, backend):
    from bflsim.fl.simulation import run_federated

    if backend == "anvil":
        require_anvil()

    config = parse_experiment({**FEDERATED, "ledger": {**FEDERATED["ledger"], "backend": backend}})
    reference = run_federated(config, tmp_path / "whole").path
    stopped = stopped_in_round_3(config, tmp_path / "parts", monkeypatch)
    assert read_manifest(stopped)["status"] == "interrupted" and read_checkpoint(stopped).server_round == 2

    resumed = run_federated(config, tmp_path / "parts", run_dir=stopped, resume=True).path

    manifest, whole = read_manifest(resumed), read_manifest(reference)
    assert manifest["status"] == "complete" and manifest["resumed"][0]["from_round"] == 2
    assert manifest["resumed"][0]["dropped_lines"]["metrics.csv"] > 0  # round 3's rows before the stop
    pd.testing.assert_frame_equal(comparable(resumed), comparable(reference))
    gas_apart = (round_gas(resumed) - round_gas(reference)).abs()
    assert ((gas_apart % 12 == 0) & (gas_apart <= 12 * 32 * 6)).all(), gas_apart
    assert manifest["final_model_digest"] == whole["final_model_digest"]
    assert trail_rounds(resumed) == trail_rounds(reference)
    assert manifest.get("excluded_nodes") == whole.get("excluded_nodes")
    if backend != "none":  # the chain was rebuilt from the trail and carried on: the audit replays it all
        assert len(trail_rounds(resumed)) == 4
        rows = comparable(resumed)
        active = rows[(rows["split"] == "round") & (rows["metric"] == "active_nodes")]["value"].tolist()
        assert active[-1] < 6  # a revocation before the stop shaped the resumed rounds' cohorts
        assert manifest["ledger"]["contract"] == whole["ledger"]["contract"]
        from bflsim.audit import audit_run

        report = audit_run(resumed, check_data=False)
        assert report.ok, "\n".join(report.lines())


@pytest.mark.parametrize(("rule", "extra"), [
    ({"name": "foolsgold"}, {}),  # carries each node's summed updates
    ({"name": "centered_clipping", "params": {"tau": 0.5}}, {}),  # starts from the previous round's change
    ({"name": "fltrust"}, {"root_size": 60}),  # the server's reference update, stored for the audit
])
def test_rules_that_carry_state_resume_to_the_same_run_and_audit(tmp_path, monkeypatch, rule, extra):
    from bflsim.audit import audit_run
    from bflsim.fl.simulation import run_federated

    config = parse_experiment({**FEDERATED, "aggregator": rule, "federation": {**FEDERATED["federation"], **extra},
                               "ledger": {"backend": "embedded"}})
    reference = run_federated(config, tmp_path / "whole").path
    stopped = stopped_in_round_3(config, tmp_path / "parts", monkeypatch)
    checkpoint = read_checkpoint(stopped)
    assert checkpoint.server_round == 2 and checkpoint.defence is not None

    resumed = run_federated(config, tmp_path / "parts", run_dir=stopped, resume=True).path

    pd.testing.assert_frame_equal(comparable(resumed), comparable(reference))
    assert read_manifest(resumed)["final_model_digest"] == read_manifest(reference)["final_model_digest"]
    report = audit_run(resumed, check_data=False)
    assert report.ok, "\n".join(report.lines())
