"""The ledger in a real Flower + Ray run: registration, VerifyIntegrity, revocation, audit.

One run on the embedded chain (7 nodes, 3 rounds, Krum, 1 Gaussian attacker, node 2's data
tampered from round 2, revocation after 2 rejections) serves most tests; tampering tests
copy its folder and break one thing each.
"""

import json
import shutil
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import require_anvil
from test_federated import config_with

from bflsim.audit import audit_run
from bflsim.config import ConfigError
from bflsim.ledger import REGISTRY_VERSION, LedgerError
from bflsim.runfolder import read_chain, read_rounds, read_transactions

RUNTIME_BACKEND = {}  # the runs below share one warm Ray runtime (conftest.warm_runtime)

LEDGER_RUN = {
    "federation": {"num_nodes": 7, "rounds": 3, "tamper_nodes": [2], "tamper_round": 2},
    "ledger": {"backend": "embedded", "max_rejections": 2},
}


def ledger_config(**sections):
    merged = {k: dict(v) for k, v in LEDGER_RUN.items()}
    for key, values in sections.items():
        merged.setdefault(key, {}).update(values)
    raw = {k: v for k, v in merged.items() if k != "ledger"}
    config = config_with(**raw)
    from bflsim.config import with_overrides

    return with_overrides(config, {f"ledger.{k}": v for k, v in merged["ledger"].items()})


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    from bflsim.fl.simulation import run_federated

    return run_federated(ledger_config(), tmp_path_factory.mktemp("runs")).path


@pytest.fixture
def copy_of(chain_run, tmp_path):
    target = tmp_path / chain_run.name
    shutil.copytree(chain_run, target)
    return target


def rows(run_dir, split, metric):
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[(metrics["split"] == split) & (metrics["metric"] == metric)]


def test_run_registers_nodes_data_rounds_and_records_chain_metrics(chain_run):
    manifest = json.loads((chain_run / "manifest.json").read_text())
    chain = read_chain(chain_run)
    kinds = [t["kind"] for t in read_transactions(chain_run)]

    assert manifest["status"] == "complete"
    assert manifest["ledger"] == chain and chain["contract"].startswith("0x")
    assert kinds[:1] == ["deploy"] and kinds.count("register_data") == 7
    assert kinds.count("open_round") == 3 and kinds.count("commit_round") == 3
    gas = rows(chain_run, "round", "gas_used")["value"].tolist()
    transactions = rows(chain_run, "round", "transactions")["value"].tolist()
    assert len(gas) == 3 and all(g > 100_000 for g in gas)
    assert transactions[0] == 2 + 7  # open, commit, one submitUpdate per cohort node
    submit = [t["gas_used"] for t in read_transactions(chain_run) if t["kind"] == "submit_update"]
    assert max(submit) <= 60_000


def test_run_facts_bind_the_registry_and_each_commit_carries_the_logged_evaluation(chain_run):
    from bflsim.config import config_digest
    from bflsim.hashing import evaluation_digest, run_digest
    from bflsim.runfolder import read_run

    manifest = json.loads((chain_run / "manifest.json").read_text())
    chain = read_chain(chain_run)
    facts = manifest["run_facts"]
    confusion = pd.read_csv(chain_run / "confusion.csv")
    classes = manifest["data"]["class_names"]

    assert chain["registry_version"] == REGISTRY_VERSION and chain["run_facts"] == facts
    assert manifest["run_digest"] == chain["run_digest"] == "0x" + run_digest(facts).hex()
    assert facts["config"] == config_digest(read_run(chain_run).config) and facts["run_id"] == chain_run.name
    assert chain["aggregator"] != chain["operator"]
    for trail in read_rounds(chain_run)[1:]:
        rows_of_round = confusion[confusion["round"] == trail["round"]]
        assert len(rows_of_round) == len(classes) ** 2  # logged once
        cm = (rows_of_round.pivot(index="true", columns="predicted", values="count")
              .loc[classes, classes].to_numpy())
        assert trail["evaluation_digest"] == "0x" + evaluation_digest(trail["round"], cm).hex()
    assert len(rows(chain_run, "test", "accuracy")) == 4  # rounds 0-3, each scored and logged once


def test_tampered_node_is_detected_and_excluded(chain_run):
    rounds = {r["round"]: r for r in read_rounds(chain_run)}
    manifest = json.loads((chain_run / "manifest.json").read_text())
    flagged = rows(chain_run, "node", "integrity_failed")

    assert 2 in rounds[1]["candidates"]  # round 1: data still as registered
    assert flagged[["round", "node"]].values.tolist() == [[2, 2]]
    assert "differs from" in manifest["excluded_nodes"]["2"]
    assert 2 not in rounds[2]["candidates"] and 2 not in rounds[3]["cohort"]


