"""Flower's deployment engine: a SuperLink with TLS and SuperNode authentication, SuperNodes,
and `flwr run` of the same ServerApp and ClientApp as the simulation.

The unit tests cover what a device holds (its node config, its chain key, its Flower key pair)
and the operator's TLS files. The end-to-end test starts a SuperLink (TLS, only registered
SuperNodes admitted) and three SuperNodes on free 127.0.0.1 ports, each with its own FLWR_HOME
and key pair, registers their public keys, checks that a SuperNode with an unregistered key
and a plaintext client are both refused, runs a two-round experiment on the embedded chain
with `flwr run`, audits the run folder, and stops every process it started (found by a
marker in their environment), by process id. The experiment's chain keys come from a secret
(``ledger.key_source = "env"``) that only the SuperLink's environment holds: each SuperNode
signs with the key file the operator exported for it, so a SuperNode that did not read its
``chain-key-file`` could not sign at all.
"""

import json
import os
import ssl
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import free_port, is_loopback, listening_addresses, processes_with, stop
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Context, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.task_identity import TaskIdentity

from bflsim.audit import audit_run
from bflsim.config import ConfigError, parse_experiment, to_wire
from bflsim.fl import client_app
from bflsim.fl.deployment import (
    chain_address,
    export_chain_key,
    make_node_auth_key,
    make_tls_files,
    node_settings,
    read_chain_key,
)
from bflsim.ledger import TxContext
from bflsim.ledger.identity import node_identities, read_data_tx
from bflsim.ledger.session import NoChainSession
from strategies import protocol as p
from strategies.robust import FederationMismatch, RobustStrategy

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


SECRET = "operator-secret-0123456789abcdef"  # ledger.key_source = "env": only the operator knows it


def experiment(ledger: str = "embedded", key_source: str = "seed"):
    return parse_experiment({
        "experiment": {"name": "deployment", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 900}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "train": {"batch_size": 64, "learning_rate": 0.005},
        "federation": {"num_nodes": 3, "rounds": 2},
        "aggregator": {"name": "median"},
        "ledger": {"backend": ledger, **({"key_source": key_source} if ledger != "none" else {})},
    })


# --- a SuperNode's node config -----------------------------------------------------------


def test_node_config_names_the_edge_node_and_its_own_data_folder():
    settings = node_settings({"partition-id": 2, "num-partitions": 3, "data-dir": "/data"}, experiment())

    assert (settings.node, settings.data_dir, settings.chain_key) == (2, "/data", None)
    assert node_settings({"partition-id": "0"}, experiment()).node == 0  # num-partitions is optional


@pytest.mark.parametrize("node_config, message", [
    ({}, r"node config has no partition-id: start it with --node-config \"partition-id=<0..2> num-partitions=3\""),
    ({"partition-id": 3}, r"partition-id = 3 is out of range: the experiment has federation.num_nodes = 3, so 0..2"),
    ({"partition-id": -1}, r"partition-id = -1 is out of range"),
    ({"partition-id": "one"}, r"node config partition-id must be an integer; got 'one'"),
    ({"partition-id": 0, "num-partitions": 5}, r"num-partitions = 5, but the experiment has federation.num_nodes = 3"),
])
def test_a_node_config_that_does_not_fit_the_experiment_is_refused_naming_the_key(node_config, message):
    with pytest.raises(ConfigError, match=message):
        node_settings(node_config, experiment())


def test_the_operator_exports_each_devices_chain_key_into_a_file_only_its_owner_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)
    config = experiment(key_source="env")
    path = tmp_path / "chain.key"
    address = export_chain_key(config, 1, path)
    loose, bad = tmp_path / "loose.key", tmp_path / "bad.key"
    loose.write_text(path.read_text())
    loose.chmod(0o644)
    bad.write_text("00" * 32)
    bad.chmod(0o600)

    assert address == node_identities(config)[1].address == chain_address(read_chain_key(path))
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_chain_key(config, 1, path)
    with pytest.raises(ConfigError, match="edge node 3 does not exist: federation.num_nodes = 3"):
        export_chain_key(config, 3, tmp_path / "three.key")
    with pytest.raises(ConfigError, match="ledger.backend = 'none': the experiment registers nothing"):
        export_chain_key(experiment(ledger="none"), 0, tmp_path / "none.key")
    monkeypatch.delenv("BFLSIM_NODE_KEY_SECRET")
    with pytest.raises(ConfigError, match=r"key secret from \$BFLSIM_NODE_KEY_SECRET, but it is not set"):
        export_chain_key(config, 0, tmp_path / "zero.key")
    with pytest.raises(ConfigError, match=r"loose.key is readable by others \(mode 644\); `chmod 600"):
        read_chain_key(loose)
    with pytest.raises(ConfigError, match="must hold a secp256k1 private key as 64 hex digits"):
        read_chain_key(bad)
    with pytest.raises(ConfigError, match="chain-key-file: no key file"):
        node_settings({"partition-id": 0, "chain-key-file": str(tmp_path / "none.key")}, config)
    with pytest.raises(ConfigError, match="chain-key-file is set, but the experiment has ledger.backend = 'none'"):
        node_settings({"partition-id": 0, "chain-key-file": str(path)}, experiment(ledger="none"))


