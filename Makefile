# Two commands on a fresh machine: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/config.yaml
# No network probe for LiteLLM's price map: tests, runs and benchmarks stay on loopback.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test lint check clean install-service install-user-service verify-units bench bench-deps load cli-deps lock ui-deps litellm-check wheel-check

PREFIX ?= /opt/aiohttp-memproxy
USER_PREFIX ?= $(HOME)/.local/share/aiohttp-memproxy/venv
# The user config directory as memproxy finds it (XDG on Linux, Application Support on macOS).
USER_CONFIG = $(USER_PREFIX)/bin/python -c 'from aiohttp_memproxy.install.paths import config_dir; print(config_dir())'

# Every dependency comes from a lock file, each with its sha256 (pip-compile --generate-hashes; `make lock`):
# requirements.lock for the gateway (setuptools and wheel, its build, included), requirements-dev.lock adds
# the test and lint tools. The project itself is then installed without dependencies or a build download.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
INSTALL_LOCKED = python -m pip install --quiet --require-hashes --no-deps -r
INSTALL_SELF = python -m pip install --quiet --no-deps --no-build-isolation
PIP_TOOLS := pip-tools==7.6.2
COMPILE = .lock-venv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--build-deps-for wheel --no-emit-index-url --no-emit-find-links

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamps re-install when setup.cfg or a lock changes, and not otherwise.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(LOCK)
	$(BIN)/$(INSTALL_LOCKED) $(LOCK)
	$(BIN)/$(INSTALL_SELF) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(DEV_LOCK)
	$(BIN)/$(INSTALL_LOCKED) $(DEV_LOCK)
	touch $@

# Regenerate both locks from setup.cfg (newest versions its ranges allow); then run make test and make bench.
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet $(PIP_TOOLS)
	$(COMPILE) --output-file $(LOCK) setup.cfg
	$(COMPILE) --extra test --extra lint --constraint $(LOCK) --output-file $(DEV_LOCK) setup.cfg

# The wheel alone, in a fresh venv with the runtime lock and a temporary HOME: memproxy init, serve, the demo
# model through the OpenAI SDK, init again (tests/wheel_check.py; CI runs it; it needs the package index).
wheel-check: $(VENV)/.installed
	$(BIN)/python -m tests.wheel_check

# Whether a LiteLLM release is fit to take, before `make lock` takes it (docs/development.md): a scratch venv
# with that LiteLLM, the seam's self-check, the tests that follow LiteLLM (FULL=1: every test), the bench's
# short form against the pinned LiteLLM, and a one-screen report.
litellm-check: $(VENV)/.installed-dev
	@test -n "$(VERSION)" || (echo "usage: make litellm-check VERSION=x.y.z [FULL=1]" && exit 2)
	$(BIN)/python -m tests.litellm_check $(VERSION) $(if $(FULL),--full)

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

# Measured from outside, on loopback: see tests/bench.py. COMPARE=1 adds a LiteLLM proxy server (make bench-deps);
# LEDGER_ONLY=1 measures only what the usage ledger costs (four gateways with it on, four off).
bench: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench $(if $(COMPARE),--compare) $(if $(LEDGER_ONLY),--ledger-only)

# CLIENTS clients for DURATION seconds against an upstream that challenges, throttles and cuts streams at random.
load: $(VENV)/.installed-dev
	$(BIN)/python -m tests.load $(if $(CLIENTS),--clients $(CLIENTS)) $(if $(DURATION),--seconds $(DURATION))

# The real coding CLIs the end-to-end tests drive (tests/test_real_clis.py skips without them): the versions
# pinned in tests/clis/package.json, installed as its lock file says, sha512 integrity checked (npm ci).
cli-deps:
	npm ci --no-fund --no-audit --prefix tests/clis

# Debian's Chromium for the /ui test in a real headless browser (tests/test_ui.py skips without it); Playwright,
# from the dev lock, drives it. As root (CI); a developer runs it with sudo.
ui-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# litellm[proxy] in its own venv, so the comparison never changes what the gateway itself installs.
bench-deps:
	$(PYTHON) -m venv .bench-venv
	.bench-venv/bin/python -m pip install --quiet --upgrade pip
	.bench-venv/bin/python -m pip install --quiet 'litellm[proxy]'

# System service (as root): a venv in $(PREFIX), the unit, /etc/aiohttp-memproxy/{config.yaml,env.example}.
# An existing config.yaml or env is never overwritten.
# System service (Linux, as root): a venv under $(PREFIX), a config and env file in /etc/aiohttp-memproxy
# (`memproxy init`: never overwritten), and the hardened unit `memproxy service install --system` writes.
install-service:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/$(INSTALL_LOCKED) $(LOCK)
	$(PREFIX)/bin/$(INSTALL_SELF) .
	install -d -m 0755 /etc/aiohttp-memproxy  # the service's own user reads config.yaml in it
	$(PREFIX)/bin/memproxy init --dir /etc/aiohttp-memproxy
	$(PREFIX)/bin/memproxy service install --system --config /etc/aiohttp-memproxy/config.yaml

# User service, for an IDE user's workstation (no root): the same with a venv under $(USER_PREFIX), the user
# config directory, and a systemd user unit (a LaunchAgent on macOS).
install-user-service:
	$(PYTHON) -m venv $(USER_PREFIX)
	$(USER_PREFIX)/bin/$(INSTALL_LOCKED) $(LOCK)
	$(USER_PREFIX)/bin/$(INSTALL_SELF) .
	$(USER_PREFIX)/bin/memproxy init --dir "$$($(USER_CONFIG))"
	$(USER_PREFIX)/bin/memproxy service install --user --config "$$($(USER_CONFIG))/config.yaml"

# The units `memproxy service install` writes, as this checkout's memproxy would write them (systemd-analyze
# verify checks that ExecStart exists: here it is this checkout's venv), verified and scored.
UNIT_TEXT = sed -n '/^\# would write: /,/^\# end of /p' | sed '1d;$$d'
verify-units: $(VENV)/.installed
	rm -rf .units && mkdir .units
	$(BIN)/memproxy service install --system --dry-run --platform linux \
		--config /etc/aiohttp-memproxy/config.yaml | $(UNIT_TEXT) > .units/aiohttp-memproxy.service
	$(BIN)/memproxy service install --user --dry-run --platform linux \
		--config $(CURDIR)/conf/config.yaml | $(UNIT_TEXT) > .units/aiohttp-memproxy-user.service
	grep -q '^ExecStart=' .units/aiohttp-memproxy.service && grep -q '^ExecStart=' .units/aiohttp-memproxy-user.service
	systemd-analyze verify .units/aiohttp-memproxy.service .units/aiohttp-memproxy-user.service
	# Scored, failing above the threshold (the table goes to a file: a pipe would hide the exit status).
	systemd-analyze security --offline=true --threshold=20 .units/aiohttp-memproxy.service > .units/system.txt
	tail -1 .units/system.txt
	# A user manager's view (it needs a runtime directory, which a CI shell may lack).
	XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-$$(mktemp -d)} systemd-analyze security --offline=true --user \
		--threshold=25 .units/aiohttp-memproxy-user.service > .units/user.txt
	tail -1 .units/user.txt
	rm -rf .units

clean:
	rm -rf $(VENV) .bench-venv .lock-venv .litellm-check tests/clis/node_modules build *.egg-info .pytest_cache .mypy_cache .ruff_cache .units bench-results.json load-results.json
