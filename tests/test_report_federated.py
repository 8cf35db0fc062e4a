"""Federated report: Table 4, sweep summary and figures from small hand-made run folders."""

import json
import math

import pandas as pd
import pytest

from bflsim.config import parse_experiment
from bflsim.report import figures as plots
from bflsim.report import write_report
from bflsim.report.federated import (
    ROUND_METRICS,
    federated_runs,
    is_sweep,
    read_run_metrics,
    sweep_summary,
    table4,
    table4_columns,
    table4_markdown,
    write_federated_report,
)
from bflsim.report.runs import find_run_dirs
from bflsim.runfolder import RunFolder, read_manifest, read_run


def runs_of(dirs):
    return federated_runs(read_run(d) for d in dirs)


def fake_run(
    parent,
    *,
    aggregator="fedavg",
    attack="gaussian",
    num_malicious=None,
    fraction=None,
    num_nodes=10,
    accuracies=(0.5, 0.8, 0.9),
    received=None,
    accepted=None,
    weights=None,
    status="complete",
    seed=0,
    point=None,
    run_id=None,
    kind="federated",
    ledger=None,
):
    """A run folder with test rows for rounds 0..R and round / node rows for rounds 1..R."""
    rounds = len(accuracies) - 1
    config = {
        "name": "exp",
        "kind": kind,
        "data": {"dataset": "synthetic"},
        "models": {"names": ["cnn_lstm"]},
        "train": {"seed": seed},
        "federation": {"num_nodes": num_nodes, "rounds": rounds, "seed": seed},
        "attack": {"name": attack, "num_malicious": num_malicious, "fraction": fraction, "mode": "replace",
                   "sigma": 5.0, "seed": seed},
        "aggregator": {"name": aggregator},
        **({"ledger": {"backend": ledger}} if ledger else {}),
    }
    run = RunFolder.create(parent, parse_experiment(config))
    if run_id is not None:
        run.run_id = run_id
        run.write_manifest(run_id=run_id)
    if point is not None:
        run.write_manifest(point=point)
    received = received or [0] * rounds
    accepted = accepted or [0] * rounds
    weights = weights or [0.0] * rounds
    for r, accuracy in enumerate(accuracies):
        run.log({"accuracy": accuracy, "f1_macro": accuracy - 0.1, "fpr": 1 - accuracy, "elapsed_seconds": 10.0 * r},
                model="cnn_lstm", split="test", round=r)
        if r == 0:
            continue
        run.log({"updates_received": num_nodes, "failures": 0, "poisoned_received": received[r - 1],
                 "poisoned_accepted": accepted[r - 1], "poisoned_weight": weights[r - 1], "honest_rejected": 0},
                model="cnn_lstm", split="round", round=r)
        for node in range(2):  # node rows carry no test accuracy; they must not be read as such
            run.log({"selected": 1.0, "score": 0.0, "weight": 0.5, "malicious": 0.0},
                    model="cnn_lstm", split="node", round=r, node=node)
    if status == "running":
        return run.path
    run.finish(status=status, **({"wall_seconds": 12.5} if status == "complete" else {}))
    return run.path


def line_labels(fig):
    return [line.get_label() for line in fig.axes[0].get_lines()]


# --- describing runs -------------------------------------------------------------------


def test_federated_runs_counts_attackers_from_fraction_and_labels_points(tmp_path):
    named = fake_run(tmp_path / "a", aggregator="krum", fraction=0.3,
                     point={"name": "krum-30", "label": "Krum, 30% Gaussian", "overrides": {}})
    unnamed = fake_run(tmp_path / "b", aggregator="median", num_malicious=2)
    clean = fake_run(tmp_path / "c", attack="none", num_malicious=4)

    runs = runs_of([named, unnamed, clean])

    assert runs["num_malicious"].tolist() == [3, 2, 0]
    assert runs["attacker_fraction"].tolist() == pytest.approx([0.3, 0.2, 0.0])
    assert runs["label"].tolist() == ["Krum, 30% Gaussian", "Median, Gaussian 2/10", "FedAvg, no attack"]
    assert runs["point"].iloc[0] == "krum-30"
    assert runs[["rounds", "attack_params", "status"]].iloc[0].tolist() == [2, "mode=replace, mu=0.0, sigma=5.0", "complete"]
    # the defender's default: a fifth of the 10-node cohort, whatever the attack (3, 2 and 0 attackers)
    assert runs["assumed_malicious"].tolist() == [2, 2, 2]


