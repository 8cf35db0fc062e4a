# Set-up is part of every target: the first call creates .venv and installs bflsim into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# solc (recompiles the contract artifact) and anvil (a local chain) for the contract tests
NODE_STAMP := contracts/node_modules/.installed-stamp
# Real datasets: $BFLSIM_DATA_DIR, else ../shared/datasets when present, else ./data
# (fill it with `$(BIN)/bflsim data --download all`).
BFLSIM_DATA_DIR ?= $(firstword $(wildcard $(abspath ../shared/datasets)) $(abspath data))
export BFLSIM_DATA_DIR
export FLWR_TELEMETRY_ENABLED = 0

.PHONY: demo test install lint clean contracts figures paper

demo: $(STAMP)
	$(BIN)/bflsim demo

# Two pytest workers, one test file each at a time (module fixtures stay in one process):
# the Ray runs spend much of their time waiting, so on 2 cores the suite takes ~7 min, not ~10.
test: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

install: $(STAMP)

# Run every experiment behind results/ and rebuild it (hours; resumable; the plan and its time first)
paper: $(STAMP) $(NODE_STAMP)
	$(BIN)/bflsim reproduce

# Redraw every committed figure under results/ from the tidy rows beside it (seconds; trains nothing)
figures: $(STAMP)
	$(BIN)/bflsim figures results

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bflsim needs Python 3.11 or newer; got " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Without npm the contract recompile and anvil tests skip (CI sets BFLSIM_REQUIRE_NODE=1: fail).
$(NODE_STAMP): contracts/package.json contracts/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix contracts --ignore-scripts --no-audit --no-fund && touch $(NODE_STAMP); \
	else \
	  echo "npm not found: contract recompile and anvil tests will be skipped" >&2; \
	fi

# Rebuild contracts/FederatedRegistry.json from contracts/FederatedRegistry.sol
contracts: $(NODE_STAMP)
	$(PYTHON) contracts/build.py

# Style (ruff) and the import contract of the wings (import-linter; [tool.importlinter] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check bflsim strategies tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache contracts/node_modules
