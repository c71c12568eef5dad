# Two commands on a fresh machine: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/config.yaml
# No network probe for LiteLLM's price map: tests, runs and benchmarks stay on loopback.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test lint check clean install-service install-user-service verify-units bench bench-deps load cli-deps lock ui-deps litellm-check

PREFIX ?= /opt/aiohttp-memproxy
USER_PREFIX ?= $(HOME)/.local/share/aiohttp-memproxy/venv
USER_CONFIG ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/aiohttp-memproxy
USER_UNITS ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user

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
install-service:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/$(INSTALL_LOCKED) $(LOCK)
	$(PREFIX)/bin/$(INSTALL_SELF) .
	install -D -m 0644 README.md $(PREFIX)/README.md
	install -d -m 0755 $(PREFIX)/docs && install -m 0644 docs/*.md $(PREFIX)/docs/
	install -D -m 0644 systemd/aiohttp-memproxy.service /etc/systemd/system/aiohttp-memproxy.service
	install -d -m 0755 /etc/aiohttp-memproxy
	[ -e /etc/aiohttp-memproxy/config.yaml ] || install -m 0644 conf/config.yaml /etc/aiohttp-memproxy/config.yaml
	install -m 0644 conf/memproxy.env.example /etc/aiohttp-memproxy/env.example
	systemctl daemon-reload
	@echo "Keys: cp /etc/aiohttp-memproxy/env.example /etc/aiohttp-memproxy/env; chmod 600 it; fill it in."
	@echo "Then: systemctl enable --now aiohttp-memproxy"

# User service, for an IDE user's workstation: no root needed.
install-user-service:
	$(PYTHON) -m venv $(USER_PREFIX)
	$(USER_PREFIX)/bin/$(INSTALL_LOCKED) $(LOCK)
	$(USER_PREFIX)/bin/$(INSTALL_SELF) .
	install -D -m 0644 systemd/aiohttp-memproxy-user.service $(USER_UNITS)/aiohttp-memproxy.service
	install -d -m 0700 $(USER_CONFIG)
	[ -e $(USER_CONFIG)/config.yaml ] || install -m 0644 conf/config.yaml $(USER_CONFIG)/config.yaml
	install -m 0644 conf/memproxy.env.example $(USER_CONFIG)/env.example
	systemctl --user daemon-reload
	@echo "Keys: cp $(USER_CONFIG)/env.example $(USER_CONFIG)/env; chmod 600 it; fill it in."
	@echo "Then: systemctl --user enable --now aiohttp-memproxy"

# systemd-analyze verify checks that ExecStart exists: verify copies whose ExecStart is this checkout's venv
# (the same program the install puts in place), so the check runs without installing anything system-wide.
verify-units: $(VENV)/.installed
	rm -rf .units && mkdir .units
	sed 's|^ExecStart=/opt/aiohttp-memproxy/bin/memproxy|ExecStart=$(CURDIR)/$(BIN)/memproxy|' \
		systemd/aiohttp-memproxy.service > .units/aiohttp-memproxy.service
	sed 's|^ExecStart=%h/.local/share/aiohttp-memproxy/venv/bin/memproxy|ExecStart=$(CURDIR)/$(BIN)/memproxy|' \
		systemd/aiohttp-memproxy-user.service > .units/aiohttp-memproxy-user.service
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
