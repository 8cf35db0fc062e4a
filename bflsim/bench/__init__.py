"""Speed benchmarks, written as CSV under ``results/bench/`` (never asserted in tests: the
machines are shared). One module per suite:

- :mod:`.model`: CNN-LSTM training and inference on one node's data (``--suite centralized``);
- :mod:`.runs`: whole ``bflsim run`` processes side by side: Flower/Ray against the plain
  loop (``--suite federated``), with and without the ledger (``--suite ledger``);
- :mod:`.chain`: hashing, signing, finality, Krum and gas (paper Table 6, ``--suite chain``);
- :mod:`.throughput`: a whole sweep against its compute floor, wall time against nodes, the
  memory of a 1,000-node federation, Krum against a Gram matrix (``--suite throughput``);
- :mod:`.aggregators`: Krum against one float64 Gram matrix and Flower's Multi-Krum (part of
  the throughput suite; ``python -m bflsim.bench.aggregators`` alone);
- :mod:`.plain_loop`: the single-process loop the federated and throughput suites compare against.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bflsim.runfolder import package_versions, utc_now

BENCH_COLUMNS = ("benchmark", "quantity", "value", "unit", "repeats", "paper_value", "note")


def write_bench_csv(out_dir: str | Path, name: str, rows: list[tuple], packages: tuple[str, ...]) -> Path:
    """``<out_dir>/<name>.csv`` in :data:`BENCH_COLUMNS`, and when and with what it was measured."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(BENCH_COLUMNS)
        for row in rows:
            writer.writerow([row[0], row[1], _number(row[2]), *row[3:]])
    (out_dir / f"{name}.meta.txt").write_text(
        f"measured {utc_now()} on {os.cpu_count()} cores with {package_versions(packages)}\n"
    )
    return path


def _number(value: float) -> str:
    """Six significant digits, but a whole number (gas, counts) in full: 1266581, not 1.26658e+06."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
