"""Registered data files: where they live, how they are verified, the report of their state.

The data directory mirrors ``shared/datasets``; each file may be stored plain or gzipped::

    <data dir>/nsl-kdd/KDDTrain+.txt[.gz]            KDDTest+, KDDTrain+_20Percent, KDDTest-21
    <data dir>/cic-ids2017/improved_rnd_5000/<Label>_<n>.csv[.gz]     16 files, one per label
    <data dir>/unsw-nb15/UNSW_NB15_training-set.csv[.gz]

The directory is chosen by :func:`resolve_data_dir`: an explicit argument wins over
``$BFLSIM_DATA_DIR``, which wins over ``./data``. For a run the explicit argument is
``--data-dir`` if given, else the experiment's ``data.data_dir``
(:func:`bflsim.data.run_data_dir`); :data:`LOOKUP_ORDER` says so in messages.

Every file is registered with the sha256 of its *uncompressed* content, so a plain download
and a ``gzip -9 -n`` copy verify against the same digest. The digests, sizes and mirrors come
from the ``SOURCE.md`` records in ``shared/datasets``; the mirrors are pinned GitHub commits.
This module holds the mechanics only; each dataset module declares its own files
(``nslkdd.FILES``, ``cicids2017.FILES``, ``unswnb15.FILES``) and :mod:`bflsim.data.datasets`
collects them in ``DATASET_FILES`` and ``FILE_SETS``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bflsim.data.errors import DataError

DATA_DIR_ENV = "BFLSIM_DATA_DIR"
DEFAULT_DATA_DIR = "data"
LOOKUP_ORDER = (
    f"--data-dir if given, else data.data_dir of the experiment (relative to its file), "
    f"else ${DATA_DIR_ENV}, else ./{DEFAULT_DATA_DIR}"
)


@dataclass(frozen=True)
class Mirror:
    """A public URL for a file; ``member`` names the file inside a zip archive at ``url``."""

    url: str
    member: str | None = None


@dataclass(frozen=True)
class DataFile:
    """One registered file: its place under the data directory and its expected content."""

    dataset: str
    relpath: str  # uncompressed name, "/"-separated; "<relpath>.gz" is accepted too
    sha256: str  # of the uncompressed content
    size: int  # uncompressed bytes
    mirrors: tuple[Mirror, ...]


# --- where the data lives -------------------------------------------------------------


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: ``explicit`` if given, else ``$BFLSIM_DATA_DIR``, else ``./data``.

    The path is made absolute (against the current directory) but need not exist.
    """
    return _resolve_data_dir(explicit)[0]


def _resolve_data_dir(explicit: str | Path | None) -> tuple[Path, str]:
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser().absolute(), "given explicitly"
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser().absolute(), f"from ${DATA_DIR_ENV}"
    return Path(DEFAULT_DATA_DIR).absolute(), f"default ./{DEFAULT_DATA_DIR}; ${DATA_DIR_ENV} unset"


