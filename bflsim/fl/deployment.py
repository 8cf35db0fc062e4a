"""Credentials for Flower's deployment engine: a SuperLink and SuperNodes on real devices.

Flower's SuperLink serves its Fleet, Control and Runtime APIs over one TLS port; each
SuperNode (an edge device) connects to it and runs the ClientApp of every run. This module
makes what the two sides hold, as Flower's guides "Enable TLS connections" and "Authenticate
SuperNodes" describe them, with the ``cryptography`` package (no ``openssl`` needed):

- the operator's TLS files (:func:`make_tls_files`): a self-signed CA, and a server
  certificate it signs for the SuperLink's host names and addresses. The SuperLink gets all
  three (``--ssl-ca-certfile --ssl-certfile --ssl-keyfile``); every SuperNode and every
  ``flwr`` user gets the CA certificate only (``--root-certificates`` / ``root-certificates``);
- a device's Flower key pair (:func:`make_node_auth_key`): an EC key on NIST P-384 in OpenSSH
  format. The device keeps the private key (``--auth-supernode-private-key``); the operator
  registers the public key (``flwr supernode register KEY.pub CONNECTION``) with a SuperLink
  started with ``--enable-supernode-auth``, which then refuses every unregistered key;
- a device's chain key (:func:`export_chain_key`): the secp256k1 key (a file of 64 hex
  digits, mode 0600) that the experiment's ``ledger.key_source`` gives its edge node, which
  the operator hands to that device alone. The device signs its own ``registerData`` and
  ``submitUpdate`` transactions with it; its ClientApp reads it from its node config
  (``chain-key-file``, :func:`node_settings`) and needs neither the key secret nor the
  keystore. The registry enrols the addresses of ``ledger.key_source``, so the operator can
  still derive every key; keys that only the devices ever see would need the registry to enrol
  addresses the devices report, which it cannot yet.

Each SuperNode learns which edge node it is from its node config
(``--node-config "partition-id=3 num-partitions=10"``): :func:`node_settings` reads and checks
it against the experiment.

``python -m bflsim.fl.deployment tls DIR --host HOST`` (the operator), ``... node DIR`` (a
device) and ``... chain-key EXPERIMENT NODE FILE`` (the operator, for each device) write these
files; the README's "Real devices" section has the whole procedure.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bflsim.config import ConfigError, ExperimentConfig

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
CHAIN_KEY_FILE = "chain-key-file"
DATA_DIR = "data-dir"
NODE_CONFIG_KEYS = (PARTITION_ID, NUM_PARTITIONS, CHAIN_KEY_FILE, DATA_DIR)

_LOOPBACK = ("127.0.0.1", "localhost")


# --- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """The operator's TLS files: the CA certificate (for everyone), the SuperLink's
    certificate and private key (for the SuperLink only)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def superlink_args(self) -> list[str]:
        """``flower-superlink`` arguments that serve TLS with these files."""
        return ["--ssl-ca-certfile", str(self.ca_cert), "--ssl-certfile", str(self.server_cert),
                "--ssl-keyfile", str(self.server_key)]


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to a new file ``path`` created with ``mode`` (never widened later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return path


def _subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_tls_files(folder: str | Path, hosts: Sequence[str] = _LOOPBACK, *, days: int = 365) -> TlsFiles:
    """A self-signed CA and a server certificate it signs for ``hosts`` (names or IP
    addresses: the certificate's subject alternative names), in ``folder``.

    Writes ``ca.crt``, ``server.pem`` and ``server.key`` (mode 0600); the CA's own private key
    is not kept, so no other certificate can be issued under this CA later.
    """
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    folder = Path(folder)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bflsim SuperLink CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TlsFiles(
        ca_cert=_write(folder / "ca.crt", ca_cert.public_bytes(pem)),
        server_cert=_write(folder / "server.pem", server_cert.public_bytes(pem)),
        server_key=_write(folder / "server.key", server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600),
    )


# --- a device's keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAuthKey:
    """A SuperNode's Flower authentication key pair (OpenSSH format, NIST P-384)."""

    private_key: Path
    public_key: Path


def make_node_auth_key(folder: str | Path, name: str = "supernode") -> NodeAuthKey:
    """Write ``name`` (private, mode 0600) and ``name.pub`` (to register) into ``folder``."""
    key = ec.generate_private_key(ec.SECP384R1())
    ssh = serialization.Encoding.OpenSSH
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(ssh, serialization.PublicFormat.OpenSSH) + f" {name}\n".encode()
    folder = Path(folder)
    return NodeAuthKey(_write(folder / name, private, 0o600), _write(folder / f"{name}.pub", public))


def export_chain_key(config: ExperimentConfig, node: int, path: str | Path) -> str:
    """Write edge node ``node``'s chain key, as the experiment's ``ledger.key_source`` gives it,
    to ``path`` (64 hex digits, mode 0600; an existing file is refused) for its device, and
    return the address the registry enrols for it.

    The operator runs this once per device and hands each device its own file only: with
    ``key_source = "env"`` the secret stays with the operator, and no device holds another
    device's key.
    """
    from bflsim.ledger.identity import node_identities

    num_nodes = config.federation.num_nodes
    if not 0 <= node < num_nodes:
        raise ConfigError(f"edge node {node} does not exist: federation.num_nodes = {num_nodes}")
    if not config.ledger.enabled:
        raise ConfigError("ledger.backend = 'none': the experiment registers nothing, so its nodes need no chain key")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; a chain key is never overwritten")
    try:
        identity = node_identities(config)[node]
    except ValueError as err:  # env: the secret is missing or too short
        raise ConfigError(str(err)) from err
    _write(path, (identity.private_key.hex() + "\n").encode(), 0o600)
    return identity.address


def read_chain_key(path: str | Path) -> bytes:
    """The secp256k1 private key in ``path``: 64 hex digits (``0x`` allowed), a file that only
    its owner can read (mode 0600 or stricter)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"node config {CHAIN_KEY_FILE}: no key file {path}")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"node config {CHAIN_KEY_FILE}: {path} is readable by others "
                          f"(mode {path.stat().st_mode & 0o777:o}); `chmod 600 {path}`")
    from bflsim.ledger.identity import parse_private_key

    key = parse_private_key(path.read_text())
    if key is None:
        raise ConfigError(f"node config {CHAIN_KEY_FILE}: {path} must hold a secp256k1 private key as 64 hex digits")
    return key


def chain_address(private_key: bytes) -> str:
    """The checksummed Ethereum address of a secp256k1 private key."""
    from eth_keys import keys

    return keys.PrivateKey(private_key).public_key.to_checksum_address()


# --- what a SuperNode's node config says ----------------------------------------------------


@dataclass(frozen=True)
class NodeSettings:
    """A SuperNode's node config, read and checked against the experiment it serves."""

    node: int  # the edge-node index (the partition the node holds)
    chain_key: bytes | None = None  # its own chain key; None: the experiment's ledger.key_source
    data_dir: str | None = None  # where its data lives; None: the server's data-dir


def node_settings(node_config: Mapping[str, Any], config: ExperimentConfig) -> NodeSettings:
    """Read ``partition-id`` (required), ``num-partitions``, ``chain-key-file`` and
    ``data-dir`` from a SuperNode's ``--node-config``; errors name the key and the experiment's
    ``federation.num_nodes``."""
    num_nodes = config.federation.num_nodes
    if PARTITION_ID not in node_config:
        raise ConfigError(
            f"this SuperNode's node config has no {PARTITION_ID}: start it with "
            f"--node-config \"{PARTITION_ID}=<0..{num_nodes - 1}> {NUM_PARTITIONS}={num_nodes}\" "
            f"(the experiment has federation.num_nodes = {num_nodes})"
        )
    node = _integer(node_config, PARTITION_ID)
    if not 0 <= node < num_nodes:
        raise ConfigError(f"node config {PARTITION_ID} = {node} is out of range: the experiment has "
                          f"federation.num_nodes = {num_nodes}, so 0..{num_nodes - 1}")
    if NUM_PARTITIONS in node_config and (given := _integer(node_config, NUM_PARTITIONS)) != num_nodes:
        raise ConfigError(f"node config {NUM_PARTITIONS} = {given}, but the experiment has "
                          f"federation.num_nodes = {num_nodes}; this SuperNode was set up for another federation")
    key_file = str(node_config.get(CHAIN_KEY_FILE, "") or "")
    if key_file and not config.ledger.enabled:
        raise ConfigError(f"node config {CHAIN_KEY_FILE} is set, but the experiment has ledger.backend = 'none'")
    return NodeSettings(
        node=node,
        chain_key=read_chain_key(key_file) if key_file else None,
        data_dir=str(node_config.get(DATA_DIR, "") or "") or None,
    )


def _integer(node_config: Mapping[str, Any], key: str) -> int:
    value = node_config[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"node config {key} must be an integer; got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"node config {key} must be an integer; got {value!r}") from None


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bflsim.fl.deployment", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tls = commands.add_parser("tls", help="the operator's CA and SuperLink certificate")
    tls.add_argument("folder", type=Path)
    tls.add_argument("--host", action="append", default=[],
                     help="a name or IP address the SuperNodes use to reach the SuperLink (repeat; default 127.0.0.1, localhost)")
    tls.add_argument("--days", type=int, default=365)
    node = commands.add_parser("node", help="a device's Flower key pair (its private key and the public key to register)")
    node.add_argument("folder", type=Path)
    chain = commands.add_parser("chain-key", help="an edge node's chain key from the experiment's ledger.key_source, for its device")
    chain.add_argument("experiment", type=Path, help="the experiment TOML file (one run)")
    chain.add_argument("node", type=int, help="the edge-node index (the device's partition-id)")
    chain.add_argument("file", type=Path, help="where to write the key (a new file, mode 0600)")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (ConfigError, OSError, ValueError) as err:  # bad input: one line, exit status 2
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "tls":
        files = make_tls_files(args.folder, args.host or _LOOPBACK, days=args.days)
        print(f"CA certificate (give it to every SuperNode and flwr user): {files.ca_cert}")
        print(f"SuperLink certificate and key (keep on the SuperLink): {files.server_cert} {files.server_key}")
    elif args.command == "node":
        auth = make_node_auth_key(args.folder)
        print(f"Flower private key (keep on the device): {auth.private_key}")
        print(f"Flower public key (send to the SuperLink operator): {auth.public_key}")
    else:
        from bflsim.plans import load_plan

        plan = load_plan(args.experiment)
        if len(plan.points) != 1:
            raise ConfigError(f"{args.experiment}: makes {len(plan.points)} runs; name an experiment of one run")
        address = export_chain_key(plan.points[0][1], args.node, args.file)
        print(f"chain key of edge node {args.node} (give it to that device only): {args.file}; address {address}")


if __name__ == "__main__":
    main()