def test_find_run_dirs_recurses_and_skips_centralized_runs(tmp_path):
    first = fake_run(tmp_path / "sweep" / "fedavg-f10")
    second = fake_run(tmp_path / "sweep" / "krum-f10" / "deeper")
    fake_run(tmp_path / "sweep" / "centralized", kind="centralized")

    found = find_run_dirs(tmp_path / "sweep")

    assert found == sorted([first, second])


def test_find_run_dirs_lists_runs_in_the_order_they_were_started(tmp_path):
    later = fake_run(tmp_path / "a_no_attack")
    earlier = fake_run(tmp_path / "b_under_attack")
    for path, started in ((later, "2026-01-01T10:00:05+00:00"), (earlier, "2026-01-01T10:00:01+00:00")):
        (path / "manifest.json").write_text(json.dumps({**read_manifest(path), "started": started}))

    found = find_run_dirs(tmp_path)

    assert found == [earlier, later]


def test_find_run_dirs_skips_runs_a_resumed_sweep_moved_aside(tmp_path):
    point = fake_run(tmp_path / "sweep" / "krum-f10")
    fake_run(tmp_path / "sweep" / "krum-f10.interrupted-20260101-120000", status="running")

    found = find_run_dirs(tmp_path / "sweep")
    everything = find_run_dirs(tmp_path / "sweep", include_interrupted=True)

    assert found == [point]
    assert len(everything) == 2


def test_federated_runs_refuses_a_centralized_run(tmp_path):
    central = fake_run(tmp_path, kind="centralized")

    with pytest.raises(ValueError, match="not a federated run"):
        runs_of([central])


# --- Table 4 -----------------------------------------------------------------------------


def test_table4_success_rate_final_and_best_accuracy_in_given_order(tmp_path):
    attacked = fake_run(tmp_path, aggregator="krum", num_malicious=3, accuracies=(0.3, 0.7, 0.95, 0.9),
                        received=[3, 3, 3], accepted=[1, 0, 2], weights=[0.1, 0.0, 0.2])
    clean = fake_run(tmp_path, attack="none", accuracies=(0.3, 0.6, 0.8))

    table = table4([attacked, clean])

    assert table["label"].tolist() == ["Krum, Gaussian 3/10", "FedAvg, no attack"]
    first = table.iloc[0]
    assert first["success_rate"] == pytest.approx(3 / 9)
    assert first["final_accuracy"] == pytest.approx(0.9)  # the last round, not the best
    assert first["best_accuracy"] == pytest.approx(0.95)
    assert first["final_fpr"] == pytest.approx(0.1)
    assert first["mean_poisoned_weight"] == pytest.approx(0.1)
    assert first["rounds_done"] == 3
    assert first["wall_seconds"] == 12.5
    assert math.isnan(table.iloc[1]["success_rate"])


def test_table4_markdown_shows_na_where_nothing_poisoned_was_received(tmp_path):
    attacked = fake_run(tmp_path, num_malicious=1, received=[1, 1], accepted=[1, 0])
    clean = fake_run(tmp_path, attack="none")

    text = table4_markdown(table4([attacked, clean]))
    rows = text.strip().splitlines()[2:]

    assert "| 50.0% |" in rows[0]
    assert "| n/a |" in rows[1]


def test_table4_pools_the_runs_of_one_scenario(tmp_path):
    point = {"name": "krum", "label": "Krum under attack", "overrides": {}}
    one = fake_run(tmp_path, seed=1, num_malicious=2, accuracies=(0.1, 0.8), received=[2], accepted=[2], point=point)
    two = fake_run(tmp_path, seed=2, num_malicious=2, accuracies=(0.1, 0.6), received=[2], accepted=[0], point=point)

    table = table4([one, two])

    assert len(table) == 1
    assert table.iloc[0]["n_runs"] == 2
    assert table.iloc[0]["final_accuracy"] == pytest.approx(0.7)
    assert table.iloc[0]["success_rate"] == pytest.approx(0.5)
    # 95% CI of the mean of 0.8 and 0.6: t(0.975, 1) = 12.7062 x s (0.1414) / sqrt(2)
    assert table.iloc[0]["final_accuracy_ci95"] == pytest.approx(1.27062, rel=1e-4)
    assert "| 0.7000 ± 1.2706 |" in table4_markdown(table)


