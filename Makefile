# VGW top-level commands. `make demo` and `make test` are the README's quick start; both set up
# everything they need first (Debian packages, the venv, native builds) and are idempotent.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-python test-dataplane lint events-docs demo bench clean

setup:
	@scripts/setup.sh

# pytest exits 5 when it collected nothing; make treats that as a failure, as it should.
test: setup lint test-dataplane test-python

test-python:
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-dataplane:
	@if [ -f dataplane/Makefile ]; then $(MAKE) -s -C dataplane test; fi

PY_DIRS := $(wildcard vgw services dataplane/shim deploy/lab tests)

lint: setup
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/mypy

# Regenerate docs/events/ (JSON Schema + AsyncAPI) from the event models. A test fails when the
# checked-in files differ from what this writes.
events-docs: setup
	$(PY) -m vgw.events.docgen docs/events

# The lab (deploy/lab, docs/lab.md): up, every scenario under steady client traffic, the report, down.
demo: setup
	$(VENV)/bin/vgwctl lab demo

bench: setup
	@if [ -f dataplane/Makefile ]; then $(MAKE) -s -C dataplane bench; fi
	$(PY) tests/bench/bench_bus.py
	$(PY) tests/bench/bench_config.py
	$(PY) tests/bench/bench_healthcheck.py
	$(PY) tests/bench/bench_forwarder.py
	$(PY) tests/bench/bench_fwd_control.py
	$(PY) tests/bench/bench_fwd_restart.py
	$(PY) tests/bench/bench_routectl.py

clean:
	@if [ -f dataplane/Makefile ]; then $(MAKE) -s -C dataplane clean; fi
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
