"""Canonical sha256 digests of model weights, data batches and aggregation scores.

These are the ``bytes32`` values written on chain (``FederatedRegistry``): they depend only on
the arrays' values, dtypes and shapes, never on how a framework serialises them (Flower's
``ArrayRecord``, Keras files, pickles), so an auditor can recompute them from numpy alone.

Canonical form of a list of arrays (all integers big-endian)::

    tag                      ASCII domain tag, e.g. b"bflsim/weights/v1", then b"\\x00"
    count                    uint32: number of arrays
    for each array:
        dtype_len, dtype     uint8 + ASCII ``dtype.str`` in little-endian form ("<f4", "|u1")
        ndim, shape          uint8 + one uint64 per dimension
        nbytes, data         uint64 + the values in C order, little-endian

A Fortran-ordered or big-endian array thus hashes like its C-ordered little-endian copy,
while any change of dtype, shape or value changes the digest. The tag separates the kinds
of digest so one can never be passed off as another.

Versions: a data digest of tag ``bflsim/data/v1`` covers a node's features only (runs
before labels were hashed); ``bflsim/data/v2`` covers features and labels, so relabelled
rows no longer pass VerifyIntegrity. The run folder records which one a run used
(:data:`DATA_DIGEST_VERSIONS`), so old runs stay auditable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

DIGEST_SIZE = 32
WEIGHTS_TAG = b"bflsim/weights/v1"
DATA_TAG_V1 = b"bflsim/data/v1"
DATA_TAG = b"bflsim/data/v2"
DATA_DIGEST_VERSIONS = ("v1", "v2")
SPLIT_TAG = b"bflsim/split/v1"
SCORES_TAG = b"bflsim/scores/v1"
EVALUATION_TAG = b"bflsim/evaluation/v1"
RUN_TAG = b"bflsim/run/v1"

__all__ = [
    "DATA_DIGEST_VERSIONS",
    "DIGEST_SIZE",
    "data_digest",
    "digest_hex",
    "evaluation_digest",
    "run_digest",
    "scores_digest",
    "split_digest",
    "weights_digest",
]


def _update_canonical(h: hashlib._Hash, tag: bytes, arrays: Sequence[np.ndarray]) -> None:
    h.update(tag + b"\x00")
    h.update(len(arrays).to_bytes(4, "big"))
    for position, array in enumerate(arrays):
        a = np.asarray(array)
        if a.dtype.hasobject or a.dtype.fields is not None:
            raise TypeError(
                f"array {position}: dtype {a.dtype} has no canonical byte form "
                "(object and structured dtypes are not supported)"
            )
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        dtype_str = dtype.str.encode("ascii")
        h.update(len(dtype_str).to_bytes(1, "big") + dtype_str)
        h.update(a.ndim.to_bytes(1, "big"))
        for size in a.shape:
            h.update(int(size).to_bytes(8, "big"))
        data = np.ascontiguousarray(a, dtype=dtype)  # copies only when needed
        h.update(data.nbytes.to_bytes(8, "big"))
        h.update(memoryview(data.reshape(-1)).cast("B"))


def weights_digest(arrays: Iterable[ArrayLike]) -> bytes:
    """sha256 of a model's weight arrays in their canonical form (32 bytes).

    Parameters
    ----------
    arrays : list of array-like
        The model's arrays in layer order (e.g. ``model.get_weights()``).
    """
    h = hashlib.sha256()
    _update_canonical(h, WEIGHTS_TAG, [np.asarray(a) for a in arrays])
    return h.digest()


def data_digest(x: ArrayLike, y: ArrayLike | None, timestamp: int, node_id: int, *, version: str = "v2") -> bytes:
    """``sha256(canonical([X, y]) || timestamp || node_id)``: the digest a node registers on chain.

    Parameters
    ----------
    x, y : array-like
        The node's data batch: features and labels. Version ``"v1"`` (runs made before
        labels were hashed) covers ``x`` only and takes ``y = None``.
    timestamp : int
        Registration time, 0 <= timestamp < 2**64 (the contract's ``uint64``), 8 bytes big-endian.
    node_id : int
        The node's index, 0 <= node_id < 2**32, 4 bytes big-endian.
    version : {"v2", "v1"}
        Which canonical form (see the module docstring).
    """
    if not 0 <= timestamp < 2**64:
        raise ValueError(f"timestamp must fit in uint64; got {timestamp}")
    if not 0 <= node_id < 2**32:
        raise ValueError(f"node_id must fit in uint32; got {node_id}")
    if version == "v2":
        if y is None:
            raise ValueError("a v2 data digest covers the labels: pass y")
        tag, arrays = DATA_TAG, [np.asarray(x), np.asarray(y)]
    elif version == "v1":
        tag, arrays = DATA_TAG_V1, [np.asarray(x)]
    else:
        raise ValueError(f"data digest version must be one of {list(DATA_DIGEST_VERSIONS)}; got {version!r}")
    h = hashlib.sha256()
    _update_canonical(h, tag, arrays)
    h.update(int(timestamp).to_bytes(8, "big"))
    h.update(int(node_id).to_bytes(4, "big"))
    return h.digest()


def split_digest(x: ArrayLike, y: ArrayLike) -> bytes:
    """sha256 of a held-out split (features and labels), e.g. the test split a run scores on."""
    h = hashlib.sha256()
    _update_canonical(h, SPLIT_TAG, [np.asarray(x), np.asarray(y)])
    return h.digest()


def evaluation_digest(server_round: int, confusion: ArrayLike) -> bytes:
    """sha256 of a round's evaluation: the round and the global model's confusion matrix.

    Accuracy, F1, precision, recall and FPR are functions of the confusion matrix, whose
    integer counts an auditor reproduces exactly by scoring the committed model again.
    """
    if not 0 <= server_round < 2**32:
        raise ValueError(f"server_round must fit in uint32; got {server_round}")
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square; got shape {cm.shape}")
    h = hashlib.sha256()
    _update_canonical(h, EVALUATION_TAG, [np.asarray([server_round], dtype=np.int64), cm.astype(np.int64)])
    return h.digest()


def run_digest(facts: Mapping[str, str]) -> bytes:
    """sha256 of a run's identifying facts (config digest, code commit, data and test-split
    digests, the run's nonce, ...), recorded in the registry at set-up.

    The canonical form is the tag, a zero byte, then the facts as JSON with sorted keys and
    no spaces (UTF-8); every value must be a string.
    """
    for key, value in facts.items():
        if not isinstance(value, str):
            raise TypeError(f"run fact {key!r} must be a string; got {type(value).__name__}")
    text = json.dumps(dict(facts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(RUN_TAG + b"\x00" + text.encode("utf-8")).digest()


def scores_digest(selected: Sequence[int], scores: ArrayLike) -> bytes:
    """sha256 of an aggregation's outcome: the selected node ids and every candidate's score.

    ``selected`` is hashed in the order given as int64 and ``scores`` as float64, so the
    strategy must pass them in a documented order (the aggregator's input order for scores).
    """
    selected_arr = np.asarray(list(selected), dtype=np.int64).reshape(-1)
    scores_arr = np.asarray(scores, dtype=np.float64)
    h = hashlib.sha256()
    _update_canonical(h, SCORES_TAG, [selected_arr, scores_arr])
    return h.digest()


def digest_hex(digest: bytes) -> str:
    """``0x``-prefixed hex of a 32-byte digest, as block explorers and web3 show it."""
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a digest has {DIGEST_SIZE} bytes; got {len(digest)}")
    return "0x" + digest.hex()