def test_table4_puts_the_papers_value_beside_the_runs_of_its_setting_only(tmp_path):
    fifty = (0.5,) * 50 + (0.97,)
    clean = fake_run(tmp_path, attack="none", accuracies=fifty)
    attacked = fake_run(tmp_path, num_malicious=2, accuracies=fifty)
    shorter = fake_run(tmp_path, num_malicious=2, aggregator="krum", accuracies=(0.5, 0.9))

    table = table4([clean, attacked, shorter]).set_index("label")

    assert table["paper_accuracy"].tolist()[:2] == [0.9785, 0.7341]  # Table 4: 97.85%, 73.41%
    assert table["paper_success_rate"].tolist()[:2] == [0.0, 1.0]
    assert math.isnan(table["paper_accuracy"].iloc[2])  # 1 round, not the paper's 50
    shown = table4_markdown(table.reset_index())
    assert "| accuracy (Lenka et al.) |" in shown and "| 0.9785 |" in shown


def test_runs_with_the_same_id_in_different_folders_stay_apart(tmp_path):
    high = fake_run(tmp_path / "exp1", run_id="krum-f10", accuracies=(0.1, 0.9))
    low = fake_run(tmp_path / "exp2", run_id="krum-f10", accuracies=(0.1, 0.2),
                   point={"name": "krum-f10", "label": "other", "overrides": {}})

    table = table4([high, low])

    assert table["final_accuracy"].tolist() == pytest.approx([0.9, 0.2])


def test_one_scenario_on_two_chains_is_two_lines_and_two_manifests_not_two_seeds(tmp_path):
    point = {"name": "secured", "label": "Secured", "overrides": {}}
    dirs = [fake_run(tmp_path / chain, aggregator="krum", point=point, run_id="secured", ledger=chain,
                     accuracies=accuracies)
            for chain, accuracies in (("embedded", (0.1, 0.9)), ("anvil", (0.1, 0.7)))]

    write_report(dirs, tmp_path / "out")

    table = pd.read_csv(tmp_path / "out" / "table4.csv")
    assert table["label"].tolist() == ["Secured (embedded)", "Secured (anvil)"]
    rows = pd.read_csv(tmp_path / "out" / "metrics.csv")
    finals = rows[(rows["metric"] == "accuracy") & (rows["round"] == 1)].set_index("label")["value"]
    assert finals.to_dict() == pytest.approx({"Secured (embedded)": 0.9, "Secured (anvil)": 0.7})
    manifests = sorted(p.name for p in (tmp_path / "out" / "manifests").iterdir())
    assert len(manifests) == 2 and [m.split("-")[0] for m in manifests] == ["anvil", "embedded"]


# --- sweeps ------------------------------------------------------------------------------


def sweep_runs(root):
    """Krum at 0/10/20 % over three seeds; FedAvg at 0/10/20 % with one seed each, plus a
    stopped Krum run at 20 % with a low accuracy that must be left out."""
    dirs = []
    krum = {0.0: (0.95, 0.93, 0.94), 0.1: (0.92, 0.90, 0.91), 0.2: (0.80, 0.90, 0.85)}
    for fraction, finals in krum.items():
        for seed, final in enumerate(finals):
            malicious = round(10 * fraction)
            dirs.append(fake_run(root / f"krum-f{fraction}-s{seed}", aggregator="krum", fraction=fraction,
                                 seed=seed, accuracies=(0.2, final), received=[malicious], accepted=[seed % 2]))
    for fraction, final in {0.0: 0.95, 0.1: 0.6, 0.2: 0.3}.items():
        dirs.append(fake_run(root / f"fedavg-f{fraction}", fraction=fraction, accuracies=(0.2, final),
                             received=[round(10 * fraction)], accepted=[round(10 * fraction)]))
    dirs.append(fake_run(root / "krum-f0.2-stopped", aggregator="krum", fraction=0.2, seed=9,
                         accuracies=(0.2, 0.05), status="stopped"))
    return dirs


