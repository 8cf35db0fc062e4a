"""Known dataset files: where they live, their digests, where to fetch them.

The data directory mirrors ``shared/datasets``; each file may be stored plain or gzipped::

    <data dir>/nsl-kdd/KDDTrain+.txt[.gz]            KDDTest+, KDDTrain+_20Percent, KDDTest-21
    <data dir>/cic-ids2017/improved_rnd_5000/<Label>_<n>.csv[.gz]     16 files, one per label
    <data dir>/unsw-nb15/UNSW_NB15_training-set.csv[.gz]

The directory is chosen by :func:`resolve_data_dir`: an explicit argument (``data.data_dir``)
wins over ``$BFLSIM_DATA_DIR``, which wins over ``./data``.

Every file is registered with the sha256 of its *uncompressed* content, so a plain download
and a ``gzip -9 -n`` copy verify against the same digest. The digests, sizes and mirrors come
from the ``SOURCE.md`` records in ``shared/datasets``; the mirrors are pinned GitHub commits.

Datasets: NSL-KDD (Tavallaee et al., CISDA 2009); CIC-IDS2017 (Sharafaldin et al., ICISSP 2018)
in the improved re-extraction (Engelen et al., IEEE SPW 2021; Liu et al., IEEE CNS 2022);
UNSW-NB15 (Moustafa and Slay, MilCIS 2015).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from bflsim.data.errors import DataError

DATA_DIR_ENV = "BFLSIM_DATA_DIR"
DEFAULT_DATA_DIR = "data"


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


_NSL_ZIP = (
    "https://raw.githubusercontent.com/mekkheir/Dataset/"
    "33515a0cc85db4c22ca38258c7c7ed91b7b9675f/NSL_KDD.zip"
)
_NSL_RAW = (
    "https://raw.githubusercontent.com/lee191/AI_IDS/"
    "46efa7f0c8237621ec5e3fe2351bc0ee6099f7a7/NSL-KDD/"
)
_CIC_RAW = (
    "https://raw.githubusercontent.com/ScubaInstructor/fuh/"
    "86d1bab5ca174da11e20bc54d9642ba6068f273a/nids-daten/sampled_CICIDS2017_improved_rnd_5000/"
)
_UNSW_ZIP = (
    "https://raw.githubusercontent.com/akritiupadhyay-au/Cyber-Attack-Detection-with-Random-Forest/"
    "f666564e36db598d9e667bab58f97f955f095d99/UNSW_NB15_training-set.csv.zip"
)


def _nsl(name: str, size: int, sha256: str) -> DataFile:
    # The zip holds all four files in one 3.7 MB fetch; the raw files are the fallback.
    mirrors = (Mirror(_NSL_ZIP, member=name), Mirror(_NSL_RAW + quote(name)))
    return DataFile("nsl-kdd", f"nsl-kdd/{name}", sha256, size, mirrors)


def _cic(name: str, size: int, sha256: str) -> DataFile:
    relpath = f"cic-ids2017/improved_rnd_5000/{name}"
    return DataFile("cic-ids2017", relpath, sha256, size, (Mirror(_CIC_RAW + quote(name)),))


_FILES = (
    _nsl("KDDTrain+.txt", 19_109_424,
         "1b86d2f957b33082081bba410fe129b475efebcc13c9014c3f447c8271aadf95"),
    _nsl("KDDTest+.txt", 3_441_513,
         "fa46b0935342616aa83b7c2578db355b6a7aaabbc492248172c7a1e8b7ab8f84"),
    _nsl("KDDTrain+_20Percent.txt", 3_822_033,
         "7ea86479faab5ca2190b7f18b4982fb058ce5bf2b46e0e1017d0d9ef90f9c16e"),
    _nsl("KDDTest-21.txt", 1_814_092,
         "746993ac9e25868827cacf09eab450050a2a1056e1ce48a1ad39f5dc801d531d"),
    _cic("BENIGN_5000.csv", 2_761_079,
         "4eb03c14763fe5ff4f58e713e39ad930cfdec264e8d5262b4acd6df3227298ae"),
    _cic("Botnet_736.csv", 442_132,
         "55b49f70d1d7df13644a3d5f01abb742e35cda5d952ee43c737eaa38a1a6ea79"),
    _cic("DDoS_5000.csv", 3_312_061,
         "36eb4d2851997237b4b13e9f4c8175563d5236c784dcf7247b7b46b08dc62815"),
    _cic("DoS_GoldenEye_5000.csv", 3_573_908,
         "cb6f7b734168b643153cd45ce7f552e8b073b5b8a744c1a2a02763212d2cec6c"),
    _cic("DoS_Hulk_5000.csv", 3_257_105,
         "64789076d2559ce1e4bead0fcbe2b806de2b3c5cd97771705295cafd3ed0cfb7"),
    _cic("DoS_Slowhttptest_1740.csv", 1_171_369,
         "4159ba005254aa8b0a0c04b47844f2221369279eedf19308fa9875cc075f3534"),
    _cic("DoS_Slowloris_3859.csv", 2_430_078,
         "8114bfec656df7e8c4b9d539640ad3b01ad50794a2faa9fb0ccf5884ca03f157"),
    _cic("FTP-Patator_3972.csv", 2_720_284,
         "73355b1584316393ec7b367407db0e2914d18692eff3bd7b9cc91ed89daa8145"),
    _cic("Heartbleed_11.csv", 9_625,
         "bf610cc626325778dda3e54b431cc60142f6b8bffedb1f9b8a7f9481a673ea55"),
    _cic("Infiltration_-_Portscan_5000.csv", 2_052_366,
         "1a7a6a0906995f2eb6f2ea951b3d4ee024010e9e15783efb0a19c3c04876308d"),
    _cic("Infiltration_36.csv", 27_709,
         "3cd57b9cd7a7a9f7fa98f2c4d2147febafe551cc9d9b86a949a6947cda576beb"),
    _cic("Portscan_5000.csv", 1_946_889,
         "022a5885f6704f8c4ab0ef888b31e5ee1aef46b6c64fe6b3c039e51f93f31c96"),
    _cic("SSH-Patator_2961.csv", 2_055_181,
         "07319168e4435ea24439f64ece1dcf64ad1c2c58cce9e062e9cba757aea94709"),
    _cic("Web_Attack_-_Brute_Force_73.csv", 55_681,
         "d244df46f686a48ded36b0328ad14e80beee1c5560fede0e3f07cea02ee030d9"),
    _cic("Web_Attack_-_SQL_Injection_13.csv", 10_030,
         "aca6ed973bf1ace011a44ddfc3914393895828666314a018e7581e27343be1e0"),
    _cic("Web_Attack_-_XSS_18.csv", 14_577,
         "51ffc2d6d24497e11768b2b80beca3a15353d76c3e28f5c98affc24e8affb94e"),
    DataFile(
        "unsw-nb15", "unsw-nb15/UNSW_NB15_training-set.csv", size=15_380_800,
        sha256="734fe6642edf758f7c94d7d9149426b49d202fe8e7bf0bef47392489c3c0a559",
        mirrors=(Mirror(_UNSW_ZIP, member="UNSW_NB15_training-set.csv"),),
    ),
)

DATASET_FILES: dict[str, DataFile] = {f.relpath: f for f in _FILES}
"""Every known file, keyed by its path under the data directory (uncompressed name)."""

DATASETS: tuple[str, ...] = tuple(dict.fromkeys(f.dataset for f in _FILES))


def dataset_files(name: str) -> tuple[DataFile, ...]:
    """The registered files of one dataset, e.g. ``"nsl-kdd"``."""
    files = tuple(f for f in _FILES if f.dataset == name)
    if not files:
        raise DataError(f"unknown dataset {name!r}; known datasets: {list(DATASETS)}")
    return files


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


def require_file(relpath: str, data_dir: str | Path) -> tuple[Path, str]:
    """Find a registered file under ``data_dir`` and check its digest.

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
    spec = DATASET_FILES[relpath]
    data_dir = resolve_data_dir(data_dir)
    path = locate(relpath, data_dir)
    if path is None:
        raise DataError(
            f"missing data file {data_dir / relpath} (or the same name with .gz). The data "
            f"directory is data.data_dir if set, else ${DATA_DIR_ENV}, else ./data; point one "
            f"of them at the folder that holds {spec.dataset}/, or fetch the files with "
            f"`bflsim data --download {spec.dataset}`"
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
    """What :func:`data_report` found for one registered file."""

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


def data_report(
    data_dir: str | Path | None = None, *, datasets: tuple[str, ...] | None = None
) -> DataReport:
    """Check every registered file (or those of ``datasets``) under the data directory.

    Missing files and digest mismatches are reported, not raised.
    """
    resolved, chosen_by = _resolve_data_dir(data_dir)
    names = DATASETS if datasets is None else datasets
    statuses = []
    for name in names:
        for spec in dataset_files(name):
            statuses.append(_status(spec, resolved))
    return DataReport(resolved, chosen_by, tuple(statuses))


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
