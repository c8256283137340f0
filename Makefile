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

.PHONY: run test soak lint bench broker broker-stop install system-deps schemas clean help

help:
	@sed -n '2,7p' Makefile

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ma-pipeline needs Python 3.11, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Segment's JavaScript SDKs (@segment/analytics-node, @segment/analytics-next), unmodified, for
# tests/integration/worker/test_segment_sdks.py: test dependencies only, from tests/sdk's lock.
SDK_STAMP := tests/sdk/node_modules/.installed
$(SDK_STAMP): tests/sdk/package.json tests/sdk/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node 20 and npm (apt-get install nodejs npm)"; exit 1; }
	cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $(SDK_STAMP)

# Java and Maven run the local Kafka broker; Chromium runs the JS tag's browser test; wrk is the
# load generator of `make bench` (bench/collector.py).
# Installed with apt-get only when missing and when we are root (CI); otherwise we say what to do.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	  else \
	    echo "missing system packages:$$missing (install them, e.g. sudo apt-get install$$missing)"; \
	  fi; \
	fi

broker: $(STAMP) system-deps
	$(BIN)/ma-pipeline broker start

broker-stop: $(STAMP)
	$(BIN)/ma-pipeline broker stop

run: $(STAMP) system-deps
	$(BIN)/ma-pipeline run

test: $(STAMP) $(SDK_STAMP) system-deps
	$(BIN)/pytest -q

# Long soaks, not in `make test`: 30 fresh starts (half with two workers) and 20 kill -9 cycles
# under a CPU hog; figures in soak/results.json.
soak: $(STAMP) system-deps
	MA_SOAK=1 $(BIN)/pytest -q tests/soak

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

schemas: $(STAMP)
	$(BIN)/python -m pipeline.schemas

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache
