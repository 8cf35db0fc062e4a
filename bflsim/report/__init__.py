"""Tables and figures of finished runs; nothing here trains.

- :mod:`.centralized`: paper Tables 3 and 5, Figures 1 (training curves) and 3 (confusion);
- :mod:`.federated`: Table 4, Figure 2 (accuracy per round), the attacker-share sweep,
  driven by a catalogue of per-round metrics (:data:`.federated.ROUND_METRICS`);
- :mod:`.figures`: the figures as pure functions of the tidy tables;
- :mod:`.markdown`: the one Markdown writer.

:func:`write_report` is ``bflsim report``: it sorts run folders by kind and writes both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bflsim.report.centralized import bundle_manifests, copy_manifests, write_centralized_report
from bflsim.report.federated import write_federated_confusion, write_federated_report
from bflsim.report.runs import find_runs
from bflsim.runfolder import MANIFEST, Run, read_run

MANIFEST_FILES_MAX = 200  # more runs than this: their manifests in one manifests.jsonl.gz

FIGURES = {
    "auto": "federated runs: the zoo's map when several attacks meet several defences, else the sweep summary "
            "and figure when one aggregator meets 3 or more attacker shares, else Table 4 and Figure 2; "
            "centralized runs: Tables 3, 5 and Figures 1, 3",
    "table4": "federated runs as scenarios: Table 4 and Figure 2 (accuracy per round)",
    "sweep": "federated runs as a sweep: summary and final accuracy against the share of attackers",
    "zoo": "federated runs as an attack x defence map: heatmaps of the accuracy drop and attack success",
    "confusion": "federated runs: the final global model's confusion matrix, one figure per run",
}
"""What ``bflsim report --figure`` can draw."""


def collect_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The runs at or below each path (a run folder, or a folder holding them)."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        found = [read_run(path)] if (path / MANIFEST).is_file() else find_runs(path, kind=None)
        if not found:
            raise FileNotFoundError(f"{path}: no run folder ({MANIFEST}) at or below it")
        runs += found
    return runs


def write_report(paths: Iterable[str | Path], out_dir: str | Path, *, model: str | None = None,
                 figure: str = "auto") -> list[Path]:
    """Write the tables and figures of the runs at ``paths`` to ``out_dir``; return what was written.

    ``model``: the model of Table 5 and Figures 1 and 3 (default: the last model of the runs).
    ``figure``: one of :data:`FIGURES`.
    """
    if figure not in FIGURES:
        raise ValueError(f"--figure {figure!r} is not one of {list(FIGURES)}")
    out_dir = Path(out_dir)
    runs = collect_runs(paths)
    centralized = [r for r in runs if r.config.kind != "federated"]
    federated = [r for r in runs if r.config.kind == "federated"]
    written: list[Path] = []
    if centralized:
        model = model or centralized[-1].config.models.names[-1]
        written += write_centralized_report(centralized, out_dir, model=model)
    if federated:
        if figure == "confusion":
            written += write_federated_confusion(federated, out_dir)
        else:
            layout = {"auto": "auto", "table4": "scenarios", "sweep": "sweep", "zoo": "zoo"}[figure]
            written += write_federated_report([r.path for r in federated], out_dir, layout=layout)
        from bflsim.report.federated import federated_runs
        from bflsim.report.loop import write_loop_report

        table = federated_runs(federated)
        written += write_loop_report(federated, dict(zip(table["path"], table["label"], strict=True)), out_dir)
        if len(federated) > MANIFEST_FILES_MAX:
            written.append(bundle_manifests(federated, out_dir / "manifests.jsonl.gz"))
        else:
            written += copy_manifests(federated, out_dir / "manifests")
    return written