def test_a_supernode_signs_with_its_chain_key_file_and_needs_no_key_secret(tmp_path, monkeypatch):
    config = experiment(key_source="env")
    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)  # the operator's side
    address = export_chain_key(config, 1, tmp_path / "chain.key")
    monkeypatch.delenv("BFLSIM_NODE_KEY_SECRET")  # the device's side
    ctx = TxContext(chain_id=1, contract_address="0x" + "42" * 20, nonce=0)
    record = p.config_record(0, to_wire(config), None, chain=ctx.to_config(prefix=""))
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
                        group_id="", created_at=time.time(), ttl=60.0, message_type=p.REGISTER_DATA)
    msg = make_message(metadata, RecordDict({p.CONFIG: record}))

    def register(node_config):
        context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
        reply = client_app.register(msg, context)
        return read_data_tx(bytes(reply.content[p.CHAIN][p.TX]))[0].sender, int(reply.content[p.METRICS][p.NODE])

    signed = register({"partition-id": 1, "num-partitions": 3, "chain-key-file": str(tmp_path / "chain.key")})

    assert signed == (address, 1)
    with pytest.raises(ValueError, match=r"\$BFLSIM_NODE_KEY_SECRET, but it is not set"):
        register({"partition-id": 1, "num-partitions": 3})  # without its file it would need the secret


class IdentifyingGrid:
    """SuperNodes 100, 101, 102 that answer "who are you" with the edge node of their node config."""

    def __init__(self, partition_ids):
        self.partition_ids = dict(zip(range(100, 100 + len(partition_ids)), partition_ids, strict=True))

    def get_node_ids(self):
        return list(self.partition_ids)

    def send_and_receive(self, messages, timeout=None):
        return [p.reply(msg, {p.NODE: self.partition_ids[msg.metadata.dst_node_id], p.NUM_EXAMPLES: 10})
                for msg in messages]


def test_two_supernodes_with_the_same_partition_id_stop_the_run_before_round_1(monkeypatch):
    for name, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():  # what a ServerApp process knows
        monkeypatch.setattr(TaskIdentity, name, value)
    config = experiment(ledger="none")

    def strategy():
        return RobustStrategy(None, 0.0, config.federation, to_wire(config), None, NoChainSession(), None,
                              score=None, defence=object())

    distinct = strategy()
    distinct.register_nodes(IdentifyingGrid([2, 0, 1]))
    assert distinct.edge_index == {100: 2, 101: 0, 102: 1}
    with pytest.raises(FederationMismatch, match=r"SuperNodes 100, 102 all say they are edge node 2: each "
                                                 r"SuperNode needs its own node config partition-id in 0..2"):
        strategy().register_nodes(IdentifyingGrid([2, 0, 2]))


# --- the operator's and the device's Flower credentials ------------------------------------