def test_sweep_summary_mean_std_min_max_over_complete_runs(tmp_path):
    dirs = sweep_runs(tmp_path)

    summary = sweep_summary(dirs).set_index(["aggregator", "attacker_fraction"])
    cell = summary.loc[("krum", 0.2)]

    assert cell["n_seeds"] == 3
    assert cell["n_incomplete"] == 1
    assert cell["accuracy_mean"] == pytest.approx(0.85)
    assert cell["accuracy_std"] == pytest.approx(0.05)  # sample std (ddof = 1) over seeds
    assert (cell["accuracy_min"], cell["accuracy_max"]) == pytest.approx((0.80, 0.90))
    assert cell["success_rate_mean"] == pytest.approx(1 / 6)  # per seed 0/2, 1/2, 0/2; mean over seeds
    assert summary.loc[("fedavg", 0.1), "success_rate_mean"] == pytest.approx(1.0)
    assert summary.loc[("krum", 0.0), "n_incomplete"] == 0


def test_sweep_summary_reports_which_runs_were_left_out(tmp_path):
    dirs = sweep_runs(tmp_path)
    running = fake_run(tmp_path / "median-running", aggregator="median", fraction=0.1, status="running")

    summary = sweep_summary([*dirs, running])

    assert sorted(summary.attrs["incomplete"]) == sorted([str(dirs[-1]), str(running)])
    only_running = summary[summary["aggregator"] == "median"].iloc[0]
    assert only_running["n_seeds"] == 0 and math.isnan(only_running["accuracy_mean"])


def test_a_sweep_is_told_apart_from_scenarios(tmp_path):
    sweep = runs_of(sweep_runs(tmp_path / "sweep"))
    scenarios = runs_of([fake_run(tmp_path / "t4", attack="none"),
                                fake_run(tmp_path / "t4", num_malicious=3),
                                fake_run(tmp_path / "t4", aggregator="krum", num_malicious=3)])

    assert is_sweep(sweep) and not is_sweep(scenarios)


# --- figures -----------------------------------------------------------------------------


def test_accuracy_per_round_draws_one_line_per_scenario(tmp_path):
    runs = runs_of([fake_run(tmp_path, attack="none"), fake_run(tmp_path, num_malicious=3),
                           fake_run(tmp_path, aggregator="krum", num_malicious=3)])

    fig = plots.accuracy_per_round(read_run_metrics(runs))
    labels = line_labels(fig)
    x, y = fig.axes[0].get_lines()[0].get_data()
    paths = plots.save_figure(fig, tmp_path / "fig" / "figure2")

    assert labels == ["FedAvg, no attack", "FedAvg, Gaussian 3/10", "Krum, Gaussian 3/10"]
    assert list(x) == [0, 1, 2] and list(y) == pytest.approx([0.5, 0.8, 0.9])
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


def test_accuracy_vs_attackers_draws_one_line_per_aggregator_with_a_band(tmp_path):
    summary = sweep_summary(sweep_runs(tmp_path))

    fig = plots.accuracy_vs_attackers(summary, labels={"krum": "Krum", "fedavg": "FedAvg"})
    ax = fig.axes[0]
    krum = ax.get_lines()[0]

    assert line_labels(fig) == ["Krum", "FedAvg"]
    assert list(krum.get_xdata()) == pytest.approx([0, 10, 20])
    assert list(krum.get_ydata()) == pytest.approx([0.94, 0.91, 0.85])
    [band] = ax.collections  # Krum's 95% CI over 3 seeds; FedAvg's single seed has none
    top = band.get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(0.85 + 4.302653 * 0.05 / 3**0.5, rel=1e-5)  # at 20 %: 0.80, 0.90, 0.85
    assert "95% CI, 3 seeds" in ax.get_ylabel()
    plots.save_figure(fig, tmp_path / "sweep")


# --- the whole report --------------------------------------------------------------------


