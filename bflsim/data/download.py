"""Fetch the registered public files into the data directory, verified.

Each file is written to a hidden temporary name beside its target, its (decompressed) sha256
is checked against the registry, and only then is it renamed into place: a failed or
tampered download leaves nothing behind. Only :mod:`urllib` is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

from bflsim.data.datasets import FILE_SETS, dataset_files
from bflsim.data.errors import DataError
from bflsim.data.registry import (
    DataFile,
    Mirror,
    hash_stream,
    locate,
    resolve_data_dir,
    sha256_of,
)

_CHUNK = 1 << 20


def download_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    base_urls: Sequence[str] | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fetch every registered file of dataset ``name`` and store it under ``data_dir``.

    Parameters
    ----------
    name
        A file set of :data:`~bflsim.data.FILE_SETS` (``"nsl-kdd"``, ``"cic-ids2017"``,
        ``"unsw-nb15"``) or ``"all"``.
    data_dir
        Where to store; resolved like :func:`resolve_data_dir`.
    base_urls
        Mirrors laid out like the data directory, tried in order instead of the public
        sources: a file is fetched from ``<base>/<relpath>``, then ``<base>/<relpath>.gz``.
    timeout
        Seconds to wait on each connection.
    log
        Called with one line per file fetched or kept (e.g. ``print``).

    Returns
    -------
    list[Path]
        The stored path of every file of the dataset, in registry order. Files already
        present and verified are kept as they are.

    Raises
    ------
    DataError
        Unknown dataset, a present file that fails its checksum, or a file that no source
        could deliver with the right digest (every attempt is listed).
    """
    names = tuple(FILE_SETS) if name == "all" else (name,)
    files = [spec for dataset in names for spec in dataset_files(dataset)]
    root = resolve_data_dir(data_dir)
    say = log or (lambda line: None)
    paths = []
    with tempfile.TemporaryDirectory(prefix="bflsim-download-") as scratch:
        archives: dict[str, Path] = {}
        for spec in files:
            present = locate(spec.relpath, root)
            if present is not None:
                if sha256_of(present) != spec.sha256:
                    raise DataError(
                        f"{present} exists but fails its checksum (expected sha256 "
                        f"{spec.sha256}); delete it and download again"
                    )
                say(f"kept {present} (verified)")
                paths.append(present)
                continue
            mirrors = _mirror_urls(spec, base_urls) if base_urls else spec.mirrors
            path = _fetch_first(spec, mirrors, root, Path(scratch), archives, timeout)
            say(f"fetched {path}")
            paths.append(path)
    return paths


def fetch_file(
    spec: DataFile,
    data_dir: str | Path | None = None,
    *,
    mirrors: Sequence[Mirror] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch one file from ``mirrors`` (default: its registered ones), verify it, store it.

    Always downloads, replacing a stored copy of the same name only once the new one verifies.
    """
    root = resolve_data_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="bflsim-download-") as scratch:
        chosen = spec.mirrors if mirrors is None else mirrors
        return _fetch_first(spec, chosen, root, Path(scratch), {}, timeout)


def _mirror_urls(spec: DataFile, base_urls: Sequence[str]) -> tuple[Mirror, ...]:
    quoted = quote(spec.relpath)
    return tuple(
        Mirror(f"{base.rstrip('/')}/{quoted}{suffix}")
        for base in base_urls
        for suffix in ("", ".gz")
    )


def _fetch_first(
    spec: DataFile,
    mirrors: Sequence[Mirror],
    root: Path,
    scratch: Path,
    archives: dict[str, Path],
    timeout: float,
) -> Path:
    failures = []
    for mirror in mirrors:
        try:
            return _fetch(spec, mirror, root, scratch, archives, timeout)
        except (OSError, DataError, zipfile.BadZipFile) as err:
            member = f" [{mirror.member}]" if mirror.member else ""
            failures.append(f"  {mirror.url}{member}: {err}")
    raise DataError(
        f"could not download {spec.relpath}; every source failed:\n" + "\n".join(failures)
    )


def _fetch(
    spec: DataFile,
    mirror: Mirror,
    root: Path,
    scratch: Path,
    archives: dict[str, Path],
    timeout: float,
) -> Path:
    gzipped = mirror.member is None and mirror.url.endswith(".gz")
    target = root / (spec.relpath + (".gz" if gzipped else ""))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                         dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            if mirror.member is None:
                _copy_url(mirror.url, out, timeout)
            else:
                archive = archives.get(mirror.url)
                if archive is None:
                    archive = scratch / f"archive-{len(archives)}.zip"
                    with open(archive, "wb") as zip_out:
                        _copy_url(mirror.url, zip_out, timeout)
                    archives[mirror.url] = archive
                _copy_member(archive, mirror.member, out)
        actual = hash_stream(temp, gzipped=gzipped)
        if actual != spec.sha256:
            raise DataError(
                f"checksum mismatch: expected sha256 {spec.sha256}, got {actual}; file discarded"
            )
        os.replace(temp, target)
        return target
    finally:
        temp.unlink(missing_ok=True)


def _copy_url(url: str, out, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)
    except urllib.error.HTTPError as err:
        raise DataError(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise DataError(f"cannot connect: {err.reason}") from err


def _copy_member(archive: Path, member: str, out) -> None:
    """Copy the archive entry whose file name (ignoring folders) is ``member``."""
    with zipfile.ZipFile(archive) as bundle:
        matches = [n for n in bundle.namelist() if n.rsplit("/", 1)[-1] == member]
        if not matches:
            raise DataError(f"the archive holds no file named {member!r}")
        with bundle.open(matches[0]) as entry:
            shutil.copyfileobj(entry, out, _CHUNK)
