"""Everything a run folder holds, written and read in one place.

- :mod:`.folder`: the folder, its manifest and tidy tables, its lifecycle
  (:meth:`RunFolder.start`, :meth:`RunFolder.resume`), and :func:`read_run`;
- :mod:`.lifecycle`: who may write a folder, whether a ``running`` run's process lives
  (:func:`effective_status`), signals as :class:`RunInterrupted`;
- :mod:`.checkpoint`: what resuming after a round needs;
- :mod:`.recorder`: a federated run's round and node rows (the ground truth of who is malicious);
- :mod:`.trail` and :mod:`.blobs`: a ledger-backed run's audit trail and content-addressed store;
- :mod:`.provenance`: time, package versions, git commit.
"""

from bflsim.runfolder.blobs import BlobError, BlobStore, load_arrays, save_arrays
from bflsim.runfolder.checkpoint import Checkpoint, read_checkpoint, reference_path
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
from bflsim.runfolder.lifecycle import (
    RunInterrupted,
    StaleWriter,
    descendants,
    effective_status,
    exit_code,
    raise_on_signals,
    status_line,
    stop_leftovers,
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
    "Checkpoint",
    "RoundRecorder",
    "RoundStats",
    "Run",
    "RunFolder",
    "RunInterrupted",
    "RunStopped",
    "StaleWriter",
    "Trail",
    "descendants",
    "effective_status",
    "exit_code",
    "git_commit",
    "load_arrays",
    "package_versions",
    "raise_on_signals",
    "read_chain",
    "read_checkpoint",
    "read_confusion",
    "read_manifest",
    "read_metrics",
    "read_rounds",
    "read_run",
    "read_transactions",
    "reference_path",
    "save_arrays",
    "status_line",
    "stop_leftovers",
    "utc_now",
]