def test_report_of_scenarios_writes_table4_and_figure2(tmp_path):
    dirs = [fake_run(tmp_path / "runs", attack="none"), fake_run(tmp_path / "runs", num_malicious=3)]

    written = write_federated_report(dirs, tmp_path / "out")

    assert sorted(p.name for p in written) == [
        "figure2.pdf", "figure2.png", "metrics.csv", "runs.csv", "table4.csv", "table4.md", "table4.tex"]
    rows = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert set(rows["label"]) == {"FedAvg, no attack", "FedAvg, Gaussian 3/10"} and "node" not in rows
    assert len(rows[(rows["split"] == "test") & (rows["metric"] == "accuracy")]) == 6  # 2 runs x rounds 0..2
    before = (tmp_path / "out" / "figure2.png").read_bytes()
    (tmp_path / "out" / "figure2.png").unlink()
    from bflsim.report.redraw import redraw

    redrawn, _ = redraw(tmp_path / "out")
    assert tmp_path / "out" / "figure2.png" in redrawn
    assert (tmp_path / "out" / "figure2.png").read_bytes() == before  # the same figure from the kept rows
    tex = (tmp_path / "out" / "table4.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert all(p.stat().st_size > 0 for p in written)
    assert len(pd.read_csv(tmp_path / "out" / "table4.csv")) == 2


def test_report_of_a_sweep_writes_the_summary_and_its_figure(tmp_path):
    dirs = sweep_runs(tmp_path / "runs")

    written = write_federated_report(find_run_dirs(tmp_path / "runs"), tmp_path / "out")

    assert sorted(p.name for p in written) == [
        "figure_sweep.pdf", "figure_sweep.png", "runs.csv", "sweep_summary.csv", "sweep_summary.md"]
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == len(dirs)
    assert "1 incomplete run(s) left out" in (tmp_path / "out" / "sweep_summary.md").read_text()


def test_a_per_round_metric_reaches_table4_through_one_catalogue_line(tmp_path, monkeypatch):
    from bflsim.report.federated import Summary

    run = fake_run(tmp_path, num_malicious=1, received=[1, 1], accepted=[0, 1])
    monkeypatch.setitem(ROUND_METRICS, "honest_rejected",
                        Summary("honest_rejected_total", "sum", "sum", "honest rejected", "{:.0f}"))

    table = table4([run])

    assert "honest_rejected_total" in table4_columns() and table.iloc[0]["honest_rejected_total"] == 0
    assert "| honest rejected |" in table4_markdown(table)


def test_report_figure_choice_overrides_the_layout_heuristic(tmp_path):
    dirs = [fake_run(tmp_path / "runs", attack="none"), fake_run(tmp_path / "runs", num_malicious=3)]

    as_sweep = write_report(dirs, tmp_path / "sweep", figure="sweep")

    assert {"sweep_summary.csv", "figure_sweep.png"} <= {p.name for p in as_sweep}
    with pytest.raises(ValueError, match="--figure 'bogus' is not one of"):
        write_report(dirs, tmp_path / "x", figure="bogus")


def test_the_confusion_figure_draws_the_last_evaluated_round(tmp_path, monkeypatch):
    import numpy as np

    path = fake_run(tmp_path / "runs", num_malicious=1, status="running")
    run = RunFolder(path, path.name, read_manifest(path))  # the run's writer, still running
    run.log_confusion(np.array([[9, 1], [5, 5]]), ("normal", "attack"), model="cnn_lstm", split="test", round=1)
    run.log_confusion(np.array([[10, 0], [1, 9]]), ("normal", "attack"), model="cnn_lstm", split="test", round=2)
    drawn = []
    real = plots.confusion_figure
    monkeypatch.setattr(plots, "confusion_figure", lambda rows, *a, **k: drawn.append(rows) or real(rows, *a, **k))

    written = write_report([path], tmp_path / "out", figure="confusion")
    figure = [p for p in written if p.suffix == ".png"]

    assert [p.name for p in figure] == [f"figure3_{path.name}.png"]
    assert figure[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn[0]["round"].unique().tolist() == [2] and drawn[0]["count"].tolist() == [10, 0, 1, 9]
    bare = fake_run(tmp_path / "bare", num_malicious=1)  # no confusion rows at all
    with pytest.raises(ValueError, match="no per-round confusion counts"):
        write_report([bare], tmp_path / "bare_out", figure="confusion")
