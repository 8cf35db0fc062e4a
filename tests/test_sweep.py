"""Plans: scenarios and grids expand to validated runs; sweeps skip complete points and resume."""

import json

import pytest

from bflsim.cli import main
from bflsim.config import ConfigError
from bflsim.plans import load_plan, plan_from_dict
from bflsim.runner import run_plan

BASE = {
    "experiment": {"name": "grid", "kind": "centralized"},
    "data": {"dataset": "synthetic", "synthetic": {"num_samples": 800}},
    "models": {"names": ["decision_tree"]},
}


def test_grid_is_a_product_and_zip_is_one_axis():
    raw = {**BASE, "sweep": {"grid": {"data.seed": [1, 2], "data.scaler": ["minmax", "standard"]},
                             "zip": {"train.seed": [5, 6, 7], "data.synthetic.seed": [8, 9, 10]}}}

    plan = plan_from_dict(raw)

    assert len(plan.points) == 2 * 2 * 3
    point, config = plan.points[-1]
    assert point.name == "seed-2_scaler-standard_seed-7_seed-10"
    assert (config.data.seed, config.data.scaler, config.train.seed, config.data.synthetic.seed) == (2, "standard", 7, 10)


def test_scenarios_keep_their_order_names_and_labels(experiments_dir):
    plan = load_plan(experiments_dir / "table4_poisoning.toml")

    names = [p.name for p, _ in plan.points]
    configs = [c for _, c in plan.points]
    rows = ["standard_fl_no_attack", "standard_fl_under_attack", "blockchain_secured"]
    assert names == rows + [f"{r}_seed-{s}" for s in (43, 44) for r in rows]
    assert [c.num_malicious for c in configs] == [0, 2, 2] * 3
    assert [c.aggregator.name for c in configs] == ["fedavg", "fedavg", "krum"] * 3
    assert [c.ledger.backend for c in configs] == ["none", "none", "embedded"] * 3
    assert [(c.train.seed, c.federation.seed, c.attack.seed) for c in configs[::3]] == [(42, 42, 0), (43, 43, 1), (44, 44, 2)]
    assert {c.data.seed for c in configs} == {42}  # one split; the seeds change training only
    assert all(c.federation.rounds == 50 and c.federation.num_nodes == 10 for c in configs)


def test_a_grid_axis_may_set_whole_tables():
    raw = {**BASE, "experiment": {"name": "g", "kind": "federated"}, "models": {"names": ["dnn"]},
           "federation": {"num_nodes": 10}, "attack": {"name": "gaussian", "num_malicious": 1},
           "sweep": {"grid": {"aggregator": [{"name": "krum"},
                                             {"name": "trimmed_mean", "params": {"trim_fraction": 0.3}}]}}}

    plan = plan_from_dict(raw)

    assert [p.name for p, _ in plan.points] == ["aggregator-krum", "aggregator-trimmed_mean-trim-fraction-0.3"]
    assert [c.rule.label for _, c in plan.points] == ["Krum", "Trimmed mean"]
    assert plan.points[1][1].rule.trim_fraction == 0.3


def test_several_grids_run_one_after_the_other():
    raw = {**BASE, "experiment": {"name": "g", "kind": "federated"}, "models": {"names": ["dnn"]},
           "federation": {"num_nodes": 10},
           "sweep": [{"grid": {"attack": [{"name": "gaussian"}, {"name": "sign_flip"}], "attack.fraction": [0.1, 0.3]}},
                     {"grid": {"attack": [{"name": "none"}]}}]}

    plan = plan_from_dict(raw)

    assert [p.name for p, _ in plan.points] == [
        "attack-gaussian_fraction-0.1", "attack-gaussian_fraction-0.3", "attack-sign_flip_fraction-0.1",
        "attack-sign_flip_fraction-0.3", "attack-none"]
    assert [c.num_malicious for _, c in plan.points] == [1, 3, 1, 3, 0]
    raw["sweep"][1] = {"grid": {"attack": [{"name": "gaussian"}]}, "zip": {"train.seed": [1], "data.seed": [1, 2]}}
    with pytest.raises(ConfigError, match=r"sweep\[1\].zip lists differ in length"):
        plan_from_dict(raw)
    raw["sweep"][1] = {"grid": {"attack": [{"name": "gaussian"}], "attack.fraction": [0.1]}}
    with pytest.raises(ConfigError, match="point names repeat"):
        plan_from_dict(raw)


