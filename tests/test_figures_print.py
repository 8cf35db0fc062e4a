"""Every figure at print size: TrueType fonts in the PDF, a column's or the page's width, text >= 7 pt."""

import re

import numpy as np
import pandas as pd
import pytest

from bflsim.report import figures
from bflsim.report.loop import quarantine_figure
from bflsim.report.style import (
    MIN_POINTS,
    WIDTHS,
    ci95_half_width,
    mean_ci95,
    save,
    smallest_text_points,
)

LONG = "Blockchain-secured (Krum + registry) under attack"


def per_round_rows():
    rows = []
    for label in ("Standard FL, no attack", "Standard FL under attack", LONG):
        for seed in (1, 2, 3):
            for r in range(51):
                rows.append({"label": label, "split": "test", "metric": "accuracy", "round": r, "node": np.nan,
                             "value": 0.5 + 0.4 * r / 50 + 0.01 * seed})
    return pd.DataFrame(rows)


def sweep_rows():
    return pd.DataFrame([{"aggregator": a, "attacker_fraction": f, "accuracy_mean": 0.9 - f, "accuracy_std": 0.01,
                          "n_seeds": 3} for a in ("fedavg", "krum", "multikrum", "median", "trimmed_mean")
                         for f in (0.0, 1 / 6, 0.3)])


def confusion_rows(classes):
    names = [f"class{i}" for i in range(classes)]
    return pd.DataFrame([{"model": "cnn_lstm", "split": "test", "true": t, "predicted": p,
                          "count": 123_456 if t == p else 7} for t in names for p in names])


def heatmap_rows():
    return pd.DataFrame([{"attack": f"attack number {a}", "defence": f"defence {d} (f=2)", "accuracy_drop_mean": 0.1 * a}
                         for a in range(14) for d in range(13)])


def strongest_rows():
    return pd.DataFrame([{"defence": f"Trimmed mean (trim_fraction=0.2) {d}", "attack": "IPM (epsilon=5.0)", "partition": part, "attacker_fraction": f,
                          "accuracy_mean": 0.9 - f, "accuracy_std": 0.02, "n_seeds": 3}
                         for d in range(13) for part in ("iid", "dirichlet(0.5)") for f in (0.0, 0.1, 0.2, 0.3)])


def epoch_rows():
    return pd.DataFrame([{"model": "cnn_lstm", "epoch": e, "metric": m, "split": s, "value": 0.5 + 0.01 * e}
                         for e in range(1, 21) for m in ("accuracy", "loss") for s in ("train", "val")])


def scale_rows():
    return pd.DataFrame([{"nodes": n, "ledger": ledger, "setup_seconds": n / 10, "round_seconds": 0.5,
                          "peak_pss_bytes": 2.4 * 2**30, "gas_per_round": 158_371.0 if ledger == "batched" else 557_147.0,
                          "audit_seconds": 10.0 if ledger != "none" else np.nan}
                         for n in (10, 100, 1000, 10_000) for ledger in ("none", "per-node", "batched")])


LABELS = {"attack": str, "defence": str}
DRAWINGS = {
    "figure2": lambda: figures.accuracy_per_round(per_round_rows()),
    "sweep": lambda: figures.accuracy_vs_attackers(sweep_rows()),
    "confusion5": lambda: figures.confusion_figure(confusion_rows(5), "cnn_lstm"),
    "confusion16": lambda: figures.confusion_figure(confusion_rows(16), "cnn_lstm"),
    "heatmap": lambda: figures.cell_heatmap(heatmap_rows(), "accuracy_drop", "Accuracy drop", LABELS, vmin=0, vmax=1),
    "strongest": lambda: figures.accuracy_under_strongest(strongest_rows(), LABELS),
    "figure1": lambda: figures.training_curves(epoch_rows(), "cnn_lstm"),
    "scale": lambda: figures.scale_panels(scale_rows()),
    "quarantine": lambda: quarantine_figure(
        pd.DataFrame([{"run_id": f"r{k}", "label": label, "device": d, "compromised": int(d < 2),
                       "quarantined_at": 20.0 * (1 + d + k) if d < 3 else np.nan, "duration": 120.0}
                      for k in range(3) for label in ("clean model, final round", "poisoned model (IPM)")
                      for d in range(8)])),
    "throughput": lambda: figures.throughput_panels(
        pd.DataFrame({"floor_seconds": [1.0] * 75, "parallel_finished_after": np.arange(75) * 2.4,
                      "sequential_finished_after": np.arange(75) * 3.3}),
        pd.DataFrame({"nodes": [10, 20, 50, 100], "bflsim_wall_seconds": [21.0, 22.7, 24.5, 28.3],
                      "floor_seconds": [1.2, 1.5, 2.5, 4.1]})),
}