def locate(relpath: str, data_dir: str | Path) -> Path | None:
    """The stored copy of ``relpath`` under ``data_dir``, plain preferred over ``.gz``; or None."""
    plain = Path(data_dir) / relpath
    for candidate in (plain, plain.with_name(plain.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


# --- checksums --------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | Path) -> str:
    """sha256 of a file's content, decompressed first when the name ends in ``.gz``.

    The bytes are streamed. The digest is cached for the process, keyed by
    (absolute path, size, mtime), so checking the same unchanged file again is free.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = hash_stream(path, gzipped=path.name.endswith(".gz"))
    return _DIGESTS[key]


def hash_stream(path: Path, *, gzipped: bool) -> str:
    """sha256 of the (decompressed) bytes of ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from err
    return digest.hexdigest()


def require_file(spec: DataFile, data_dir: str | Path) -> tuple[Path, str]:
    """Find the file ``spec`` registers under ``data_dir`` and check its digest.

    Returns
    -------
    (path, sha256)
        Where the file was found and its verified digest.

    Raises
    ------
    DataError
        The file is missing (the message says where bflsim looked and how to fetch it), or
        its content does not match the registered sha256.
    """
    data_dir = resolve_data_dir(data_dir)
    path = locate(spec.relpath, data_dir)
    if path is None:
        env = os.environ.get(DATA_DIR_ENV, "")
        raise DataError(
            f"missing data file {data_dir / spec.relpath} (or the same name with .gz). The data "
            f"directory is {LOOKUP_ORDER} (${DATA_DIR_ENV} is "
            f"{repr(env) if env else 'unset'}); point one of them at the folder that holds "
            f"{spec.dataset}/, or fetch the files with `bflsim data --download {spec.dataset}`"
        )
    verify_file(path, spec)
    return path, spec.sha256


def verify_file(path: str | Path, spec: DataFile) -> None:
    """Raise :class:`DataError` unless ``path`` holds exactly the content registered in ``spec``."""
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise DataError(
            f"{path}: checksum mismatch for {spec.relpath}: expected sha256 {spec.sha256}, "
            f"got {actual}. The file is damaged or not the registered release; delete it and "
            f"run `bflsim data --download {spec.dataset}`"
        )


# --- report -----------------------------------------------------------------------------

FileState = Literal["ok", "missing", "mismatch", "unreadable"]


@dataclass(frozen=True)
class FileStatus:
    """What :func:`report_files` found for one registered file."""

    file: DataFile
    path: Path | None  # where it was found, None when missing
    state: FileState
    detail: str = ""  # the actual digest on a mismatch, the error when unreadable


@dataclass(frozen=True)
class DataReport:
    """Where bflsim looks for data and the state of every registered file.

    ``str(report)`` is a table for the ``bflsim data`` command.
    """

    data_dir: Path
    chosen_by: str
    files: tuple[FileStatus, ...]

    @property
    def ok(self) -> bool:
        """True when every listed file is present and verified."""
        return all(status.state == "ok" for status in self.files)

    def dataset_ok(self, name: str) -> bool:
        """True when every file of dataset ``name`` is present and verified."""
        return all(s.state == "ok" for s in self.files if s.file.dataset == name)

    def __str__(self) -> str:
        lines = [f"data directory: {self.data_dir} ({self.chosen_by})"]
        width = max((len(s.file.relpath) for s in self.files), default=0) + 3
        for status in self.files:
            shown = status.file.relpath + (".gz" if _is_gz(status.path) else "")
            state = status.state if status.state == "ok" else status.state.upper()
            if status.state == "mismatch":
                state += f" (expected {status.file.sha256[:16]}..., got {status.detail[:16]}...)"
            elif status.state == "unreadable":
                state += f" ({status.detail})"
            lines.append(f"  {shown:<{width}} {state}")
        broken = sorted({s.file.dataset for s in self.files if s.state != "ok"})
        for dataset in broken:
            lines.append(f"{dataset}: incomplete; fetch it with `bflsim data --download {dataset}`")
        if not broken:
            lines.append("all files present and verified")
        return "\n".join(lines)


def _is_gz(path: Path | None) -> bool:
    return path is not None and path.name.endswith(".gz")


def report_files(files: Iterable[DataFile], data_dir: str | Path | None = None) -> DataReport:
    """Check ``files`` under the data directory, in order (``bflsim.data.data_report`` picks them).

    Missing files and digest mismatches are reported, not raised.
    """
    resolved, chosen_by = _resolve_data_dir(data_dir)
    return DataReport(resolved, chosen_by, tuple(_status(spec, resolved) for spec in files))


def _status(spec: DataFile, data_dir: Path) -> FileStatus:
    path = locate(spec.relpath, data_dir)
    if path is None:
        return FileStatus(spec, None, "missing")
    try:
        actual = sha256_of(path)
    except (OSError, DataError) as err:
        return FileStatus(spec, path, "unreadable", str(err))
    if actual != spec.sha256:
        return FileStatus(spec, path, "mismatch", actual)
    return FileStatus(spec, path, "ok")