def test_the_superlink_certificate_is_issued_by_the_ca_for_the_loopback_names(tmp_path):
    files = make_tls_files(tmp_path, ("127.0.0.1", "localhost", "superlink.example.org"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example.org"]
    assert files.server_key.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("ca.key"))  # the CA's key is never written


def test_a_supernode_key_pair_is_what_flower_loads_and_registers(tmp_path):
    keys = make_node_auth_key(tmp_path, "device-7")
    private = load_ssh_private_key(keys.private_key.read_bytes(), None)

    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(keys.public_key)  # `flwr supernode register` accepts it
    assert keys.private_key.stat().st_mode & 0o777 == 0o600
    assert keys.public_key.read_text().endswith(" device-7\n")


# --- a federation of SuperNodes on 127.0.0.1 ----------------------------------------------

NUM_NODES = 3


@dataclass
class Federation:
    """A SuperLink with TLS and SuperNode authentication, and its registered SuperNodes."""

    root: Path
    env: dict[str, str]
    marker: bytes
    port: int
    ca_cert: Path
    superlink_log: Path
    node_logs: list[Path] = field(default_factory=list)
    chain_keys: list[Path] = field(default_factory=list)  # each device's own chain key file

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A `flwr` CLI call as the operator (the connection "deployment" of its FLWR_HOME)."""
        return subprocess.run([str(VENV_BIN / "flwr"), *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def supernode(self, name: str, node_config: str, *flags: str) -> subprocess.Popen:
        """Start a SuperNode with its own FLWR_HOME and Runtime API port; output to ``name``.log."""
        log = self.root / f"{name}.log"
        env = {**self.env, "FLWR_HOME": str(self.root / name / "home")}
        command = [str(VENV_BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
                   "--node-config", node_config, "--host", "127.0.0.1", "--port", str(free_port()), *flags]
        with log.open("w") as out:
            return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def online(self) -> int:
        listing = self.flwr("supernode", "list", "--format", "json")
        assert listing.returncode == 0, listing.stdout + listing.stderr
        return sum(node["status"] == "online" for node in json.loads(listing.stdout)["nodes"])


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)
    return result


@pytest.fixture
def federation(tmp_path):
    marker = f"BFLSIM_DEPLOYMENT_TEST={tmp_path}"
    port = free_port()
    tls = make_tls_files(tmp_path / "tls")
    operator_home = tmp_path / "operator"
    operator_home.mkdir()
    (operator_home / "config.toml").write_text(
        f'[superlink]\ndefault = "deployment"\n\n[superlink.deployment]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{tls.ca_cert}"\n'
    )
    env = {
        **os.environ,
        "BFLSIM_DEPLOYMENT_TEST": str(tmp_path),
        "FLWR_HOME": str(operator_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("BFLSIM_NODE_KEY_SECRET", None)  # the devices never see it
    config = parse_experiment(tomllib.loads(EXPERIMENT))
    with pytest.MonkeyPatch.context() as operator:  # the operator hands each device its own chain key
        operator.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)
        chain_keys = [tmp_path / f"node{i}" / "chain.key" for i in range(NUM_NODES)]
        for i, path in enumerate(chain_keys):
            path.parent.mkdir()
            export_chain_key(config, i, path)
    fed = Federation(tmp_path, env, marker.encode(), port, tls.ca_cert, tmp_path / "superlink.log",
                     chain_keys=chain_keys)
    try:
        with fed.superlink_log.open("w") as out:
            superlink = subprocess.Popen(
                [str(VENV_BIN / "flower-superlink"), *tls.superlink_args(), "--enable-supernode-auth",
                 "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
                env={**env, "BFLSIM_NODE_KEY_SECRET": SECRET}, stdout=out, stderr=subprocess.STDOUT,
            )  # the ServerApp, which the SuperLink starts, derives the addresses it enrols
        wait_for(lambda: superlink.poll() is not None or "Uvicorn running on https" in fed.superlink_log.read_text(),
                 30, "the SuperLink start")
        assert superlink.poll() is None, fed.superlink_log.read_text()
        keys = [make_node_auth_key(tmp_path / f"node{i}", "supernode") for i in range(NUM_NODES)]
        with ThreadPoolExecutor(NUM_NODES) as pool:
            registered = list(pool.map(lambda key: fed.flwr("supernode", "register", str(key.public_key)), keys))
        for reply in registered:
            assert reply.returncode == 0 and "registered successfully" in reply.stdout, reply.stdout + reply.stderr
        for i in range(NUM_NODES):
            fed.supernode(f"node{i}", f'partition-id={i} num-partitions={NUM_NODES} chain-key-file="{chain_keys[i]}"',
                          "--root-certificates",
                          str(tls.ca_cert), "--auth-supernode-private-key", str(keys[i].private_key))
            fed.node_logs.append(tmp_path / f"node{i}.log")
        yield fed
    finally:
        stop(processes_with(fed.marker))
        assert not processes_with(fed.marker), "processes of the federation survived"
        with httpx.Client(verify=False) as client, pytest.raises(httpx.ConnectError):
            client.get(f"https://127.0.0.1:{port}/health", timeout=2)


def test_the_deployment_engine_runs_the_experiment_on_authenticated_supernodes_over_tls(
        tmp_path, federation, monkeypatch):
    # Prepare: two clients that must be refused, while the registered SuperNodes connect.
    stranger_keys = make_node_auth_key(tmp_path / "stranger", "supernode")
    stranger = federation.supernode("stranger", f"partition-id=0 num-partitions={NUM_NODES}",
                                    "--root-certificates", str(federation.ca_cert),
                                    "--auth-supernode-private-key", str(stranger_keys.private_key),
                                    "--max-retries", "1", "--max-wait-time", "20")
    plaintext = federation.supernode("plaintext", f"partition-id=0 num-partitions={NUM_NODES}", "--insecure",
                                     "--max-retries", "1", "--max-wait-time", "20")
    with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer
        httpx.get(f"http://127.0.0.1:{federation.port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # nor does TLS without the CA
        httpx.get(f"https://127.0.0.1:{federation.port}/health", timeout=5)
    tls = ssl.create_default_context(cafile=federation.ca_cert)
    assert httpx.get(f"https://127.0.0.1:{federation.port}/health", verify=tls, timeout=5).is_success
    assert stranger.wait(timeout=60) != 0 and plaintext.wait(timeout=60) != 0
    wait_for(lambda: federation.superlink_log.read_text().count("[Fleet.ActivateNode] Activated") >= NUM_NODES,
             60, f"{NUM_NODES} SuperNodes online")
    assert federation.online() == NUM_NODES  # as the operator sees them
    experiment_file = tmp_path / "experiment.toml"
    experiment_file.write_text(EXPERIMENT)
    out = tmp_path / "runs"

    # Execute
    started = time.perf_counter()
    command = [str(VENV_BIN / "flwr"), "run", ".", "deployment", "--stream",
               "--run-config", f"experiment='{experiment_file}' out-dir='{out}'"]
    listened = set()
    with subprocess.Popen(command, cwd=REPO, env=federation.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as cli:
        while cli.poll() is None:
            listened |= listening_addresses(processes_with(federation.marker))
            if time.perf_counter() - started > 300:
                cli.kill()
                pytest.fail("`flwr run` took over 300 s")
            time.sleep(1.0)
        output = cli.stdout.read()
    seconds = time.perf_counter() - started

    # Assert
    assert cli.returncode == 0 and "Successfully started run" in output, output
    [run_dir] = out.iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = pd.read_csv(run_dir / "metrics.csv")
    test_rounds = sorted(metrics[(metrics["split"] == "test") & (metrics["metric"] == "accuracy")]["round"])
    rounds = metrics[metrics["split"] == "round"]
    weights = metrics[(metrics["split"] == "node") & (metrics["metric"] == "weight")]
    chain = json.loads((run_dir / "trail" / "chain.json").read_text())
    assert manifest["status"] == "complete" and manifest["launcher"]["tool"] == "flwr run", output
    assert test_rounds == [0, 1, 2]
    assert rounds[rounds["metric"] == "updates_received"]["value"].tolist() == [3.0, 3.0]
    assert sorted(zip(weights["round"], weights["node"].astype(int))) == [(r, n) for r in (1, 2) for n in range(3)]
    assert (weights["value"] > 0).all()  # every edge node's update counted in both rounds
    assert chain["nodes"] == {str(i): chain_address(read_chain_key(key)) for i, key in enumerate(federation.chain_keys)}
    for log in federation.node_logs:  # each SuperNode process trained in both rounds
        assert log.read_text().count("Receiving: train message") == 2, log.read_text()[-2000:]
    monkeypatch.setenv("BFLSIM_NODE_KEY_SECRET", SECRET)  # the auditor checks the enrolled addresses with it
    report = audit_run(run_dir)
    assert report.ok, "\n".join(report.lines())

    superlink_log = federation.superlink_log.read_text()
    assert "Failed to activate SuperNode" in (tmp_path / "stranger.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log  # refused by the SuperLink
    assert "could not establish a connection" in (tmp_path / "plaintext.log").read_text()
    assert ("127.0.0.1", federation.port) in listened
    assert all(is_loopback(address) for address, _ in listened), sorted(listened)
    print(f"deployment engine: flwr run {seconds:.0f} s; listened on {sorted(listened)}")


EXPERIMENT = """
[experiment]
name = "deployment_test"
kind = "federated"

[data]
dataset = "synthetic"
synthetic = { num_samples = 900 }

[models]
names = ["dnn"]
dnn = { hidden_units = [8], dropout = 0.0 }

[train]
batch_size = 64
learning_rate = 0.005

[federation]
num_nodes = 3
rounds = 2

[aggregator]
name = "median"

[ledger]
backend = "embedded"
key_source = "env"
"""
