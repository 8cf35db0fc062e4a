"""Krum beside the linear algebra it rests on and beside Flower's (issue 10, benchmark (d)).

For each size (n rows, d coordinates) one random float32 stack: honest rows scattered around
a shared random vector, and a few outliers (``n // 10``, at least one) far from it, first in
the stack so that no honest row wins a tie by its index. Three things are timed side by side
in one loop, best of ``repeats`` (``time.perf_counter``; the order rotates, so that each
goes first, after the others have stirred the caches, in turn):

- ``krum_seconds``: bflsim's :func:`bflsim.aggregators.krum` with f = (n - 3) // 2, the
  largest f Krum tolerates (n > 2f + 2): the checks, the pairwise squared distances in
  float64, the scores, the pick and the aggregate;
- ``gram_seconds``: one float64 Gram matrix of the same stack, the cast included:
  ``x64 = x.astype(np.float64); x64 @ x64.T`` (numpy hands ``A @ A.T`` to BLAS syrk, which
  computes one triangle). The floor for distances computed in float64;
- ``flower_seconds``: Flower's ``select_multikrum(contents, f, 1)``
  (``flwr.serverapp.strategy.multikrum``, Flower 1.41) on the same rows, one ``RecordDict``
  holding one ``ArrayRecord`` per row (built once, outside the timing). Its time includes
  what the function itself does: reading the arrays out of the records, stacking them, its
  float32 Gram trick (uncentred) and a Python loop of argsorts.

``krum_over_gram`` and ``krum_over_flower`` are the ratios of those best times (issue 10's
targets: at most 1.5 and below 1); ``same_pick`` says whether Krum and Flower chose the same
row (the data has no ties, so they should). Nothing here is asserted in tests: the machines
are shared. Importing this module loads neither TensorFlow nor Flower (Flower is imported
when :func:`krum_rows` runs). ``python -m bflsim.bench.aggregators`` prints the rows as CSV.
"""

from __future__ import annotations

import csv
import gc
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from bflsim.aggregators import krum

SIZES: tuple[tuple[int, int], ...] = (
    (10, 33_605),
    (50, 33_605),
    (200, 33_605),
    (10, 1_000_000),
    (50, 1_000_000),
    (200, 1_000_000),
)
"""(n, d): 33,605 is the DNN 128-64's parameter count on NSL-KDD, 1,000,000 a larger model."""

KRUM_COLUMNS = (
    "n",
    "d",
    "num_malicious",
    "krum_seconds",
    "gram_seconds",
    "flower_seconds",
    "krum_over_gram",
    "krum_over_flower",
    "same_pick",
)


def krum_stack(num_rows: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    """A (num_rows, dim) float32 stack: honest rows at spread 0.1 around a shared standard
    normal vector, and the first max(1, num_rows // 10) rows outliers at spread 10 around 0."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim, dtype=np.float32)
    stack = rng.standard_normal((num_rows, dim), dtype=np.float32)
    num_outliers = max(1, num_rows // 10)
    stack[:num_outliers] *= 10.0
    stack[num_outliers:] *= 0.1
    stack[num_outliers:] += shared
    return stack


def krum_rows(
    sizes: Sequence[tuple[int, int]] = SIZES, repeats: int = 3, seed: int = 0
) -> list[dict[str, float | int | bool]]:
    """One row per (n, d) in ``sizes``, in :data:`KRUM_COLUMNS`: best-of-``repeats`` seconds
    of bflsim's Krum, one float64 Gram matrix (cast included) and Flower's select_multikrum,
    timed in turn in one loop on the same stack, their ratios, and whether the picks agree."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    for num_rows, _ in sizes:
        if num_rows < 3:
            raise ValueError(f"Krum needs n >= 3 rows; got n={num_rows} in sizes")
    rows = []
    for num_rows, dim in sizes:
        num_malicious = (num_rows - 3) // 2
        row = _time_side_by_side(krum_stack(num_rows, dim, seed), num_malicious, repeats)
        rows.append({"n": num_rows, "d": dim, "num_malicious": num_malicious, **row})
        gc.collect()  # the stack and Flower's copy of it (1.6 GB at n = 200, d = 1M) are gone
    return rows


MIN_MEASURE_SECONDS = 0.05
"""A measurement repeats a call until it lasts this long (a 0.5 ms call is timed 100 times in
a row), as ``timeit`` does: single sub-millisecond calls are at the timer's and the cache's
mercy."""


def _time_side_by_side(
    stack: NDArray[np.float32], num_malicious: int, repeats: int
) -> dict[str, float | bool]:
    """Best seconds of Krum, the float64 Gram matrix and Flower's select_multikrum on ``stack``,
    each timed once per repeat in turn, their ratios and whether the two Krums agree."""
    from flwr.app import ArrayRecord, RecordDict
    from flwr.serverapp.strategy.multikrum import select_multikrum

    contents = [RecordDict({"arrays": ArrayRecord([row])}) for row in stack]

    def gram() -> NDArray[np.float64]:
        x64 = stack.astype(np.float64)
        return x64 @ x64.T

    timed: dict[str, Callable[[], object]] = {
        "krum": lambda: krum(stack, num_malicious),
        "gram": gram,
        "flower": lambda: select_multikrum(contents, num_malicious, 1),
    }
    best = dict.fromkeys(timed, np.inf)
    results: dict[str, object] = {}
    calls: dict[str, int] = {}
    for name, call in timed.items():  # calls per measurement: at least MIN_MEASURE_SECONDS of them
        start = time.perf_counter()
        results[name] = call()
        calls[name] = max(1, int(np.ceil(MIN_MEASURE_SECONDS / max(time.perf_counter() - start, 1e-9))))
    names = list(timed)
    for repeat in range(repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:  # each goes first in turn
            start = time.perf_counter()
            for _ in range(calls[name]):
                results[name] = timed[name]()
            best[name] = min(best[name], (time.perf_counter() - start) / calls[name])
    ours = int(results["krum"].selected[0])
    theirs = next(i for i, content in enumerate(contents) if content is results["flower"][0])
    return {
        "krum_seconds": best["krum"],
        "gram_seconds": best["gram"],
        "flower_seconds": best["flower"],
        "krum_over_gram": best["krum"] / best["gram"],
        "krum_over_flower": best["krum"] / best["flower"],
        "same_pick": ours == theirs,
    }


def main() -> None:
    """Print :func:`krum_rows` at the default sizes as CSV on stdout."""
    writer = csv.DictWriter(sys.stdout, fieldnames=KRUM_COLUMNS)
    writer.writeheader()
    for row in krum_rows():
        writer.writerow({key: f"{v:.4g}" if isinstance(v, float) else v for key, v in row.items()})
        sys.stdout.flush()


if __name__ == "__main__":
    main()
