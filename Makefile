# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench soak lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/coalmine simulate --users 5 --requests 41 --percent 10 --chain 3 --trials 1000 --seed 1
	$(BIN)/coalmine simulate --users 10000 --requests 200000 --percent 10 --chain 3 --seed 1
	$(BIN)/coalmine demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict bench

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/decision.py
	$(BIN)/python bench/streams.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/gateway_inprocess.py
	$(BIN)/python bench/readpath.py
	$(BIN)/python bench/controller_tick.py

# The long part of the hardening checks: the gateway under load for 60 s while
# releases move (bench/soak.py), and the controller killed at random over 100 trials.
soak: $(STAMP)
	$(BIN)/python bench/soak.py
	COALMINE_KILL_TRIALS=100 $(BIN)/pytest -q tests/e2e/test_controller_kills.py

# Re-pin every dependency (needs the package registry).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra all --extra dev --extra bench \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -q -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
