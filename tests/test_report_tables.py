"""Tables 3 and 5 over seeds: mean, 95% CI and the paper's numbers beside ours, in three formats."""

import numpy as np
import pandas as pd
import pytest

from bflsim.report.centralized import table3, table3_shown, table5, write_centralized_tables
from bflsim.report.tables import mean_ci_text, over_runs, to_latex

T_975_1 = 12.706205  # Student's t, 97.5th percentile, 1 degree of freedom


def metric_rows():
    rows = []
    for run, (accuracy, f1) in {"s1": (0.98, 0.97), "s2": (0.99, 0.99)}.items():
        for metric, value in {"accuracy": accuracy, "f1_weighted": f1, "fpr": 0.01}.items():
            rows.append({"run_id": run, "model": "cnn_lstm", "split": "test", "epoch": np.nan, "class_name": np.nan,
                         "metric": metric, "value": value, "dataset": "cic-ids2017", "protocol": "stratified 70/15/15"})
        for cls, recall in {"Normal": 0.99, "U2R": 0.5 if run == "s1" else 0.7}.items():
            for metric, value in {"precision": 0.9, "recall": recall, "f1": 0.8, "support": 8}.items():
                rows.append({"run_id": run, "model": "cnn_lstm", "split": "test", "epoch": np.nan, "class_name": cls,
                             "metric": metric, "value": value, "dataset": "nsl-kdd", "protocol": "stratified 70/15/15"})
    return pd.DataFrame(rows)


def test_table3_is_the_mean_and_95_percent_ci_over_seeds_beside_the_papers_row():
    table = table3(metric_rows())

    [row] = table.to_dict("records")
    assert row["n_runs"] == 2 and row["accuracy"] == pytest.approx(0.985)
    assert row["accuracy_ci95"] == pytest.approx(T_975_1 * 0.005, rel=1e-5)  # s = 0.00707, /sqrt(2)
    assert (row["paper_accuracy"], row["paper_f1_weighted"], row["paper_fpr"]) == (0.9892, 0.989, 0.012)
    shown = table3_shown(table)
    assert shown.loc[0, "accuracy"] == "0.9850 ± 0.0635" and shown.loc[0, "accuracy (Lenka et al.)"] == 0.9892


def test_table5_gives_each_class_its_interval_and_the_papers_values():
    table = table5(metric_rows()).set_index("class_name")

    assert table.loc["U2R", "recall"] == pytest.approx(0.6)
    assert table.loc["U2R", "recall_ci95"] == pytest.approx(T_975_1 * 0.1, rel=1e-5)
    assert table.loc["U2R", "paper_recall"] == 0.901 and table.loc["Normal", "paper_support"] == 67_343
    assert table.loc["Normal", "support"] == 8


def test_the_tables_are_written_as_csv_markdown_and_booktabs_latex(tmp_path):
    written = write_centralized_tables(metric_rows(), tmp_path)

    assert sorted(p.name for p in written) == ["table3.csv", "table3.md", "table3.tex", "table5.csv", "table5.md",
                                               "table5.tex"]
    tex = (tmp_path / "table3.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "0.9850 $\\pm$ 0.0635" in tex and "accuracy (Lenka et al.)" in tex
    assert "| 0.9850 ± 0.0635 | 0.9892 |" in (tmp_path / "table3.md").read_text()
    assert pd.read_csv(tmp_path / "table3.csv").loc[0, "accuracy_ci95"] == pytest.approx(0.063531, rel=1e-4)


def test_one_run_has_no_interval_and_missing_values_print_na():
    table = over_runs(pd.DataFrame({"k": ["a"], "v": [0.5]}), ["k"], ["v"])
    assert np.isnan(table.loc[0, "v_ci95"]) and mean_ci_text(0.5, np.nan) == "0.5000"
    assert mean_ci_text(np.nan, np.nan) == "n/a"
    latex = to_latex(pd.DataFrame({"model": ["x_y"], "value": ["0.5000 ± 0.0100"]}))
    assert "x\\_y" in latex and "{lr}" in latex


def test_a_plan_points_run_id_is_keyed_by_its_experiment_in_the_centralized_tables():
    from types import SimpleNamespace

    from bflsim.report.centralized import run_key

    def run(name, run_id):
        return SimpleNamespace(run_id=run_id, config=SimpleNamespace(name=name))

    keys = {run_key(run(e, "seed-42")) for e in ("table3_nslkdd", "table3_cicids2017")}

    assert keys == {"table3_nslkdd/seed-42", "table3_cicids2017/seed-42"}  # one seed of two experiments: two runs
    assert run_key(run("table3_nslkdd", "table3_nslkdd-20261121-155344")) == "table3_nslkdd-20261121-155344"