@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_every_figure_prints_at_a_column_or_page_width_with_truetype_text_of_7_pt(tmp_path, name):
    fig = DRAWINGS[name]()
    smallest = smallest_text_points(fig)

    [png, pdf] = figures.save_figure(fig, tmp_path / name)

    data = pdf.read_bytes()
    assert b"/Type3" not in data and b"/FontFile2" in data  # embedded TrueType, no Type 3
    [box] = {tuple(map(float, m)) for m in re.findall(rb"/MediaBox \[\s*(\S+) (\S+) (\S+) (\S+)\s*\]", data)}
    assert min(abs(box[2] / 72 - w) for w in WIDTHS.values()) < 0.01
    assert smallest >= MIN_POINTS
    assert png.stat().st_size > 5_000


def test_a_figure_too_wide_or_with_small_text_is_refused(tmp_path):
    from bflsim.report.style import new_figure, pyplot

    fig = pyplot().figure(figsize=(6.0, 3.8))
    with pytest.raises(ValueError, match="6.00 in wide"):
        save(fig, tmp_path / "wide")
    fig, ax = new_figure("column")
    ax.set_xlabel("tiny", fontsize=5)
    with pytest.raises(ValueError, match="5.0 pt at print width"):
        save(fig, tmp_path / "small")
    fig, ax = new_figure("column")
    fig.text(0.5, 0.5, "a label far too long for one column of a two-column paper, cut at the edge", fontsize=8)
    with pytest.raises(ValueError, match="past the figure's edge"):
        save(fig, tmp_path / "cut")
    assert not list(tmp_path.iterdir())


def test_bands_are_the_95_percent_confidence_interval_of_the_mean():
    mean, half, n = mean_ci95([0.90, 0.92, 0.94])
    # t(0.975, 2) = 4.302653; std 0.02; half = 4.302653 * 0.02 / sqrt(3)
    assert (mean, n) == (pytest.approx(0.92), 3)
    assert half == pytest.approx(0.0496827, rel=1e-5)
    assert np.isnan(mean_ci95([0.9])[1]) and mean_ci95([])[2] == 0
    assert ci95_half_width(pd.Series([0.02]), pd.Series([3]))[0] == pytest.approx(half)


def test_each_series_differs_in_colour_marker_and_line_style():
    fig = figures.accuracy_vs_attackers(sweep_rows())
    lines = fig.axes[0].get_lines()
    assert len({ln.get_color() for ln in lines}) == len({ln.get_marker() for ln in lines}) == 5
    assert len({str(ln._unscaled_dash_pattern) for ln in lines}) == 5  # dash patterns, custom ones included


