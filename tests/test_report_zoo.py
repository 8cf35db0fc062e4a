"""The zoo report: every run against its no-attack baseline (same defence, partition, seeds),
cells summed over seeds, detection pooled over rounds, heatmaps written."""

import pandas as pd
import pytest

from bflsim.config import parse_experiment
from bflsim.report.federated import federated_runs, is_zoo
from bflsim.report.zoo import strongest_attacks, write_zoo_report, zoo_runs, zoo_summary
from bflsim.runfolder import RunFolder, read_run


def zoo_run(parent, *, attack, aggregator, seed, final, asr=None, flagged=(0, 0), received=0, partition="iid",
            params=None):
    config = {
        "name": "zoo", "kind": "federated",
        "data": {"dataset": "synthetic"}, "models": {"names": ["dnn"]},
        "train": {"seed": seed}, "federation": {"num_nodes": 10, "rounds": 2, "seed": seed, "partition": partition},
        "attack": {"name": attack, "num_malicious": 2 if attack != "none" else None, "seed": seed,
                   "threat_model": "adaptive", **({"params": params} if params else {})},
        "aggregator": {"name": aggregator},
    }
    run = RunFolder.create(parent, parse_experiment(config))
    for r, accuracy in enumerate([0.5, 0.9, final]):
        test = {"accuracy": accuracy, "f1_macro": accuracy, "fpr": 0.0, "elapsed_seconds": float(r)}
        if asr is not None:
            test["attack_success_rate"] = asr if r == 2 else 0.0
        run.log(test, model="dnn", split="test", round=r)
        if r:
            run.log({"poisoned_received": received, "poisoned_accepted": 0, "poisoned_weight": 0.1,
                     "poisoned_flagged": flagged[0], "honest_flagged": flagged[1]},
                    model="dnn", split="round", round=r)
    run.finish("complete")
    return run.path


@pytest.fixture
def zoo(tmp_path):
    dirs = []
    for seed in (1, 2):
        for aggregator in ("fedavg", "krum"):
            dirs.append(zoo_run(tmp_path / "a", attack="none", aggregator=aggregator, seed=seed, final=0.97))
        dirs.append(zoo_run(tmp_path / "b", attack="ipm", aggregator="fedavg", seed=seed, final=0.90 - 0.02 * seed,
                            received=2))
        dirs.append(zoo_run(tmp_path / "b", attack="ipm", aggregator="krum", seed=seed, final=0.96, received=2,
                            flagged=(2, 1)))
        dirs.append(zoo_run(tmp_path / "c", attack="backdoor", aggregator="fedavg", seed=seed, final=0.96, asr=0.8,
                            received=2))
        dirs.append(zoo_run(tmp_path / "c", attack="ipm", aggregator="fedavg", seed=seed, final=0.10, received=2,
                            params={"epsilon": 5.0}))
    return dirs


def test_each_run_is_measured_against_the_baseline_of_its_defence_and_seeds(zoo):
    assert is_zoo(federated_runs(read_run(d) for d in zoo))
    table = zoo_runs(zoo).set_index(["attack", "defence", "train_seed"])

    assert table.loc[("ipm", "fedavg", 1), "accuracy_drop"] == pytest.approx(0.97 - 0.88)
    assert table.loc[("ipm", "fedavg", 2), "accuracy_drop"] == pytest.approx(0.97 - 0.86)
    assert table.loc[("ipm (epsilon=5.0)", "fedavg", 1), "accuracy_drop"] == pytest.approx(0.87)
    assert table.loc[("backdoor", "fedavg", 1), "attack_success_rate"] == pytest.approx(0.8)
    assert pd.isna(table.loc[("ipm", "fedavg", 1), "attack_success_rate"])  # untargeted: no ASR
    # Krum flagged 2 attackers and 1 honest node in each of its 2 rounds: pooled over rounds
    assert table.loc[("ipm", "krum", 1), "detection_precision"] == pytest.approx(2 / 3)
    assert table.loc[("ipm", "krum", 1), "detection_recall"] == pytest.approx(1.0)
    assert pd.isna(table.loc[("ipm", "fedavg", 1), "detection_precision"])  # flagged nobody


def test_cells_are_summed_over_seeds_and_the_strongest_attack_per_defence_found(zoo, tmp_path):
    summary = zoo_summary(zoo_runs(zoo)).set_index(["attack", "defence"])

    cell = summary.loc[("ipm", "fedavg")]
    assert cell["n_seeds"] == 2
    assert cell["accuracy_drop_mean"] == pytest.approx(0.10)
    assert cell["accuracy_drop_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert ("none", "fedavg") not in summary.index  # baselines are no cells of the map
    assert strongest_attacks(summary.reset_index()).to_dict() == {"fedavg": "ipm (epsilon=5.0)", "krum": "ipm"}

    written = write_zoo_report(zoo, tmp_path / "out")
    names = {p.name for p in written}
    assert {"zoo_summary.csv", "zoo_summary.md", "heatmap_accuracy_drop_iid_20pct.png", "heatmap_attack_success_iid_20pct.pdf",
            "figure_strongest.png"} <= names
    text = (tmp_path / "out" / "zoo_summary.md").read_text()
    assert "| IPM (epsilon=5.0) | +0.870 ± 0.000 |" in text
