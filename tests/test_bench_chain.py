"""The chain benchmarks on small inputs: gas within budget, finality records on the embedded
chain and on anvil (automine and a short block time), and the CSV's rows.

Timings are only checked to be positive: the machines are shared. The anvil tests start
their own nodes on 127.0.0.1 and check that they are gone afterwards.
"""

import csv
import os

import numpy as np
import pytest
from conftest import require_anvil

from bflsim.bench import BENCH_COLUMNS, write_bench_csv
from bflsim.bench.chain import (
    GAS_BUDGET_SUBMIT_UPDATE,
    PACKAGES,
    chain_rows,
    cnn_lstm_shapes,
    cnn_lstm_weights,
    measure_gas,
    time_aggregation,
    time_block_finality,
    time_data_registration,
    time_finality,
    time_update_registration,
)
from bflsim.config import ModelsConfig
from bflsim.ledger import AnvilNode, EmbeddedLedger, RpcLedger
from bflsim.ledger.anvil import find_anvil

NSLKDD_FEATURES, NSLKDD_CLASSES = 122, 5


# --- registration ------------------------------------------------------------------------


def test_data_registration_times_each_step_per_repeat():
    x = np.random.default_rng(0).standard_normal((200, 8), dtype=np.float32)

    seconds = time_data_registration(x, repeats=3)

    assert sorted(seconds) == ["hash", "sign", "total"]
    assert all(len(values) == 3 and min(values) > 0 for values in seconds.values())
    assert np.allclose(seconds["total"], np.add(seconds["hash"], seconds["sign"]))


def test_cnn_lstm_shapes_match_the_keras_model():
    from bflsim.models import MODELS

    build = MODELS["cnn_lstm"].build
    model = build(NSLKDD_FEATURES, NSLKDD_CLASSES, ModelsConfig(), 1e-3, seed=0)

    keras_shapes = [w.shape for w in model.get_weights()]
    assert cnn_lstm_shapes(NSLKDD_FEATURES, NSLKDD_CLASSES) == keras_shapes
    weights = cnn_lstm_weights(NSLKDD_FEATURES, NSLKDD_CLASSES)
    assert sum(w.size for w in weights) == model.count_params() == 33_605


def test_update_registration_on_cnn_lstm_weights():
    weights = cnn_lstm_weights(NSLKDD_FEATURES, NSLKDD_CLASSES)

    seconds = time_update_registration(weights, num_samples=100, repeats=2)

    assert all(w.dtype == np.float32 for w in weights)
    assert all(len(values) == 2 and min(values) > 0 for values in seconds.values())


# --- gas and finality on the embedded chain ---------------------------------------------


def test_gas_per_operation_on_embedded_chain():
    ledger = EmbeddedLedger()

    gas = measure_gas(ledger, num_nodes=4)

    assert all(r.status == 1 for r in ledger.records)
    assert len(gas["submit_update"]) == 4
    assert 21_000 < max(gas["submit_update"]) <= GAS_BUDGET_SUBMIT_UPDATE
    assert gas["register_data_second"][0] < gas["register_data_first"][0]  # overwrite < first write
    assert gas["commit_round_2_rejected"][0] > gas["commit_round_all_accepted"][0]
    assert gas["deploy"][0] > gas["register_nodes"][0] > 21_000
    assert [r.sender for r in ledger.records if r.kind == "commit_round"] == [ledger.aggregator] * 2
    assert all(21_000 < gas[op][0] < 100_000 for op in ("set_aggregator", "transfer_ownership", "accept_ownership"))


def test_gas_needs_a_node_to_accept():
    with pytest.raises(ValueError, match="num_nodes >= 3"):
        measure_gas(EmbeddedLedger(), num_nodes=2)


def test_finality_on_embedded_chain():
    records = time_finality(EmbeddedLedger(), num_nodes=3, rounds=2)

    assert len(records) == 6
    assert {(r.kind, r.status) for r in records} == {("submit_update", 1)}
    assert min(r.seconds for r in records) > 0
    assert len({r.block for r in records}) == 6  # automine: one block per transaction


def test_aggregation_timings():
    seconds = time_aggregation(num_nodes=7, dim=50, repeats=2)

    assert sorted(seconds) == ["fedavg", "krum", "multikrum"]
    assert all(len(values) == 2 and min(values) > 0 for values in seconds.values())


# --- anvil -------------------------------------------------------------------------------


def test_submit_update_gas_is_the_same_on_anvil():
    require_anvil()
    embedded = time_finality(EmbeddedLedger(), num_nodes=3, rounds=1)

    with AnvilNode() as node:
        on_anvil = time_finality(RpcLedger(node.url), num_nodes=3, rounds=1)

    assert not node.running
    assert [r.gas_used for r in on_anvil] == [r.gas_used for r in embedded]


def test_block_time_finality_on_anvil_stops_the_node():
    require_anvil()

    with AnvilNode(block_time=1) as node:
        single, together = time_block_finality(RpcLedger(node.url), num_nodes=2, singles=1,
                                               block_time=1)

    assert not node.running
    assert [r.status for r in together + single] == [1, 1, 1]
    assert len({r.block for r in together}) == 1  # one round, one block
    assert all(0 < r.seconds < 5 for r in together + single)


