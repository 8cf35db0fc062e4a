"""``bflsim figures``: redraw the committed figures (and the centralized tables) from the tidy
rows committed beside them.

Nothing here reads a run folder or trains: each figure is a function of one or two CSV files
in the folder it is drawn into, so a fresh clone redraws ``results/`` in seconds. A folder
whose figures have no rows beside it is named in the answer, not skipped in silence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

Drawer = Callable[[Path], list[Path]]


def _sweep(folder: Path) -> list[Path]:
    from bflsim.report.federated import draw_sweep_figure

    return draw_sweep_figure(pd.read_csv(folder / "sweep_summary.csv"), folder)


def _zoo(folder: Path) -> list[Path]:
    from bflsim.report.zoo import draw_zoo_figures

    return draw_zoo_figures(pd.read_csv(folder / "zoo_runs.csv"), pd.read_csv(folder / "zoo_summary.csv"), folder)


def _scale(folder: Path) -> list[Path]:
    from bflsim.report import figures

    return figures.save_figure(figures.scale_panels(pd.read_csv(folder / "scale_points.csv")), folder / "scale")


def _loop(folder: Path) -> list[Path]:
    """The closed loop's table and quarantine figure from ``loop_devices.csv`` and ``loop_runs.csv``."""
    from bflsim.report.loop import draw_loop

    return draw_loop(pd.read_csv(folder / "loop_devices.csv"), pd.read_csv(folder / "loop_runs.csv"), folder)


def _report_model(metrics: pd.DataFrame) -> str | None:
    """The model a centralized report draws Figures 1 and 3 for: the last one trained with
    epochs (the runs' last model, as ``bflsim report`` defaults to); None without one."""
    per_epoch = metrics[metrics["epoch"].notna()]
    return None if per_epoch.empty else str(per_epoch["model"].iloc[-1])


def _throughput(folder: Path) -> list[Path]:
    from bflsim.report import figures

    fig = figures.throughput_panels(pd.read_csv(folder / "throughput_points.csv"),
                                    pd.read_csv(folder / "throughput_nodes.csv"))
    return figures.save_figure(fig, folder / "throughput")


def _training_curves(folder: Path) -> list[Path]:
    """Figure 1 of every centralized experiment (mean, 95% CI over its runs)."""
    from bflsim.report.centralized import draw_training_curves

    metrics = pd.read_csv(folder / "metrics.csv")
    model = _report_model(metrics)
    return [] if model is None else draw_training_curves(metrics, pd.read_csv(folder / "runs.csv"), folder, model)


def _confusion_matrices(folder: Path) -> list[Path]:
    """Figure 3 of every centralized experiment (test counts summed over its runs)."""
    from bflsim.report.centralized import draw_confusion_matrices

    model = _report_model(pd.read_csv(folder / "metrics.csv"))
    if model is None:
        return []
    return draw_confusion_matrices(pd.read_csv(folder / "confusion.csv"), pd.read_csv(folder / "runs.csv"), folder, model)


def _centralized_tables(folder: Path) -> list[Path]:
    """Tables 3 and 5 (mean ± 95% CI over runs, the paper's values beside) from ``metrics.csv``."""
    from bflsim.report.centralized import write_centralized_tables

    return write_centralized_tables(pd.read_csv(folder / "metrics.csv"), folder)


def _figure2(folder: Path) -> list[Path]:
    """Figure 2 (accuracy per round, 95% CI over a scenario's seeds) from the report's ``metrics.csv``."""
    from bflsim.report.federated import draw_figure2

    return draw_figure2(pd.read_csv(folder / "metrics.csv").assign(node=float("nan")), folder)


DRAWERS: dict[str, tuple[tuple[str, ...], Drawer]] = {
    "sweep": (("sweep_summary.csv",), _sweep),
    "zoo": (("zoo_runs.csv", "zoo_summary.csv"), _zoo),
    "scale": (("scale_points.csv",), _scale),
    "throughput": (("throughput_points.csv", "throughput_nodes.csv"), _throughput),
    "figure 2": (("table4.csv", "metrics.csv"), _figure2),
    "training curves": (("table3.csv", "metrics.csv", "runs.csv"), _training_curves),
    "confusion matrices": (("table3.csv", "metrics.csv", "runs.csv", "confusion.csv"), _confusion_matrices),
    "centralized tables": (("table3.csv", "metrics.csv"), _centralized_tables),
    "closed loop": (("loop_devices.csv", "loop_runs.csv"), _loop),
}
"""What can be redrawn: the rows it needs (in the figure's folder) and how."""


def redraw(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Redraw every figure under ``root`` that has its rows; return (written, figures without rows)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    written: list[Path] = []
    for folder in sorted({root, *(p for p in root.rglob("*") if p.is_dir())}):
        for needs, draw in DRAWERS.values():
            if all((folder / name).is_file() for name in needs):
                written += draw(folder)
    without_rows = sorted(set(root.rglob("*.pdf")) - set(written))
    return written, without_rows
