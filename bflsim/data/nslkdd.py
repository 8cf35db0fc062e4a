"""NSL-KDD: the official KDDTrain+ / KDDTest+ text files.

M. Tavallaee, E. Bagheri, W. Lu, A. A. Ghorbani, "A Detailed Analysis of the KDD CUP 99
Data Set," IEEE CISDA 2009. Home: https://www.unb.ca/cic/datasets/nsl.html

Each file has no header and 43 comma-separated fields: 41 connection features, the attack
name (``label``) and the difficulty level, which is dropped. Attack names are grouped into
the usual five classes Normal / DoS / Probe / R2L / U2R, including the 17 names that occur
only in KDDTest+. The three text features are one-hot encoded over their full vocabulary
(3 protocols, 70 services, 11 flags, all of them seen in KDDTrain+), so every split yields the
same 122 features: 38 numeric + 84 one-hot.

The record :data:`NSL_KDD` pools KDDTrain+ (``split = "stratified"`` cuts all three splits
from it) and offers KDDTest+ as the official test set (``split = "official"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import quote

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bflsim.config import DataConfig
from bflsim.data.base import Dataset, LabelledTable
from bflsim.data.errors import DataError
from bflsim.data.registry import DataFile, Mirror, require_file

COLUMNS = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
    "label", "difficulty",
)

PROTOCOLS = ("icmp", "tcp", "udp")
SERVICES = (
    "IRC", "X11", "Z39_50", "aol", "auth", "bgp", "courier", "csnet_ns", "ctf", "daytime",
    "discard", "domain", "domain_u", "echo", "eco_i", "ecr_i", "efs", "exec", "finger", "ftp",
    "ftp_data", "gopher", "harvest", "hostnames", "http", "http_2784", "http_443", "http_8001",
    "imap4", "iso_tsap", "klogin", "kshell", "ldap", "link", "login", "mtp", "name",
    "netbios_dgm", "netbios_ns", "netbios_ssn", "netstat", "nnsp", "nntp", "ntp_u", "other",
    "pm_dump", "pop_2", "pop_3", "printer", "private", "red_i", "remote_job", "rje", "shell",
    "smtp", "sql_net", "ssh", "sunrpc", "supdup", "systat", "telnet", "tftp_u", "tim_i", "time",
    "urh_i", "urp_i", "uucp", "uucp_path", "vmnet", "whois",
)
FLAGS = ("OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH")
CATEGORIES = {"protocol_type": PROTOCOLS, "service": SERVICES, "flag": FLAGS}

NORMAL = "Normal"
_GROUPS = {
    "DoS": ("back", "land", "neptune", "pod", "smurf", "teardrop", "apache2", "udpstorm",
            "processtable", "mailbomb", "worm"),
    "Probe": ("satan", "ipsweep", "nmap", "portsweep", "mscan", "saint"),
    "R2L": ("guess_passwd", "ftp_write", "imap", "phf", "multihop", "warezmaster",
            "warezclient", "spy", "xlock", "xsnoop", "snmpguess", "snmpgetattack", "httptunnel",
            "sendmail", "named"),
    "U2R": ("buffer_overflow", "loadmodule", "rootkit", "perl", "sqlattack", "xterm", "ps"),
}
ATTACK_CATEGORY: dict[str, str] = {"normal": NORMAL} | {
    name: group for group, names in _GROUPS.items() for name in names
}
"""Every NSL-KDD label (attack name or ``normal``) -> its class: Normal, DoS, Probe, R2L, U2R."""

_ZIP = (
    "https://raw.githubusercontent.com/mekkheir/Dataset/"
    "33515a0cc85db4c22ca38258c7c7ed91b7b9675f/NSL_KDD.zip"
)
_RAW = (
    "https://raw.githubusercontent.com/lee191/AI_IDS/"
    "46efa7f0c8237621ec5e3fe2351bc0ee6099f7a7/NSL-KDD/"
)


def _file(name: str, size: int, sha256: str) -> DataFile:
    # The zip holds all four files in one 3.7 MB fetch; the raw files are the fallback.
    mirrors = (Mirror(_ZIP, member=name), Mirror(_RAW + quote(name)))
    return DataFile("nsl-kdd", f"nsl-kdd/{name}", sha256, size, mirrors)


KDD_TRAIN = _file("KDDTrain+.txt", 19_109_424,
                  "1b86d2f957b33082081bba410fe129b475efebcc13c9014c3f447c8271aadf95")
KDD_TEST = _file("KDDTest+.txt", 3_441_513,
                 "fa46b0935342616aa83b7c2578db355b6a7aaabbc492248172c7a1e8b7ab8f84")
FILES = (
    KDD_TRAIN,
    KDD_TEST,
    _file("KDDTrain+_20Percent.txt", 3_822_033,
          "7ea86479faab5ca2190b7f18b4982fb058ce5bf2b46e0e1017d0d9ef90f9c16e"),
    _file("KDDTest-21.txt", 1_814_092,
          "746993ac9e25868827cacf09eab450050a2a1056e1ce48a1ad39f5dc801d531d"),
)
"""The registered NSL-KDD files; the loaders read KDDTrain+ and KDDTest+."""


def load_nslkdd(data_dir: str | Path, which: Literal["train", "test"]) -> LabelledTable:
    """Load KDDTrain+ or KDDTest+ from the data directory, verified, labels grouped in 5 classes."""
    path, digest = require_file(KDD_TRAIN if which == "train" else KDD_TEST, data_dir)
    frame = read_nslkdd(path)
    labels = frame.pop("label").to_numpy(dtype=str)
    return LabelledTable(
        frame,
        categorize(labels, source=str(path)),
        dict(CATEGORIES),
        normal_label=NORMAL,
        sources=((str(path), digest),),
        name="KDDTrain+" if which == "train" else "KDDTest+",
    )


def read_nslkdd(path: str | Path) -> pd.DataFrame:
    """Read one NSL-KDD text file: the 41 features and the raw ``label``; difficulty dropped."""
    text = {name: str for name in ("protocol_type", "service", "flag", "label")}
    try:
        frame = pd.read_csv(path, header=None, names=list(COLUMNS), dtype=text)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(
            f"{path}: not an NSL-KDD file with {len(COLUMNS)} fields per row ({err})"
        ) from err
    short = frame["difficulty"].isna().to_numpy()
    if short.any():
        raise DataError(
            f"{path}: line {int(np.flatnonzero(short)[0]) + 1} has fewer than {len(COLUMNS)} "
            f"comma-separated fields; expected the NSL-KDD layout "
            f"{COLUMNS[0]}, ..., label, difficulty"
        )
    return frame.drop(columns="difficulty")


def categorize(labels: NDArray, *, source: str = "NSL-KDD") -> NDArray[np.str_]:
    """Map raw NSL-KDD labels (``neptune``, ``normal``, ...) to their five classes."""
    names, inverse = np.unique(np.char.rstrip(np.char.strip(labels.astype(str)), "."),
                               return_inverse=True)
    unknown = [name for name in names if name not in ATTACK_CATEGORY]
    if unknown:
        raise DataError(
            f"{source}: unknown NSL-KDD label {unknown[0]!r}"
            f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; "
            f"expected 'normal' or one of the {len(ATTACK_CATEGORY) - 1} known attack names"
        )
    grouped = np.array([ATTACK_CATEGORY[name] for name in names], dtype=str)
    return grouped[inverse]


def load_kdd_train(config: DataConfig, data_dir: Path) -> LabelledTable:
    """The training pool: KDDTrain+ (the ``[data]`` settings do not change what is read)."""
    return load_nslkdd(data_dir, "train")


def load_kdd_test(config: DataConfig, data_dir: Path) -> LabelledTable:
    """The official test set: KDDTest+, with 17 attack names that KDDTrain+ lacks."""
    return load_nslkdd(data_dir, "test")


NSL_KDD = Dataset(
    name="nsl-kdd",
    label="NSL-KDD",
    load=load_kdd_train,
    load_official_test=load_kdd_test,
    official_protocol="KDDTrain+ / KDDTest+",
    files=FILES,
    reference="M. Tavallaee, E. Bagheri, W. Lu, A. A. Ghorbani, \"A Detailed Analysis of the "
              "KDD CUP 99 Data Set,\" IEEE CISDA 2009",
)