def test_anvil_is_stopped_when_the_benchmark_fails(monkeypatch):
    require_anvil()
    import bflsim.bench.chain
    import bflsim.ledger.anvil

    started = []

    class RecordedAnvil(bflsim.ledger.anvil.AnvilNode):
        def start(self):
            started.append(self)
            return super().start()

    def fail_on_anvil(ledger, num_nodes, rounds):
        if ledger.endpoint.startswith("http"):  # anvil, not the embedded chain
            raise RuntimeError("lost the node")
        return real_time_finality(ledger, num_nodes, rounds)

    real_time_finality = bflsim.bench.chain.time_finality
    monkeypatch.setattr(bflsim.ledger.anvil, "AnvilNode", RecordedAnvil)
    monkeypatch.setattr(bflsim.bench.chain, "time_finality", fail_on_anvil)
    x = np.zeros((4, 3), dtype=np.float32)

    with pytest.raises(RuntimeError, match="lost the node"):
        chain_rows(x, 2, repeats=1, num_nodes=3, anvil=True)

    assert len(started) == 1 and not started[0].running


# --- rows and CSV ------------------------------------------------------------------------


def test_chain_csv_has_every_benchmark(tmp_path):
    anvil = find_anvil() is not None or os.environ.get("BFLSIM_REQUIRE_NODE") == "1"
    x = np.random.default_rng(1).standard_normal((50, 6), dtype=np.float32)

    rows = chain_rows(x, 3, repeats=1, num_nodes=3, anvil=anvil, block_time=1)
    path = write_bench_csv(tmp_path, "chain", rows, PACKAGES)

    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == BENCH_COLUMNS
    pairs = [(r["benchmark"], r["quantity"]) for r in table]
    expected = [
        *[(b, f"{q}_seconds_per_{unit}") for b, unit in
          (("data_registration", "batch"), ("update_registration", "update"))
          for q in ("hash_and_sign", "hash", "sign")],
        ("finality_embedded", "seconds_per_update_tx"),
        *([("finality_anvil_automine", "seconds_per_update_tx"),
           ("finality_anvil_block_time_1s", "seconds_per_update_tx"),
           ("finality_anvil_block_time_1s", "single_tx_seconds")] if anvil else []),
        ("aggregation", "krum_seconds"), ("aggregation", "multikrum_seconds"),
        ("aggregation", "fedavg_seconds"),
        *[("gas", q) for q in ("deploy", "register_nodes", "register_nodes_per_node",
                               "register_data_first", "register_data_second", "open_round",
                               "submit_update", "commit_round_all_accepted",
                               "commit_round_2_rejected", "set_aggregator",
                               "transfer_ownership", "accept_ownership")],
    ]
    assert pairs == expected
    assert len(set(pairs)) == len(pairs)
    by_pair = {(r["benchmark"], r["quantity"]): r for r in table}
    paper = {pair: row["paper_value"] for pair, row in by_pair.items() if row["paper_value"]}
    assert paper[("data_registration", "hash_and_sign_seconds_per_batch")] == "0.15"
    assert paper[("aggregation", "krum_seconds")] == "1.5"
    submit = by_pair[("gas", "submit_update")]
    assert 21_000 < float(submit["value"]) <= GAS_BUDGET_SUBMIT_UPDATE
    if anvil:
        assert "identical" in submit["note"]
        assert paper[("finality_anvil_block_time_1s", "seconds_per_update_tx")] == "3.8"
    assert all(float(r["value"]) > 0 for r in table)
    assert (tmp_path / "chain.meta.txt").read_text().startswith("measured ")


def test_the_scale_suite_keeps_a_cohort_of_one_percent_and_at_least_ten():
    from bflsim.bench.scale import cohort_fraction

    assert [round(cohort_fraction(n) * n) for n in (10, 100, 1000, 10000, 50000)] == [10, 10, 10, 100, 500]


def test_the_scale_suite_refuses_an_unknown_ledger_before_running(capsys):
    from bflsim.cli import main

    assert main(["bench", "--suite", "scale", "--ledgers", "none,chain", "--out", "/nonexistent"]) == 2
    assert "--ledgers 'chain': expected some of ['batched', 'none', 'per-node']" in capsys.readouterr().err


def _point(nodes, ledger, gas, started):
    return {"nodes": nodes, "ledger": ledger, "cohort": 10, "rounds": 3, "setup_seconds": 1.0, "round_seconds": 0.5,
            "peak_pss_bytes": 2**30, "wall_seconds": 9.0, "gas_per_round": gas, "audit_seconds": 2.0,
            "audit_exit": 0, "final_accuracy": 0.9, "run_dir": "x", "started": started, "git_commit": "abc"}


@pytest.mark.parametrize("merge", [True, False])
def test_the_scale_suite_merges_new_points_into_earlier_ones_only_when_asked(tmp_path, monkeypatch, merge):
    import pandas as pd

    from bflsim.bench import scale

    earlier = [_point(100, "batched", 158_000, "old"), _point(10, "per-node", 557_000, "old"),
               _point(10, "batched", 158_000, "old")]
    pd.DataFrame(earlier).to_csv(tmp_path / "scale_points.csv", index=False)
    monkeypatch.setattr(scale, "measure_point",
                        lambda experiment, count, ledger, rounds, env, work: _point(count, ledger, 600_000, "new"))
    scale.run_scale_bench(tmp_path, nodes=[10], ledgers=["per-node", "none"], merge=merge)
    points = pd.read_csv(tmp_path / "scale_points.csv")
    got = list(zip(points["nodes"], points["ledger"], points["started"], strict=True))
    if merge:
        assert got == [(10, "none", "new"), (10, "per-node", "new"), (10, "batched", "old"), (100, "batched", "old")]
    else:
        assert got == [(10, "none", "new"), (10, "per-node", "new")]
    summary = pd.read_csv(tmp_path / "scale.csv")
    gas = dict(zip(summary["quantity"], summary["value"], strict=False))
    assert gas["gas_per_round_per-node_10"] == 600_000
    assert ("gas_per_round_batched_100" in gas) is merge
