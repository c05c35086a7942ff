# keeper — the two commands: `make demo` and `make test`. Both install what they need and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ANVIL_STAMP := tools/node_modules/.installed
# Parallel test workers; the suite's chain tests each start their own anvil on a free port.
TEST_WORKERS ?= 3

.PHONY: setup demo test lint bench bench-100k bench-race clean contracts check-tools sandbox

setup: $(STAMP) $(ANVIL_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# Second compiler: Vyper 0.3.10 (the real controllers' dispatcher) in its own venv; sources with
# `# pragma version 0.3.10` are compiled by it (keeper/devtools/compile.py).
VYPER_0310 := build/vyper-0.3.10
VYPER_0310_STAMP := $(VYPER_0310)/.installed
setup: $(VYPER_0310_STAMP)

$(VYPER_0310_STAMP):
	@test -x $(VYPER_0310)/bin/python || $(PYTHON) -m venv $(VYPER_0310)
	$(VYPER_0310)/bin/python -m pip install --quiet --disable-pip-version-check vyper==0.3.10
	@$(VYPER_0310)/bin/vyper --version >/dev/null
	@touch $@

$(ANVIL_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@ls tools/node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null
	@touch $@

contracts: setup
	$(PY) -m keeper.devtools.compile
	$(PY) -m keeper.devtools.solc

demo: setup
	$(VENV)/bin/keeper demo

# A local chain with the reference protocols that stays up (README "Sandbox"); Ctrl-C saves it to
# sandbox/chain-state.json, `make sandbox SANDBOX_ARGS=--resume` continues it.
sandbox: setup
	$(VENV)/bin/keeper sandbox $(SANDBOX_ARGS)

# Style and types: ruff (lint + format) and mypy, config in pyproject.toml. `make test` runs it first.
lint: setup
	$(VENV)/bin/ruff check keeper tests scripts
	$(VENV)/bin/ruff format --check keeper tests scripts
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m keeper.devtools.compile
	$(PY) -m keeper.devtools.solc
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_scan.py

# issue 8 §6: 1k, 10k and 100k positions (4 markets at 100k): ~20 min, anvil peaks ~7 GB
bench-100k: setup
	$(PY) scripts/bench_scan.py --sizes 1000,10000,100000

# The keeper daemon against a plain bot on one anvil chain, 1 s blocks, seeded crashes (README "Race benchmark").
bench-race: setup
	$(PY) scripts/bench_race.py $(BENCH_RACE_ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis demo-run
