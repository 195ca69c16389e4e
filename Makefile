# cxstream: `make demo` and `make test` set everything up from a machine with only Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: help install demo test test-unit test-integration test-slow lint format bench system-deps screenshot clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 20

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,rocksdb]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install cxstream with dev extras

system-deps:  ## Debian tools the tests use: prometheus + promtool, alertmanager + amtool, chromium (wallboard browser test)
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

screenshot: install system-deps  ## refresh docs/images/wallboard.png from the browser test
	CXSTREAM_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/e2e

demo: install  ## run broker, Redis, worker and generator locally; Ctrl-C stops all
	$(BIN)/cxstream demo

lint: install  ## ruff and mypy
	$(BIN)/ruff check stream tests bench
	$(BIN)/ruff format --check stream tests bench
	$(BIN)/mypy stream

format: install
	$(BIN)/ruff format stream tests bench
	$(BIN)/ruff check --fix stream tests bench

test: install system-deps lint  ## the whole suite CI runs (unit, static, integration)
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install system-deps
	$(BIN)/python -m pytest tests/integration

test-slow: install system-deps  ## long fuzz and soak runs
	$(BIN)/python -m pytest -m slow

bench: install  ## throughput/latency benchmarks; writes bench/results/latest.json
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cxstream-data .pytest_cache .mypy_cache .ruff_cache
