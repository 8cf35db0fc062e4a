"""Everything a run folder holds, written and read in one place.

- :mod:`.folder`: the folder, its manifest and tidy tables, its lifecycle
  (:meth:`RunFolder.start`), and :func:`read_run`;
- :mod:`.recorder`: a federated run's round and node rows (the ground truth of who is malicious);
- :mod:`.trail` and :mod:`.blobs`: a ledger-backed run's audit trail and content-addressed store;
- :mod:`.provenance`: time, package versions, git commit.
"""

from bflsim.runfolder.blobs import BlobError, BlobStore, load_arrays, save_arrays
from bflsim.runfolder.folder import (
    CONFUSION,
    CONFUSION_COLUMNS,
    FIGURES,
    FINAL_MODEL,
    INTERRUPTED_MARK,
    MANIFEST,
    METRIC_COLUMNS,
    METRICS,
    STATUSES,
    Run,
    RunFolder,
    RunStopped,
    read_confusion,
    read_manifest,
    read_metrics,
    read_run,
)
from bflsim.runfolder.provenance import git_commit, package_versions, utc_now
from bflsim.runfolder.recorder import RoundRecorder, RoundStats
from bflsim.runfolder.trail import BLOBS, Trail, read_chain, read_rounds, read_transactions

__all__ = [
    "BLOBS",
    "CONFUSION",
    "CONFUSION_COLUMNS",
    "FIGURES",
    "FINAL_MODEL",
    "INTERRUPTED_MARK",
    "MANIFEST",
    "METRICS",
    "METRIC_COLUMNS",
    "STATUSES",
    "BlobError",
    "BlobStore",
    "RoundRecorder",
    "RoundStats",
    "Run",
    "RunFolder",
    "RunStopped",
    "Trail",
    "git_commit",
    "load_arrays",
    "package_versions",
    "read_chain",
    "read_confusion",
    "read_manifest",
    "read_metrics",
    "read_rounds",
    "read_run",
    "read_transactions",
    "save_arrays",
    "utc_now",
]
