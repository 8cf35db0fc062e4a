"""A content-addressed store of weight lists: ``<root>/<digest hex>.npz``, named by what it holds.

The name of a blob is :func:`bflsim.hashing.weights_digest` of its arrays, the same digest
that is registered on chain, so the audit can fetch an update or a global model by the
digest it reads from the chain and check that the file still hashes to its name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bflsim.hashing import weights_digest

__all__ = ["BlobError", "BlobStore", "load_arrays", "save_arrays"]


class BlobError(RuntimeError):
    """A blob is missing, unreadable, or does not hash to its name."""


def save_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (``.npz``, in order) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, *arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_arrays`, in order."""
    with np.load(path, allow_pickle=False) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


class BlobStore:
    """Weight lists on disk, one ``.npz`` per distinct digest (written once, atomically).

    ``guard``: called before every write; it raises to refuse it (the run folder's writer check).
    """

    def __init__(self, root: str | Path, guard: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        self.guard = guard

    def path(self, digest: bytes) -> Path:
        return self.root / f"{digest.hex()}.npz"

    def put(self, arrays: Sequence[np.ndarray], digest: bytes | None = None) -> bytes:
        """Store ``arrays`` under their digest (a no-op when already stored); return it.

        ``digest``: the arrays' :func:`~bflsim.hashing.weights_digest` when the caller has
        just computed it (it is not checked again here).
        """
        digest = weights_digest(arrays) if digest is None else digest
        if not self.path(digest).exists():
            if self.guard is not None:
                self.guard()
            save_arrays(self.path(digest), arrays)
        return digest

    def __contains__(self, digest: bytes) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: bytes, *, verify: bool = True) -> list[np.ndarray]:
        """The arrays stored under ``digest``; with ``verify``, they must hash to it."""
        path = self.path(digest)
        if not path.is_file():
            raise BlobError(f"blob 0x{digest.hex()} is missing from {self.root}")
        try:
            arrays = load_arrays(path)
        except Exception as err:
            raise BlobError(f"blob {path} cannot be read: {err}") from err
        if verify:
            actual = weights_digest(arrays)
            if actual != digest:
                raise BlobError(f"blob {path} hashes to 0x{actual.hex()}, not to its name")
        return arrays
