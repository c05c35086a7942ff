# keeper — the two commands: `make demo` and `make test`. Both install what they need and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ANVIL_STAMP := tools/node_modules/.installed
# Parallel test workers; the suite's chain tests each start their own anvil on a free port.
TEST_WORKERS ?= 3

.PHONY: setup demo test bench clean contracts check-tools

setup: $(STAMP) $(ANVIL_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(ANVIL_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@ls tools/node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null
	@touch $@

contracts: setup
	$(PY) -m keeper.devtools.compile

demo: setup
	$(VENV)/bin/keeper demo

test: setup
	$(PY) -m keeper.devtools.compile
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_scan.py

clean:
	rm -rf build .pytest_cache .hypothesis demo-run
