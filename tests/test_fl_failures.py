"""Node failures: a node that crashes is a failure of its round, the round goes on while the
aggregator's condition holds, and a run that cannot go on stops with its rounds on disk."""

import json

import pandas as pd
import pytest

from bflsim.config import ConfigError, parse_experiment
from bflsim.edge_node import NodeCrash, inject_faults
from strategies.robust import FederationMismatch, RoundFailed, connected_nodes

RUNTIME_BACKEND = {}  # the runs below share one warm Ray runtime (conftest.warm_runtime)

BASE = {
    "experiment": {"name": "fl_failures", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 1500}},
    "models": {"names": ["cnn_lstm"], "cnn_lstm": {"conv_filters": 8, "lstm_units": 8}},
    "train": {"batch_size": 64, "learning_rate": 0.005},
    "federation": {"num_nodes": 6, "rounds": 2},
    "aggregator": {"name": "fedavg"},
}


def config_with(**sections):
    raw = json.loads(json.dumps(BASE))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return parse_experiment(raw)


def read_run(path):
    return json.loads((path / "manifest.json").read_text()), pd.read_csv(path / "metrics.csv")


@pytest.mark.parametrize(
    ("federation", "fragment"),
    [
        ({"crash_nodes": [6]}, r"federation.crash_nodes names nodes outside 0..5 \(federation.num_nodes = 6\): \[6\]"),
        ({"crash_nodes": [-1, 2]}, r"federation.crash_nodes names nodes outside 0..5"),
        ({"crash_rounds": [0, 3]}, r"federation.crash_rounds names rounds outside 1..2 \(federation.rounds = 2\): \[0, 3\]"),
        ({"slow_nodes": [9], "delay_seconds": 1.0}, r"federation.slow_nodes names nodes outside 0..5"),
        ({"slow_nodes": [1]}, r"federation.slow_nodes needs federation.delay_seconds > 0"),
        ({"delay_seconds": -1.0}, r"federation.delay_seconds must be >= 0"),
        ({"crash_nodes": 2}, r"federation.crash_nodes must be a list"),
    ],
)
def test_fault_settings_outside_the_federation_fail_naming_the_key(federation, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_with(federation=federation)


def test_a_crash_node_raises_only_in_its_crash_rounds():
    fed = config_with(federation={"crash_nodes": [2], "crash_rounds": [2]}).federation
    every_round = config_with(federation={"crash_nodes": [2]}).federation

    inject_faults(fed, 2, 1)  # round 1: no crash
    inject_faults(fed, 3, 2)  # another node: no crash
    with pytest.raises(NodeCrash, match="edge node 2 crashed in round 2"):
        inject_faults(fed, 2, 2)
    with pytest.raises(NodeCrash):
        inject_faults(every_round, 2, 1)


class FakeGrid:
    def __init__(self, count):
        self.count = count

    def get_node_ids(self):
        return list(range(100, 100 + self.count))


def test_a_federation_of_another_size_fails_naming_both_sizes():
    assert connected_nodes(FakeGrid(5), 5, settle=0.01) == [100, 101, 102, 103, 104]
    with pytest.raises(FederationMismatch, match=r'2 SuperNodes but federation.num_nodes = 5.*"num-supernodes=5"'):
        connected_nodes(FakeGrid(2), 5, settle=0.01)


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    config = config_with(federation={"crash_nodes": [2], "crash_rounds": [2]})
    return run_federated(config, tmp_path_factory.mktemp("crash")).path


def test_a_crashed_node_is_counted_and_the_round_goes_on_with_the_rest(crash_run):
    manifest, metrics = read_run(crash_run)

    rounds = metrics[metrics["split"] == "round"]
    failures = rounds[rounds["metric"] == "failures"]["value"].tolist()
    received = rounds[rounds["metric"] == "updates_received"]["value"].tolist()
    failed = metrics[(metrics["split"] == "node") & (metrics["metric"] == "failed")]
    test_rounds = sorted(metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["round"])
    assert manifest["status"] == "complete"
    assert failures == [0.0, 1.0] and received == [6.0, 5.0]
    assert failed[["round", "node"]].values.tolist() == [[2, 2]]
    assert test_rounds == [0, 1, 2]  # round 2's aggregate of the five other updates was scored
    [failure] = manifest["node_failures"]
    assert failure["round"] == 2 and failure["node"] == 2
    assert "edge node 2 crashed in round 2" in failure["reason"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    out = tmp_path_factory.mktemp("stopped")
    config = config_with(
        federation={"num_nodes": 5, "crash_nodes": [3], "crash_rounds": [2]},
        attack={"name": "gaussian", "num_malicious": 1, "sigma": 5.0},
        aggregator={"name": "krum"},
    )
    with pytest.raises(RoundFailed) as raised:
        run_federated(config, out)
    [path] = out.iterdir()
    return path, str(raised.value)


def test_too_few_updates_for_krum_stop_the_run_and_keep_the_completed_rounds(stopped_run):
    path, error = stopped_run
    manifest, metrics = read_run(path)

    condition = "Krum cannot tolerate f=1 malicious among n=4 clients: it needs n > 2f + 2"
    test_rounds = sorted(metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["round"])
    selected_rounds = metrics[(metrics["split"] == "node") & (metrics["metric"] == "selected")]["round"]
    rounds = metrics[metrics["split"] == "round"]
    assert condition in error and error.startswith("round 2: 4 usable updates after 1 failures")
    assert manifest["status"] == "stopped" and condition in manifest["error"]
    assert test_rounds == [0, 1]
    assert set(selected_rounds) == {1}
    assert rounds[rounds["metric"] == "failures"][["round", "value"]].values.tolist() == [[1, 0.0], [2, 1.0]]


@pytest.fixture(scope="module", params=["none", "embedded"])
def overflow_run(request, tmp_path_factory):
    """A scaling attacker whose factor 1e39 overflows float32: its update is all inf."""
    from bflsim.config import with_overrides
    from bflsim.fl.simulation import run_federated

    config = config_with(attack={"name": "scaling", "num_malicious": 1, "factor": 1e39})
    config = with_overrides(config, {"ledger.backend": request.param})
    return run_federated(config, tmp_path_factory.mktemp(f"overflow-{request.param}")).path, config


def test_a_non_finite_update_is_refused_per_node_and_the_run_completes(overflow_run):
    path, config = overflow_run
    manifest, metrics = read_run(path)
    attacker = int(config.malicious_nodes(1)[0])

    rounds = metrics[metrics["split"] == "round"]
    refused = metrics[(metrics["split"] == "node") & (metrics["metric"] == "refused")]
    assert manifest["status"] == "complete"
    assert refused[["round", "node"]].values.tolist() == [[1, attacker], [2, attacker]]
    assert rounds[rounds["metric"] == "refused_updates"]["value"].tolist() == [1.0, 1.0]
    assert rounds[rounds["metric"] == "updates_received"]["value"].tolist() == [5.0, 5.0]
    assert all("holds NaN or inf" in f["reason"] for f in manifest["node_failures"])
    accuracy = metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["value"]
    assert accuracy.notna().all() and len(accuracy) == 3


@pytest.mark.parametrize("overflow_run", ["embedded"], indirect=True)
def test_the_audit_passes_a_run_with_a_refused_update(overflow_run):
    from bflsim.audit import audit_run
    from bflsim.runfolder import read_rounds

    path, config = overflow_run
    report = audit_run(path)
    attacker = int(config.malicious_nodes(1)[0])

    assert report.ok, "\n".join(report.lines())
    for trail in read_rounds(path)[1:]:
        [entry] = [u for u in trail["updates"] if u["node"] == attacker]
        assert (entry["refusal"], entry["relayed"]) == ("non_finite", False) and entry["tx"]
        assert attacker not in trail["candidates"]
