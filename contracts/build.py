"""Compile FederatedRegistry.sol with the pinned solcjs and write FederatedRegistry.json.

Usage::

    npm ci --prefix contracts --ignore-scripts   # once: installs solc (and anvil)
    python contracts/build.py                    # rewrites contracts/FederatedRegistry.json
    python contracts/build.py --check            # exit 1 if the committed artifact differs
    python contracts/build.py --out other.json   # write elsewhere (the tests compare it)

The compiler is the npm ``solc`` package at the exact version pinned in package.json /
package-lock.json, driven through its standard-JSON interface (optimizer on, 200 runs,
evmVersion ``paris`` so that the bytecode runs on py-evm as well as on anvil and geth).
Only the standard library is used, so this runs from any Python >= 3.11.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parent
CONTRACT_NAME = "FederatedRegistry"
SOURCE_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.sol"
ARTIFACT_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.json"

SETTINGS: dict = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "paris",
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]},
    },
}

# Reads the standard-JSON input on stdin, prints {"version": ..., "output": ...}.
_COMPILE_JS = """
const solc = require('solc');
let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify({version: solc.version(), output: JSON.parse(solc.compile(input))}));
});
"""


class BuildError(RuntimeError):
    """The compiler could not be run or rejected the source."""


def source_sha256(path: Path = SOURCE_PATH) -> str:
    """Hex sha256 of the Solidity source file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def solc_available() -> bool:
    """Whether node and the npm solc package (contracts/node_modules) are installed."""
    return shutil.which("node") is not None and (
        CONTRACTS_DIR / "node_modules" / "solc" / "package.json"
    ).is_file()


def compile_artifact(source_path: Path = SOURCE_PATH) -> dict:
    """Compile ``source_path`` and return the artifact as a dict (nothing is written)."""
    if not solc_available():
        raise BuildError(
            f"solcjs not found: run `npm ci --prefix {CONTRACTS_DIR} --ignore-scripts` "
            "(needs node and npm)"
        )
    settings = json.loads(json.dumps(SETTINGS))
    standard_input = {
        "language": "Solidity",
        "sources": {source_path.name: {"content": source_path.read_text()}},
        "settings": settings,
    }
    proc = subprocess.run(
        ["node", "-e", _COMPILE_JS],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        cwd=CONTRACTS_DIR,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"node/solcjs failed ({proc.returncode}): {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    for warning in output.get("errors", []):  # what is left: warnings and infos
        print(warning.get("formattedMessage", warning["message"]), file=sys.stderr)
    contract = output["contracts"][source_path.name][CONTRACT_NAME]
    settings.pop("outputSelection")
    return {
        "contractName": CONTRACT_NAME,
        "sourceName": source_path.name,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        "compiler": {"name": "solcjs", "version": result["version"], "settings": settings},
        "sourceSha256": hashlib.sha256(source_path.read_bytes()).hexdigest(),
    }


def dump_artifact(artifact: dict) -> str:
    """The artifact's canonical text (what is committed)."""
    return json.dumps(artifact, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed artifact, write nothing"
    )
    parser.add_argument("--out", type=Path, default=ARTIFACT_PATH, help="where to write")
    args = parser.parse_args(argv)
    try:
        artifact = compile_artifact()
    except BuildError as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 2
    text = dump_artifact(artifact)
    if args.check:
        current = ARTIFACT_PATH.read_text() if ARTIFACT_PATH.exists() else ""
        if current != text:
            print(f"build.py: {ARTIFACT_PATH.name} is stale; run python contracts/build.py",
                  file=sys.stderr)
            return 1
        print(f"{ARTIFACT_PATH.name} is up to date ({artifact['compiler']['version']})")
        return 0
    args.out.write_text(text)
    size = (len(artifact["deployedBytecode"]) - 2) // 2
    print(f"wrote {args.out} ({artifact['compiler']['version']}, runtime {size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