def test_figures_redraws_every_figure_that_has_its_rows_and_names_the_others(tmp_path, capsys):
    from bflsim.cli import main

    (tmp_path / "sweep").mkdir()
    sweep_rows().to_csv(tmp_path / "sweep" / "sweep_summary.csv", index=False)
    (tmp_path / "bench").mkdir()
    scale_rows().to_csv(tmp_path / "bench" / "scale_points.csv", index=False)
    (tmp_path / "bench" / "throughput.pdf").write_bytes(b"%PDF-1.4 drawn from rows that are not here")
    central = tmp_path / "centralized"
    central.mkdir()
    pd.DataFrame({"model": ["cnn_lstm"]}).to_csv(central / "table3.csv", index=False)
    test_row = {"model": "cnn_lstm", "epoch": np.nan, "metric": "accuracy", "split": "test", "value": 0.98,
                "class_name": np.nan}
    runs = ("r1", "r2")  # two seeds of one experiment: one Figure 1 and one Figure 3 for both
    pd.concat([pd.concat([epoch_rows().assign(class_name=np.nan), pd.DataFrame([test_row])]).assign(run_id=r)
               for r in runs]).assign(dataset="nsl-kdd", protocol="stratified 70/15/15").to_csv(
        central / "metrics.csv", index=False)
    pd.DataFrame([{"run_id": r, "experiment": "table3_nslkdd", "dataset": "nsl-kdd",
                   "protocol": "stratified 70/15/15"} for r in runs]).to_csv(central / "runs.csv", index=False)
    pd.concat([confusion_rows(5).assign(run_id=r, round=np.nan) for r in runs]).to_csv(central / "confusion.csv",
                                                                                       index=False)

    assert main(["figures", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    assert "redrew 4 figures and 1 tables" in out  # table 3 (no per-class rows: no table 5)
    assert f"not redrawn (no tidy rows beside it): {tmp_path / 'bench' / 'throughput.pdf'}" in out
    for stem in ("sweep/figure_sweep", "bench/scale", "centralized/figure1_table3_nslkdd",
                 "centralized/figure3_table3_nslkdd"):
        assert b"/FontFile2" in (tmp_path / f"{stem}.pdf").read_bytes()


def test_centralized_figures_show_an_experiments_seeds_together(tmp_path, monkeypatch):
    from bflsim.report.centralized import draw_confusion_matrices, draw_training_curves

    runs = pd.DataFrame([{"run_id": f"seed-{k}", "experiment": "table3_nslkdd", "dataset": "nsl-kdd",
                          "protocol": "stratified 70/15/15"} for k in (1, 2, 3)])
    epochs = pd.concat([epoch_rows().assign(run_id=f"seed-{k}", value=lambda d, k=k: d["value"] + 0.01 * k)
                        for k in (1, 2, 3)])
    confusion = pd.concat([confusion_rows(2).assign(run_id=f"seed-{k}") for k in (1, 2, 3)])
    drawn = {}
    real_curves, real_confusion = figures.training_curves, figures.confusion_figure
    monkeypatch.setattr(figures, "training_curves", lambda *a, **k: drawn.setdefault("curves", real_curves(*a, **k)))
    monkeypatch.setattr(figures, "confusion_figure",
                        lambda *a, **k: drawn.setdefault("confusion", real_confusion(*a, **k)))

    written = draw_training_curves(epochs, runs, tmp_path, "cnn_lstm")
    written += draw_confusion_matrices(confusion, runs, tmp_path, "cnn_lstm")

    assert sorted(p.name for p in written) == ["figure1_table3_nslkdd.pdf", "figure1_table3_nslkdd.png",
                                                 "figure3_table3_nslkdd.pdf", "figure3_table3_nslkdd.png"]
    accuracy = drawn["curves"].axes[0]
    assert accuracy.get_ylabel() == "accuracy (mean, 95% CI, 3 runs)"
    assert len(accuracy.collections) == 2  # a band for training and one for validation
    assert [round(v, 4) for v in accuracy.lines[0].get_ydata()[:2]] == [0.53, 0.54]  # the mean of the three seeds
    cells = {t.get_text() for t in drawn["confusion"].axes[0].texts}
    assert cells == {"370k", "21"}  # 3 x 123,456 and 3 x 7: the seeds' counts summed
    assert "summed" in drawn["confusion"].axes[0].get_title() and "3 runs" in drawn["confusion"].axes[0].get_title()