def test_attacker_is_rejected_then_revoked_by_the_contract(chain_run):
    rounds = {r["round"]: r for r in read_rounds(chain_run)}
    attacker = 1  # attack seed 0, 7 nodes (same draw as tests/test_federated.py)

    assert attacker in rounds[1]["rejected"] and attacker not in rounds[1]["accepted"]
    assert attacker in rounds[2]["rejected"]
    assert attacker not in rounds[3]["cohort"]  # 2 rejections = revoked on chain
    assert rows(chain_run, "round", "poisoned_accepted")["value"].sum() == 0


def test_audit_passes_on_the_untouched_run(chain_run):
    report = audit_run(chain_run)

    assert report.ok, "\n".join(report.lines())
    assert [r.server_round for r in report.rounds] == [0, 1, 2, 3]
    assert report.lines()[-1].startswith("verdict: PASS (run complete, 3 of 3 rounds committed")
    assert "data digests (v2) recomputed from synthetic" in report.rounds[0].line()


def _rewrite_blob(path, change):
    with np.load(path) as npz:
        arrays = [npz[f"arr_{i}"].copy() for i in range(len(npz.files))]
    change(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, *arrays)


def test_audit_catches_a_tampered_update(copy_of):
    update = read_rounds(copy_of)[2]["updates"][0]["digest"]  # round 2, first update
    _rewrite_blob(copy_of / "blobs" / f"{update[2:]}.npz", lambda a: a[0].__iadd__(1e-3))

    report = audit_run(copy_of)

    assert not report.ok
    assert [r.server_round for r in report.rounds if not r.ok] == [2]
    assert "does not hash to its name" in report.rounds[2].line() or "hashes to" in report.rounds[2].line()


def test_audit_catches_a_tampered_global_model(copy_of):
    digest = read_rounds(copy_of)[1]["new_global_digest"]  # round 1's result, round 2's start
    _rewrite_blob(copy_of / "blobs" / f"{digest[2:]}.npz", lambda a: a[-1].__imul__(0.5))

    report = audit_run(copy_of)

    assert [r.server_round for r in report.rounds if not r.ok] == [1, 2]


def test_audit_catches_a_replaced_final_model(copy_of):
    _rewrite_blob(copy_of / "final_model.npz", lambda a: a[0].__isub__(1e-4))

    report = audit_run(copy_of)

    assert all(r.ok for r in report.rounds) and not report.final.ok
    assert "final_model.npz hashes to" in report.lines()[-2]


def test_audit_catches_a_manifest_claiming_another_rule(copy_of):
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["aggregator"]["name"] = "median"
    path.write_text(json.dumps(manifest))

    report = audit_run(copy_of)

    assert [r.server_round for r in report.rounds if not r.ok] == [1, 2, 3]
    assert "re-aggregation (median)" in report.rounds[1].line()


def test_audit_catches_a_manifest_with_another_registry(copy_of):
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["ledger"]["contract"] = "0x" + "12" * 20
    path.write_text(json.dumps(manifest))

    report = audit_run(copy_of)

    assert not report.ok and "differs from trail/chain.json" in report.rounds[0].line()


def test_audit_catches_an_edited_transaction(copy_of):
    path = copy_of / "trail" / "transactions.jsonl"
    lines = path.read_text().splitlines()
    position = next(i for i, line in enumerate(lines) if '"submit_update"' in line)
    tx = json.loads(lines[position])
    tx["raw"] = tx["raw"][:-70] + ("0" if tx["raw"][-70] != "0" else "1") + tx["raw"][-69:]  # one nibble of s
    lines[position] = json.dumps(tx)
    path.write_text("\n".join(lines) + "\n")

    report = audit_run(copy_of)

    assert not report.ok and not report.rounds[1].ok  # blamed on the round the transaction belongs to


def test_cli_audit_exits_nonzero_on_mismatch(copy_of, capsys):
    from bflsim.cli import main

    assert main(["audit", str(copy_of)]) == 0
    digest = read_rounds(copy_of)[3]["global_digest"]
    (copy_of / "blobs" / f"{digest[2:]}.npz").unlink()

    assert main(["audit", str(copy_of)]) == 1
    out = capsys.readouterr().out
    assert "round   3: MISMATCH" in out and "missing" in out and "verdict: FAIL" in out


# --- the server's checks before relaying: tests/test_ledger_session.py ---------------


def test_chain_failure_midway_stops_the_run_with_completed_rounds_kept(tmp_path):
    from bflsim.fl.simulation import run_federated
    from bflsim.ledger.anvil import AnvilNode

    require_anvil()
    with AnvilNode() as anvil:
        config = ledger_config(
            federation={"tamper_nodes": [], "rounds": 3},
            ledger={"backend": "rpc", "rpc_url": anvil.url, "max_rejections": 3},
        )

        def kill_after_round_one():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = list(tmp_path.glob("*/trail/rounds.jsonl"))
                if found and len(found[0].read_text().splitlines()) >= 2:  # round 0 (data) + round 1
                    anvil.stop()
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_after_round_one, daemon=True)
        watcher.start()
        with pytest.raises(LedgerError, match=anvil.url.replace(".", r"\.")):
            run_federated(config, tmp_path)
        watcher.join(timeout=5)
    run_dir = next(tmp_path.glob("*/manifest.json")).parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and anvil.url in manifest["error"]
    assert rows(run_dir, "test", "accuracy")["round"].tolist()[:2] == [0, 1]


