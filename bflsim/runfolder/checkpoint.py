"""A federated run's checkpoint: what the round after the last committed one needs.

::

    <run>/checkpoint/global.npz    the global weights after the last completed round
    <run>/checkpoint/defence.npz   what the aggregation rule carries between rounds, for the
                                   rules that carry anything (the previous global model,
                                   each node's summed updates: bflsim.aggregators.DefenceState)
    <run>/checkpoint/state.json    that round, the weights' digest, the strategy's state
                                   (excluded nodes, ledger position), the manifest's
                                   bookkeeping (node failures, excluded nodes, registry), and
                                   the size of every append-only file at that moment

It is written after each round's rows and trail lines are on disk (weights first, then the
state, each atomically), so a stop at any moment leaves the previous complete checkpoint.
Resuming (:meth:`bflsim.runfolder.RunFolder.resume`) cuts every append-only file back to its
recorded size: the rows of the round in progress at the stop go, the completed rounds stay.

Nothing else needs saving: every random draw of a round (cohort, attackers, training and
attack noise) is seeded from ``(seed, round[, node])``, the optimizer is reset each round,
and the recorder's counters are per round.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.hashing import digest_hex, weights_digest
from bflsim.runfolder.blobs import load_arrays, save_arrays
from bflsim.vectors import Weights

__all__ = ["BOOKKEEPING", "Checkpoint", "read_checkpoint", "truncate_to", "write_checkpoint"]

FOLDER = "checkpoint"
STATE = f"{FOLDER}/state.json"
WEIGHTS = f"{FOLDER}/global.npz"
REFERENCES = "defence"


def reference_path(server_round: int) -> str:
    """Where a run keeps the server's reference update of a round (FLTrust), from its folder."""
    return f"{REFERENCES}/reference-{int(server_round):04d}.npy"
DEFENCE = f"{FOLDER}/defence.npz"
# Files that only grow; their size at a checkpoint is where a resumed run carries on.
APPEND_ONLY = ("metrics.csv", "confusion.csv", "trail/transactions.jsonl", "trail/rounds.jsonl")
# Manifest entries a round may change, restored as they were at the checkpoint.
BOOKKEEPING = ("ledger", "excluded_nodes", "node_failures")


@dataclass(frozen=True)
class Checkpoint:
    """The state after round ``server_round``, as :func:`read_checkpoint` finds it."""

    server_round: int
    weights: Weights
    state: dict[str, Any]
    manifest: dict[str, Any]
    sizes: dict[str, int]
    defence: list[np.ndarray] | None = None  # the defence's carried arrays (DefenceState.arrays)


def write_checkpoint(
    run_dir: Path, server_round: int, weights: Weights, state: Mapping[str, Any], manifest: Mapping[str, Any],
    defence: Sequence[np.ndarray] | None = None,
) -> None:
    run_dir = Path(run_dir)
    save_arrays(run_dir / WEIGHTS, weights)
    if defence is not None:
        save_arrays(run_dir / DEFENCE, list(defence))
    record = {
        "defence_digest": digest_hex(weights_digest(list(defence))) if defence is not None else None,
        "round": int(server_round),
        "global_digest": digest_hex(weights_digest(weights)),
        "state": dict(state),
        "manifest": {key: manifest[key] for key in BOOKKEEPING if key in manifest},
        "sizes": {name: (run_dir / name).stat().st_size for name in APPEND_ONLY if (run_dir / name).is_file()},
    }
    tmp = run_dir / f"{STATE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / STATE)


def read_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The run's last checkpoint, or None when it completed no round. A checkpoint whose
    weights do not hash to the digest it records is an error (the files were changed)."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE).is_file():
        return None
    record = json.loads((run_dir / STATE).read_text())
    weights = load_arrays(run_dir / WEIGHTS)
    if digest_hex(weights_digest(weights)) != record["global_digest"]:
        raise ValueError(f"{run_dir / WEIGHTS} does not hash to the digest {record['global_digest']} "
                         f"that {run_dir / STATE} records; the checkpoint cannot be trusted")
    defence = None
    if record.get("defence_digest"):
        defence = load_arrays(run_dir / DEFENCE)
        if digest_hex(weights_digest(defence)) != record["defence_digest"]:
            raise ValueError(f"{run_dir / DEFENCE} does not hash to the digest {record['defence_digest']} "
                             f"that {run_dir / STATE} records; the checkpoint cannot be trusted")
    return Checkpoint(int(record["round"]), weights, record["state"], record["manifest"],
                      {k: int(v) for k, v in record["sizes"].items()}, defence)


def truncate_to(run_dir: str | Path, checkpoint: Checkpoint) -> dict[str, int]:
    """Cut each append-only file back to its size at the checkpoint; returns the lines dropped
    per file (a file missing then is removed now)."""
    run_dir = Path(run_dir)
    dropped = {}
    for name in APPEND_ONLY:
        path = run_dir / name
        if not path.is_file():
            continue
        size = checkpoint.sizes.get(name)
        if size is None:
            dropped[name] = len(path.read_bytes().splitlines())
            path.unlink()
            continue
        with open(path, "r+b") as fh:
            tail = fh.read()[size:]
            fh.truncate(size)
        if tail:
            dropped[name] = len(tail.splitlines())
    return dropped
