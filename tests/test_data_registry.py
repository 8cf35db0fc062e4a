"""Dataset registry: data directory, checksums of the real files, report, verified download.

Real files come from $BFLSIM_DATA_DIR (CI: ../shared/datasets); a missing file fails the
test with the loader's own message, it is never skipped.
"""

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from bflsim.data import (
    DATA_DIR_ENV,
    DATASET_FILES,
    DataError,
    DataFile,
    Mirror,
    data_report,
    download_dataset,
    fetch_file,
    registry,
    resolve_data_dir,
    sha256_of,
    verify_file,
)
from bflsim.data.registry import require_file

SMALL_FILE = "cic-ids2017/improved_rnd_5000/Heartbleed_11.csv"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = resolve_data_dir()
    if not path.is_dir():
        pytest.fail(
            f"data directory {path} not found: set ${DATA_DIR_ENV} to the shared datasets "
            f"(e.g. ../shared/datasets) or run `bflsim data --download all`"
        )
    return path


@pytest.fixture
def serve():
    """Start HTTP servers on 127.0.0.1 (free port) for folders; shut them all down after."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _decompressed_copy(data_dir: Path, relpath: str, target: Path) -> Path:
    source = registry.locate(relpath, data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if source.name.endswith(".gz") else open
    with opener(source, "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    return target


# --- data directory -----------------------------------------------------------------------


def test_data_dir_is_explicit_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)

    explicit = resolve_data_dir(tmp_path / "explicit")
    from_env = resolve_data_dir()
    monkeypatch.delenv(DATA_DIR_ENV)
    default = resolve_data_dir()

    assert explicit == tmp_path / "explicit"
    assert from_env == tmp_path / "from-env"
    assert default == tmp_path / "data"


# --- checksums of the real files ------------------------------------------------------------


def test_every_registered_file_in_the_data_dir_verifies(data_dir):
    report = data_report(data_dir)

    assert [s.file.relpath for s in report.files] == list(DATASET_FILES)
    assert {s.state for s in report.files} == {"ok"}, str(report)
    assert report.ok


def test_registry_digests_are_of_the_uncompressed_content(data_dir, tmp_path):
    plain = _decompressed_copy(data_dir, SMALL_FILE, tmp_path / SMALL_FILE)

    assert sha256_of(plain) == DATASET_FILES[SMALL_FILE].sha256
    assert plain.stat().st_size == DATASET_FILES[SMALL_FILE].size
    assert require_file(DATASET_FILES[SMALL_FILE], tmp_path) == (plain, DATASET_FILES[SMALL_FILE].sha256)


def test_verification_is_cached_per_path_size_and_mtime(data_dir, tmp_path, monkeypatch):
    plain = _decompressed_copy(data_dir, SMALL_FILE, tmp_path / "copy.csv")
    calls = []
    real_hash = registry.hash_stream
    def counting_hash(*args, **kwargs):
        calls.append(args)
        return real_hash(*args, **kwargs)

    monkeypatch.setattr(registry, "hash_stream", counting_hash)

    first = sha256_of(plain)
    second = sha256_of(plain)
    plain.write_bytes(plain.read_bytes() + b"\n")
    third = sha256_of(plain)

    assert first == second != third
    assert len(calls) == 2


def test_altered_byte_is_a_checksum_mismatch_naming_file_and_digests(data_dir, tmp_path):
    copy = _decompressed_copy(data_dir, SMALL_FILE, tmp_path / SMALL_FILE)
    content = bytearray(copy.read_bytes())
    content[100] ^= 0x01
    copy.write_bytes(bytes(content))
    spec = DATASET_FILES[SMALL_FILE]

    with pytest.raises(DataError) as caught:
        verify_file(copy, spec)
    report = data_report(tmp_path, datasets=("cic-ids2017",))

    message = str(caught.value)
    assert str(copy) in message and "checksum mismatch" in message
    assert spec.sha256 in message and sha256_of(copy) in message
    states = {s.file.relpath: s.state for s in report.files}
    assert states[SMALL_FILE] == "mismatch"
    assert states["cic-ids2017/improved_rnd_5000/BENIGN_5000.csv"] == "missing"
    assert "MISMATCH" in str(report) and "--download cic-ids2017" in str(report)


def test_missing_file_names_path_env_var_and_download_command(tmp_path):
    with pytest.raises(DataError) as caught:
        require_file(DATASET_FILES["nsl-kdd/KDDTrain+.txt"], tmp_path)

    message = str(caught.value)
    assert str(tmp_path / "nsl-kdd/KDDTrain+.txt") in message
    assert DATA_DIR_ENV in message
    assert "bflsim data --download nsl-kdd" in message


def test_corrupt_gzip_is_a_data_error(tmp_path):
    broken = tmp_path / "nsl-kdd" / "KDDTest+.txt.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not gzip at all")

    with pytest.raises(DataError, match="not a readable gzip file"):
        require_file(DATASET_FILES["nsl-kdd/KDDTest+.txt"], tmp_path)
    assert data_report(tmp_path, datasets=("nsl-kdd",)).files[1].state == "unreadable"


def test_report_says_where_it_looks(tmp_path):
    report = data_report(tmp_path)

    assert str(tmp_path) in str(report).splitlines()[0]
    assert not report.ok and {s.state for s in report.files} == {"missing"}


def test_unknown_dataset_name_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'kdd99'"):
        download_dataset("kdd99", tmp_path)


# --- download against a local HTTP server ---------------------------------------------------


def test_download_from_a_mirror_verifies_and_stores_the_layout(data_dir, serve, tmp_path):
    base_url = serve(data_dir)  # the real files, gzipped, laid out like the data dir
    target = tmp_path / "data"

    paths = download_dataset("nsl-kdd", target, base_urls=[base_url])
    again = download_dataset("nsl-kdd", target, base_urls=["http://127.0.0.1:9/unused"])

    expected = [f for f in DATASET_FILES.values() if f.dataset == "nsl-kdd"]
    stored = [p.relative_to(target).as_posix() for p in paths]
    assert stored == [f.relpath + ".gz" for f in expected]
    assert all(sha256_of(p) == f.sha256 for p, f in zip(paths, expected, strict=True))
    assert again == paths  # present and verified: kept, nothing fetched
    assert data_report(target, datasets=("nsl-kdd",)).ok
    assert not [p for p in _files_under(target) if p.name.endswith(".part")]


def test_download_with_wrong_digest_is_rejected_and_leaves_nothing(serve, tmp_path):
    mirror = tmp_path / "mirror"
    fake = mirror / "nsl-kdd" / "KDDTrain+.txt"
    fake.parent.mkdir(parents=True)
    fake.write_text("0,tcp,http,SF,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,1,1,1,0,0,"
                    "0,0,0,0,0,normal,21\n")
    target = tmp_path / "data"

    with pytest.raises(DataError) as caught:
        download_dataset("nsl-kdd", target, base_urls=[serve(mirror)])

    message = str(caught.value)
    assert "nsl-kdd/KDDTrain+.txt" in message and "checksum mismatch" in message
    assert DATASET_FILES["nsl-kdd/KDDTrain+.txt"].sha256 in message
    assert "HTTP 404" in message  # the .gz alternative was tried as well
    assert _files_under(target) == []


def test_fetch_extracts_a_member_of_a_zip_archive(serve, tmp_path):
    content = b"a,b,label\n1,2,normal\n"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "bundle.zip", "w") as bundle:
        bundle.writestr("inner/flows.csv", content)
        bundle.writestr("inner/other.csv", b"x\n")
    spec = DataFile("toy", "toy/flows.csv", sha256=_sha(content), size=len(content), mirrors=())
    base_url = serve(mirror)

    path = fetch_file(spec, tmp_path / "data", mirrors=[
        Mirror(f"{base_url}/missing.zip", member="flows.csv"),
        Mirror(f"{base_url}/bundle.zip", member="flows.csv"),
    ])

    assert path == tmp_path / "data" / "toy" / "flows.csv"
    assert path.read_bytes() == content


def test_download_that_cannot_connect_lists_every_attempt(tmp_path):
    spec = DataFile("toy", "toy/flows.csv", sha256="0" * 64, size=1, mirrors=())

    with pytest.raises(DataError) as caught:
        fetch_file(spec, tmp_path, mirrors=[Mirror("http://127.0.0.1:9/a.csv"),
                                            Mirror("http://127.0.0.1:9/b.csv")], timeout=5)

    assert "a.csv" in str(caught.value) and "b.csv" in str(caught.value)
    assert _files_under(tmp_path) == []


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
