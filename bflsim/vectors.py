"""Flatten a model's list of arrays into one vector and back.

Aggregators and attacks work on flat vectors; models and Flower records hold a list of
arrays. ``unflatten(*flatten(arrays), dtypes)`` gives the arrays back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

Shapes = tuple[tuple[int, ...], ...]
Weights = list[NDArray[np.float32]]
"""A model's arrays, in the order its framework lists them."""


def flatten(arrays: Sequence[ArrayLike]) -> tuple[NDArray, Shapes]:
    """Concatenate the arrays in order into one 1-D vector; also return their shapes.

    The vector has the arrays' common dtype (``numpy.result_type``).
    """
    parts = [np.asarray(a) for a in arrays]
    if not parts:
        raise ValueError("flatten needs at least one array; got none")
    shapes = tuple(p.shape for p in parts)
    return np.concatenate([p.ravel() for p in parts]), shapes


def unflatten(
    vector: ArrayLike, shapes: Sequence[Sequence[int]], dtypes: Sequence[DTypeLike] | None = None
) -> list[NDArray]:
    """Split ``vector`` into arrays of ``shapes`` (cast to ``dtypes`` when given; copies)."""
    flat = np.asarray(vector)
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise ValueError(
            f"unflatten needs a 1-D vector of {sum(sizes)} values for shapes "
            f"{[tuple(s) for s in shapes]}; got shape {flat.shape}"
        )
    if dtypes is not None and len(dtypes) != len(shapes):
        raise ValueError(f"unflatten got {len(shapes)} shapes but {len(dtypes)} dtypes")
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    kinds = dtypes if dtypes is not None else [flat.dtype] * len(shapes)
    return [
        piece.reshape(shape).astype(kind)
        for piece, shape, kind in zip(pieces, shapes, kinds, strict=True)
    ]
