"""Stratified subsampling and train / validation / test splits, reproducible from a seed.

Every class is split on its own: its rows are shuffled and cut by the fractions, rounding by
largest remainder, and every split with a positive fraction receives at least one row of
every class. A class with fewer rows than there are such splits cannot be stratified and is
an error naming the class; nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from bflsim.data.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
_ADVICE = (
    "use label_mode = 'binary', merge the class into a larger one in the label column, "
    "or use more data (sample_fraction = 1.0)"
)


def allocate(num_rows: int, fractions: Sequence[float]) -> NDArray[np.int64]:
    """Row counts per split for one class: largest-remainder rounding of ``fractions * num_rows``,
    then at least one row for each split with a positive fraction (taken from the largest).

    Requires ``num_rows`` >= the number of positive fractions.
    """
    share = np.asarray(fractions, dtype=np.float64)
    exact = share * num_rows
    counts = np.floor(exact).astype(np.int64)
    leftover = num_rows - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:leftover]] += 1
    for empty in np.flatnonzero((counts == 0) & (share > 0)):
        counts[np.argmax(counts)] -= 1
        counts[empty] += 1
    return counts


def split_stratified(
    labels: NDArray, fractions: Sequence[float], seed: int, *, source: str = "the data"
) -> tuple[NDArray[np.int64], ...]:
    """Split row indices into one index array per fraction, stratified by ``labels``.

    Each returned array is shuffled. Raises :class:`DataError` naming a class with fewer rows
    than there are splits with a positive fraction.
    """
    labels = np.asarray(labels)
    needed = sum(1 for f in fractions if f > 0)
    rng = np.random.default_rng(seed)
    parts: list[list[NDArray[np.int64]]] = [[] for _ in fractions]
    classes, counts = np.unique(labels, return_counts=True)
    for name, count in zip(classes, counts, strict=True):
        if count < needed:
            names = [n for n, f in zip(SPLIT_NAMES, fractions, strict=False) if f > 0]
            raise DataError(
                f"class {str(name)!r} has {count} row{'s' if count != 1 else ''} in {source}; "
                f"a stratified split into {'/'.join(names)} needs at least {needed} rows of "
                f"every class: {_ADVICE}"
            )
        rows = rng.permutation(np.flatnonzero(labels == name))
        bounds = np.cumsum(allocate(int(count), fractions))[:-1]
        for part, chunk in zip(parts, np.split(rows, bounds), strict=True):
            part.append(chunk)
    return tuple(rng.permutation(np.concatenate(part)).astype(np.int64) for part in parts)


def subsample_stratified(
    labels: NDArray, fraction: float, seed: int, *, min_per_class: int = 1
) -> NDArray[np.int64]:
    """Sorted indices of a stratified random subsample of about ``fraction`` of the rows.

    Each class keeps ``round(fraction * n)`` rows but never fewer than ``min(n, min_per_class)``,
    so a quick look at a big file does not lose its small classes.
    """
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep = []
    for name in np.unique(labels):
        rows = np.flatnonzero(labels == name)
        size = min(len(rows), max(round(fraction * len(rows)), min_per_class))
        keep.append(rng.choice(rows, size=size, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)


def order_classes(labels: NDArray, normal_label: str | None) -> tuple[str, ...]:
    """Class index order: the normal class first when known, then the others sorted by name."""
    names = sorted(str(name) for name in np.unique(labels))
    if normal_label is not None and normal_label in names:
        names.remove(normal_label)
        names.insert(0, normal_label)
    return tuple(names)


def require_classes_present(
    class_names: Sequence[str], splits: Mapping[str, NDArray[np.int64]]
) -> None:
    """Raise :class:`DataError` when a non-empty split lacks one of the classes.

    ``splits`` maps a split name to its encoded labels (indices into ``class_names``).
    """
    counts = {
        name: np.bincount(encoded, minlength=len(class_names))
        for name, encoded in splits.items()
    }
    for split_name, split_counts in counts.items():
        if split_counts.sum() == 0:
            continue
        for index in np.flatnonzero(split_counts == 0):
            per_split = ", ".join(f"{n} {int(c[index])}" for n, c in counts.items())
            raise DataError(
                f"class {class_names[index]!r} has no rows in the {split_name} split "
                f"({per_split}); every class must appear in every split: {_ADVICE}"
            )