@pytest.mark.parametrize(
    ("ledger", "fragment"),
    [
        ({"backend": "rpc"}, "needs ledger.rpc_url"),
        ({"backend": "embedded", "block_time": 2.0}, "ledger.block_time applies to the anvil backend"),
        ({"backend": "rpc", "rpc_url": "127.0.0.1:8545"}, "must start with http://"),
        ({"max_rejections": -1}, "ledger.max_rejections must be in"),
    ],
)
def test_bad_ledger_settings_name_the_key(ledger, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ledger_config(ledger=ledger)


def test_unreachable_rpc_endpoint_is_refused_before_ray_and_the_run_folder(tmp_path):
    from bflsim.config import ConfigError
    from bflsim.fl.simulation import run_federated

    config = ledger_config(ledger={"backend": "rpc", "rpc_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match=r"ledger.rpc_url = 'http://127\.0\.0\.1:9'.*cannot reach"):
        run_federated(config, tmp_path)
    assert not list(tmp_path.glob("*/manifest.json"))


def test_audit_recomputes_data_digests_and_catches_a_manifest_with_other_data(copy_of):
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["data"]["synthetic"]["seed"] += 1  # claims other traffic than was registered
    path.write_text(json.dumps(manifest))

    report = audit_run(copy_of)

    assert not report.rounds[0].ok
    assert "registered data digest does not match its partition of synthetic" in report.rounds[0].line()
    assert audit_run(copy_of, check_data=False).rounds[0].ok


def test_anvil_backend_run_is_audited_by_replay_on_a_fresh_anvil(tmp_path):
    from bflsim.fl.simulation import run_federated
    require_anvil()
    config = ledger_config(federation={"tamper_nodes": [], "rounds": 2}, ledger={"backend": "anvil"})

    run_dir = run_federated(config, tmp_path).path
    report = audit_run(run_dir)

    assert read_chain(run_dir)["chain_id"] == 31337 and read_chain(run_dir)["endpoint"].startswith("http://127.0.0.1:")
    assert report.ok, "\n".join(report.lines())
    assert "fresh anvil (chain 31337)" in report.chain
    with pytest.raises(OSError):  # the run's anvil was stopped with the run
        socket.create_connection(("127.0.0.1", int(read_chain(run_dir)["endpoint"].rsplit(":", 1)[1])), timeout=1)


def test_relabelled_rows_fail_verify_integrity_at_the_edge_node(monkeypatch):
    from bflsim import edge_node
    from bflsim.hashing import data_digest
    from bflsim.ledger import TxContext

    config = ledger_config(federation={"tamper_nodes": []})
    ctx = TxContext(chain_id=1, contract_address="0x" + "42" * 20, nonce=0)
    registered, _ = edge_node.register_data(config, 3, ctx, 1_700_000_000)
    x, y = edge_node.node_data(config, 3, 1)
    flipped = y.copy()
    flipped[: len(y) // 10 + 1] = 1 - flipped[: len(y) // 10 + 1]  # label flipping on a tenth of the rows
    assert edge_node.verify_integrity(config, 3, 1, registered, 1_700_000_000) == registered
    monkeypatch.setattr(edge_node, "node_data", lambda *args, **kwargs: (x, flipped))

    with pytest.raises(edge_node.DataIntegrityError, match="edge node 3, round 1: data digest .* differs from"):
        edge_node.verify_integrity(config, 3, 1, registered, 1_700_000_000)
    assert data_digest(x, y, 1, 3) != data_digest(x, flipped, 1, 3)


@pytest.mark.parametrize(("attack", "data_from_round"), [("label_flip", 2), ("backdoor", 0)])
def test_verify_integrity_catches_data_poisoned_after_registration_only(tmp_path, attack, data_from_round):
    from bflsim.fl.simulation import run_federated
    from bflsim.runfolder import read_run
    config = ledger_config(federation={"tamper_nodes": []},
                           attack={"name": attack, "num_malicious": 1, "data_from_round": data_from_round})
    poisoner = int(config.malicious_nodes(1)[0])

    run_dir = run_federated(config, tmp_path).path
    rounds = {r["round"]: r for r in read_rounds(run_dir)}
    flagged = rows(run_dir, "node", "integrity_failed")[["round", "node"]].values.tolist()
    report = audit_run(run_dir)

    assert poisoner in rounds[1]["candidates"]
    if data_from_round:  # registered clean, poisoned from round 2: caught there, excluded after
        assert flagged == [[2, poisoner]] and poisoner not in rounds[3]["cohort"]
    else:  # registered poisoned: VerifyIntegrity has nothing to catch
        assert flagged == [] and str(poisoner) not in read_run(run_dir).manifest.get("excluded_nodes", {})
    assert report.ok, "\n".join(report.lines())  # digests recomputed from node_data; the failure not framed
