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
