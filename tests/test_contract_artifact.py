"""The committed contract artifact is the compiled source: hash check, and a real recompile.

The recompile needs node and contracts/node_modules (`npm ci --prefix contracts
--ignore-scripts`, done by `make test`); it is skipped without them, except where
BFLSIM_REQUIRE_NODE=1 (CI) turns the skip into a failure.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eth_utils import function_signature_to_4byte_selector

from bflsim.ledger import load_artifact
from bflsim.ledger.identity import REGISTER_DATA_SIGNATURE, SUBMIT_UPDATE_SIGNATURE

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts"
SOURCE = CONTRACTS / "FederatedRegistry.sol"
ARTIFACT = CONTRACTS / "FederatedRegistry.json"


def require_solc():
    if shutil.which("node") and (CONTRACTS / "node_modules" / "solc" / "package.json").is_file():
        return
    message = "node + contracts/node_modules/solc missing (npm ci --prefix contracts)"
    if os.environ.get("BFLSIM_REQUIRE_NODE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_artifact_matches_source_hash():
    artifact = json.loads(ARTIFACT.read_text())

    actual = hashlib.sha256(SOURCE.read_bytes()).hexdigest()

    assert artifact["sourceSha256"] == actual, (
        "contracts/FederatedRegistry.json was built from another source: "
        "run `python contracts/build.py` and commit both files"
    )


def test_artifact_records_compiler_and_settings():
    artifact = json.loads(ARTIFACT.read_text())
    lock = json.loads((CONTRACTS / "package-lock.json").read_text())
    pinned = json.loads((CONTRACTS / "package.json").read_text())["dependencies"]["solc"]

    assert artifact["contractName"] == "FederatedRegistry"
    assert artifact["compiler"]["name"] == "solcjs"
    assert artifact["compiler"]["version"].startswith(pinned + "+commit.")
    assert lock["packages"]["node_modules/solc"]["version"] == pinned
    assert artifact["compiler"]["settings"]["evmVersion"] == "paris"
    assert artifact["compiler"]["settings"]["optimizer"]["enabled"] is True
    assert artifact["bytecode"].startswith("0x60") and artifact["deployedBytecode"] != "0x"


def test_paris_bytecode_has_no_push0():
    # PUSH0 (0x5f, Shanghai) would not run on a paris chain; walk the opcodes, skipping
    # PUSH data, up to the CBOR metadata.
    code = bytes.fromhex(json.loads(ARTIFACT.read_text())["deployedBytecode"][2:])
    code = code[: -(int.from_bytes(code[-2:], "big") + 2)]
    i = 0
    while i < len(code):
        op = code[i]
        assert op != 0x5F, f"PUSH0 at byte {i}"
        i += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)


def test_offline_signing_selectors_exist_in_abi():
    abi = load_artifact().abi
    signatures = {
        f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for item in abi
        if item["type"] == "function"
    }

    for signature in (SUBMIT_UPDATE_SIGNATURE, REGISTER_DATA_SIGNATURE):
        assert signature in signatures
        assert len(function_signature_to_4byte_selector(signature)) == 4


def test_recompiling_with_pinned_solc_reproduces_the_artifact(tmp_path):
    require_solc()
    out = tmp_path / "FederatedRegistry.json"

    proc = subprocess.run(
        [sys.executable, str(CONTRACTS / "build.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )

    assert proc.returncode == 0, proc.stderr
    rebuilt = json.loads(out.read_text())
    committed = json.loads(ARTIFACT.read_text())
    assert rebuilt["bytecode"] == committed["bytecode"]
    assert rebuilt["deployedBytecode"] == committed["deployedBytecode"]
    assert rebuilt["abi"] == committed["abi"]
    assert rebuilt == committed


# --- the v1 registry, kept to audit the runs that used it --------------------------------


def test_the_v1_v2_and_v3_registries_are_kept_for_old_runs():
    v1, v2, v3, v4 = (load_artifact(version=v) for v in (1, 2, 3, 4))

    def signatures(artifact):
        return {f"{i['name']}({','.join(x['type'] for x in i['inputs'])})" for i in artifact.abi if "name" in i}

    assert "submitUpdate(uint32,bytes32,uint32)" in signatures(v1)
    assert "RoundCommitted(uint32,bytes32,uint256,bytes32)" in signatures(v1)
    assert "RunConfigured(bytes32,uint32)" in signatures(v2) - signatures(v1)
    assert "openRound(uint32,bytes32,uint256)" in signatures(v2)
    assert {"openRound(uint32,bytes32,uint32[])", "openBatch(uint32,bytes32,bytes32,uint32)"} <= signatures(v3)
    assert {"alert(bytes32,uint32,bytes32,uint32)", "disputeAlert(uint32,uint32,bytes32)",
            "DeviceQuarantined(uint32,uint32)"} <= signatures(v4) - signatures(v3)
    assert signatures(v3) <= signatures(v4)  # v4 adds the closed loop and keeps every call of v3
    assert [a.version for a in (v1, v2, v3, v4)] == [1, 2, 3, 4]
    assert len({a.code_hash for a in (v1, v2, v3, v4)}) == 4 and v4.code_hash == load_artifact().code_hash
    assert json.loads((CONTRACTS / "FederatedRegistry.v2.json").read_text())["sourceSha256"] == (
        "e2d9ee65f41f26a60043ff98b3c6ff98660a4145e6e64c5edc75d149d0f8e63b")  # the v2 source, in git history
    assert json.loads((CONTRACTS / "FederatedRegistry.v3.json").read_text())["sourceSha256"] == (
        "55a21e7198e4d228f7f8066cc8f5d919216d9cb21e1bc810fdbbee7ceeeb4efb")  # the v3 source, in git history
    with pytest.raises(ValueError, match=r"registry_version must be one of \[1, 2, 3, 4\]; got 5"):
        load_artifact(version=5)


def test_a_recorded_chain_is_read_with_its_runs_registry():
    from bflsim.ledger import derive_identities
    from bflsim.ledger.factory import open_recorded_chain
    from bflsim.ledger.web3_ledger import EmbeddedLedger

    old = EmbeddedLedger(artifact=load_artifact(version=1))  # a run made before registry v2
    old.deploy(max_rejections=2)
    node = derive_identities(seed=3, num_nodes=1)[0]
    old.enroll([node])
    raw = old.sign_call(node, "registerData", b"\x0d" * 32, 9)
    old.send_raw(raw, kind="register_data")

    with open_recorded_chain({"backend": "embedded", "chain_id": old.chain_id}) as (replay, fresh):
        assert fresh and replay.artifact.path.name == "FederatedRegistry.v1.json"
        for record in old.records:
            replay.w3.eth.send_raw_transaction(record.raw)
        replay.attach(old.address)  # the v1 code is recognised
        assert replay.run_digest == bytes(32) and replay.node_info(node.address).num_samples == 0
        [event] = [e for e in replay.events() if e.name == "DataRegistered"]
        assert event.args == {"node": node.address, "digest": b"\x0d" * 32, "timestamp": 9}
    with open_recorded_chain({"backend": "embedded", "chain_id": 1, "registry_version": 2}) as (replay, _):
        assert replay.artifact.path.name == "FederatedRegistry.v2.json"
    with open_recorded_chain({"backend": "embedded", "chain_id": 1, "registry_version": 3}) as (replay, _):
        assert replay.artifact.path.name == "FederatedRegistry.v3.json"
    with open_recorded_chain({"backend": "embedded", "chain_id": 1, "registry_version": 4}) as (replay, _):
        assert replay.artifact.path.name == "FederatedRegistry.json"
