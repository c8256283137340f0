# ma-pipeline: every target bootstraps what it needs (.venv, Python packages, Kafka jars).
#   make run    the whole pipeline on this machine (local broker, worker, collector, chDB)
#   make test   the whole suite (starts its own broker on a free port)
#   make lint   ruff + mypy --strict
#   make bench  benchmarks -> bench/results.json
#   make soak   fresh-start and kill -9 soaks -> soak/results.json

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test soak lint bench broker broker-stop install system-deps test-deps schemas clean help

help:
	@sed -n '2,7p' Makefile

# setuptools tells every editable install, in a 10-line box, to mind folders named like the
# package (this checkout is one: that is the point); nothing to act on, so not shown.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

# What running needs (make run, broker, schemas); the developer tools (pytest, ruff, mypy,
# Segment's Python SDK for its tests) only for test, soak and lint.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ma-pipeline needs Python 3.11, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(EDITABLE) $(BIN)/pip install -q -c requirements.lock -e .
	@touch $(STAMP)

DEV_STAMP := $(VENV)/.installed-dev
$(DEV_STAMP): $(STAMP)
	$(EDITABLE) $(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	@touch $(DEV_STAMP)

install: $(STAMP)

# Segment's JavaScript SDKs (@segment/analytics-node, @segment/analytics-next), unmodified, for
# tests/integration/worker/test_segment_sdks.py: test dependencies only, from tests/sdk's lock.
SDK_STAMP := tests/sdk/node_modules/.installed
$(SDK_STAMP): tests/sdk/package.json tests/sdk/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node 20 and npm (apt-get install nodejs npm)"; exit 1; }
	cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $(SDK_STAMP)

# Java and Maven run the local Kafka broker (what `make run` needs); Chromium runs the browser
# tests and `wrk` is the load generator of `make bench` (bench/collector.py): test tools only.
# Installed with apt-get only when missing and when we are root (CI); otherwise we say what to do.
define apt_install
	@missing=""; \
	for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	  else \
	    echo "missing system packages:$$missing (install them, e.g. sudo apt-get install$$missing)"; \
	  fi; \
	fi
endef

system-deps:
	$(call apt_install,java:openjdk-17-jre-headless mvn:maven)

test-deps: system-deps
	$(call apt_install,chromium:chromium wrk:wrk)

broker: $(STAMP) system-deps
	$(BIN)/ma-pipeline broker start

broker-stop: $(STAMP)
	$(BIN)/ma-pipeline broker stop

run: $(STAMP) system-deps
	$(BIN)/ma-pipeline run

# Two processes (pytest-xdist), each test file whole on one of them with its own broker: the
# suite mostly waits on brokers, workers and timers, so this halves its time on two cores.
TEST_PROCESSES ?= 2

test: $(DEV_STAMP) $(SDK_STAMP) test-deps
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --dist loadfile

# Long soaks, not in `make test`: 30 fresh starts (half with two workers) and 20 kill -9 cycles
# under a CPU hog; figures in soak/results.json.
soak: $(DEV_STAMP) test-deps
	MA_SOAK=1 $(BIN)/pytest -q tests/soak

lint: $(DEV_STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

bench: $(STAMP) test-deps
	$(BIN)/python -m bench

schemas: $(STAMP)
	$(BIN)/python -m pipeline.schemas

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache
