"""The closed loop end to end on Flower + Ray and the embedded registry (issue 14): a global
model trained for 15 rounds scores 12 devices' traffic, the compromised devices are
quarantined, an edge node raising false alerts is disputed and revoked, and the audit passes."""

import json

import pandas as pd
import pytest

from bflsim.config import parse_experiment
from bflsim.traffic import window_digest

RUNTIME_BACKEND = {}  # one warm Ray runtime for the module (conftest.warm_runtime)

LOOP_RUN = {
    "experiment": {"name": "loop_test", "kind": "federated"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 2000}},
    "models": {"names": ["dnn"], "dnn": {"hidden_units": [32], "dropout": 0.0}},
    "train": {"batch_size": 64, "learning_rate": 0.02},
    "federation": {"num_nodes": 4, "rounds": 15},
    "attack": {"name": "none"},
    "aggregator": {"name": "fedavg"},
    "ledger": {"max_rejections": 2},
    "loop": {"devices_per_node": 3, "compromised": 2, "duration_seconds": 60.0, "slice_seconds": 20.0,
             "start_seconds": 10.0, "flows_per_second": 2.0, "window": 10, "threshold": 5,
             "false_alert_nodes": [3]},
}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    return run_federated(parse_experiment(LOOP_RUN), tmp_path_factory.mktemp("runs")).path


def test_the_loop_quarantines_the_compromised_devices_and_writes_its_rows(loop_run):
    devices = pd.read_csv(loop_run / "loop" / "devices.csv")
    alerts = pd.read_csv(loop_run / "loop" / "alerts.csv", dtype={"verdicts": str})
    slices = pd.read_csv(loop_run / "loop" / "slices.csv")
    summary = json.loads((loop_run / "manifest.json").read_text())["loop"]

    assert len(devices) == 12 and devices["compromised"].sum() == 2
    quarantined = devices[devices["quarantined_at"].notna()]
    assert set(quarantined["device"]) == set(alerts.loc[alerts["outcome"] == "quarantined", "device"])
    assert summary["quarantined_benign"] == int((quarantined["compromised"] == 0).sum())
    assert summary["quarantined_compromised"] + summary["missed_compromised"] == 2
    early = quarantined[(quarantined["compromised"] == 1) & (quarantined["quarantined_at"] < quarantined["start"])]
    assert summary["quarantined_before_attack"] == len(early)
    assert (quarantined["quarantined_at"] >= quarantined["first_alert"]).all()
    for row in alerts.itertuples():  # each window's digest is the one of the rows and verdicts kept
        rows = [int(r) for r in str(row.rows).split()]
        assert window_digest(row.device, rows, [c == "1" for c in row.verdicts]) == bytes.fromhex(row.window[2:])
    assert sorted(slices["slice"].unique()) == [0, 1, 2] and (slices["scored"].fillna(0) >= 0).all()


def test_an_edge_node_raising_false_alerts_is_disputed_and_revoked(loop_run):
    alerts = pd.read_csv(loop_run / "loop" / "alerts.csv")
    slices = pd.read_csv(loop_run / "loop" / "slices.csv")
    events = [json.loads(line) for line in (loop_run / "trail" / "transactions.jsonl").read_text().splitlines()]

    liar = alerts[alerts["node"] == 3]
    assert (liar["compromised"] == 0).all() and (liar["outcome"] == "disputed").sum() == 2
    assert set(liar["outcome"]) <= {"disputed", "refused"}  # nothing of it relayed
    assert 3 not in set(slices.loc[slices["slice"] == 2, "node"])  # revoked after two disputes
    assert [e["kind"] for e in events if e["kind"] == "dispute_alert"] == ["dispute_alert"] * 2


def test_the_audit_of_a_loop_run_re_scores_every_alert_and_dispute(loop_run):
    from bflsim.audit import audit_run

    report = audit_run(loop_run)

    assert report.exit_code == 0, "\n".join(report.lines())
    line = report.loop.line()
    assert line.startswith("closed loop: OK") and "2 disputes re-scored with the round-15 model" in line, line


def test_the_audit_fails_a_loop_whose_rows_were_changed(loop_run, tmp_path):
    import shutil

    from bflsim.audit import audit_run

    copy = tmp_path / loop_run.name
    shutil.copytree(loop_run, copy)
    alerts = pd.read_csv(copy / "loop" / "alerts.csv", dtype={"verdicts": str, "rows": str})
    quarantined = alerts.index[alerts["outcome"] == "quarantined"][0]
    alerts.loc[quarantined, "rows"] = " ".join(["0"] * len(str(alerts.loc[quarantined, "rows"]).split()))
    alerts.to_csv(copy / "loop" / "alerts.csv", index=False)
    devices = pd.read_csv(copy / "loop" / "devices.csv")
    devices.loc[devices["compromised"] == 0, "quarantined_at"] = 20.0  # claims benign devices quarantined too
    devices.to_csv(copy / "loop" / "devices.csv", index=False)

    report = audit_run(copy)

    line = report.loop.line()
    assert report.exit_code == 1 and line.startswith("closed loop: MISMATCH"), line
    assert "do not hash to the window digest on chain" in line and "loop/devices.csv reports" in line


def test_the_report_tabulates_the_loop_and_bflsim_figures_redraws_it(loop_run, tmp_path):
    from bflsim.cli import main
    from bflsim.report import write_report

    written = {p.name for p in write_report([loop_run], tmp_path)}

    assert {"loop_devices.csv", "loop_runs.csv", "loop_table.md", "loop_table.tex", "quarantine.pdf"} <= written
    table = pd.read_csv(tmp_path / "loop_table.csv")
    summary = json.loads((loop_run / "manifest.json").read_text())["loop"]
    assert table["quarantined_compromised"].tolist() == [summary["quarantined_compromised"]]
    assert table["alerts_disputed"].tolist() == [2] and table["edge_nodes_revoked"].tolist() == [1]  # node 3
    metrics = pd.read_csv(loop_run / "metrics.csv")
    round_15 = metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy") & (metrics["round"] == 15)]
    assert table["model_accuracy"].tolist() == pytest.approx(round_15["value"].tolist())
    devices = pd.read_csv(loop_run / "loop" / "devices.csv")
    bad = devices[devices["compromised"] == 1]
    assert table["quarantined_before_attack"].tolist() == [int((bad["quarantined_at"] < bad["start"]).sum())]
    confusion = pd.read_csv(loop_run / "confusion.csv")
    confusion = confusion[(confusion["split"] == "test") & (confusion["round"] == 15)]
    names = json.loads((loop_run / "manifest.json").read_text())["data"]["class_names"]
    of_class = confusion[confusion["true"] == names[int(bad["attack_class"].iloc[0])]]
    caught = of_class[of_class["predicted"] != names[0]]["count"].sum() / of_class["count"].sum()
    assert table["attack_class_detected"].tolist() == pytest.approx([caught])
    before = (tmp_path / "quarantine.pdf").read_bytes()
    (tmp_path / "quarantine.pdf").unlink()
    assert main(["figures", str(tmp_path)]) == 0
    assert (tmp_path / "quarantine.pdf").read_bytes() == before  # redrawn from the tidy rows, byte for byte
