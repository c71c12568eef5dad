# Two commands on a fresh machine: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/config.yaml
# No network probe for LiteLLM's price map: tests, runs and benchmarks stay on loopback.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test lint check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps re-install when setup.cfg changes, and not otherwise.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/memproxy serve --config $(CONFIG)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check aiohttp_memproxy tests
	$(BIN)/ruff format --check aiohttp_memproxy tests
	$(BIN)/mypy

check: $(VENV)/.installed
	$(BIN)/memproxy check --config $(CONFIG)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