def test_sweep_file_has_every_aggregator_fraction_and_seed(experiments_dir):
    plan = load_plan(experiments_dir / "sweep_attackers.toml")

    keys = {(c.aggregator.name, c.attack.fraction, c.train.seed) for _, c in plan.points}
    assert len(keys) == 75
    assert {c.num_malicious for _, c in plan.points} == {0, 2, 4, 6, 8}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"sweep": {"grid": {"data.seed": []}}}, "non-empty list"),
        ({"sweep": {"zip": {"train.seed": [1, 2], "data.seed": [1]}}}, "differ in length"),
        ({"sweep": {"grid": {"data.sede": [1]}}}, "point 'sede-1'.*unknown key 'data.sede'"),
        ({"scenarios": [{"name": "a", "set": {"models.names": ["svm"]}}]}, "point 'a'.*unknown model 'svm'"),
        ({"scenarios": [{"name": "a"}, {"name": "a"}]}, "point names repeat"),
        ({"scenarios": [{"name": "a"}], "sweep": {}}, "not both"),
    ],
)
def test_bad_plans_fail_before_any_run_naming_the_point(extra, fragment):
    with pytest.raises(ConfigError, match=fragment):
        plan_from_dict({**BASE, **extra})


def test_sweep_skips_complete_points_and_reruns_interrupted_ones(tmp_path):
    plan = plan_from_dict({**BASE, "sweep": {"grid": {"data.seed": [1, 2]}}})
    first = run_plan(plan, tmp_path, None, quiet=True)
    stamps = [(d / "manifest.json").stat().st_mtime_ns for d in first]
    interrupted = first[1] / "manifest.json"
    manifest = json.loads(interrupted.read_text())
    killed = {**manifest["writer"], "pid": 2**22 + 1}  # SIGKILLed: still `running`, its process gone
    interrupted.write_text(json.dumps({**manifest, "status": "running", "writer": killed}))

    second = run_plan(plan, tmp_path, None, quiet=True)

    assert [d.name for d in second] == ["seed-1", "seed-2"]
    assert (second[0] / "manifest.json").stat().st_mtime_ns == stamps[0]  # skipped
    assert json.loads((second[1] / "manifest.json").read_text())["status"] == "complete"
    kept = list((tmp_path / "grid").glob("seed-2.interrupted-*"))
    assert len(kept) == 1 and (kept[0] / "metrics.csv").is_file()
    assert json.loads((second[0] / "manifest.json").read_text())["point"]["overrides"] == {"data.seed": 1}


def test_a_point_run_with_another_config_is_moved_aside_and_run_again(tmp_path, capsys):
    experiment = tmp_path / "grid.toml"
    experiment.write_text(
        '[experiment]\nname = "grid"\nkind = "centralized"\n[data]\ndataset = "synthetic"\n'
        '[data.synthetic]\nnum_samples = 800\n[models]\nnames = ["decision_tree"]\n'
        '[sweep]\ngrid = { "data.seed" = [1, 2] }\n'
    )
    out = tmp_path / "runs"
    assert main(["sweep", str(experiment), "--out", str(out), "-q"]) == 0
    first = json.loads((out / "grid" / "seed-1" / "manifest.json").read_text())
    capsys.readouterr()

    assert main(["sweep", str(experiment), "--out", str(out), "--set", "data.synthetic.num_samples=600"]) == 0

    err = capsys.readouterr().err
    again = json.loads((out / "grid" / "seed-1" / "manifest.json").read_text())
    assert again["config"]["data"]["synthetic"]["num_samples"] == 600 and again["status"] == "complete"
    assert again["config_digest"] != first["config_digest"]
    assert f"config changed (stored {first['config_digest'][:10]}, requested {again['config_digest'][:10]}: " \
           "data.synthetic.num_samples differs); kept as seed-1.interrupted-" in err
    kept = sorted((out / "grid").glob("seed-*.interrupted-*"))
    assert len(kept) == 2 and json.loads((kept[0] / "manifest.json").read_text())["writer"] == first["writer"]


def test_cli_reports_a_bad_experiment_file_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation]\nnum_nodes = 0\n")

    code = main(["run", str(bad), "--out", str(tmp_path)])

    assert code == 2
    assert "federation.num_nodes must be >= 1" in capsys.readouterr().err


def test_only_names_an_existing_point(experiments_dir, capsys):
    from bflsim.cli import main

    assert main(["run", str(experiments_dir / "table4_poisoning.toml"), "--only", "krum"]) == 2
    err = capsys.readouterr().err
    assert "--only 'krum'" in err and "'blockchain_secured'" in err
