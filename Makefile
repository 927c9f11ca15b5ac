# VGW top-level commands. `make demo` and `make test` are the README's quick start; both set up
# everything they need first (Debian packages, the venv, native builds) and are idempotent.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-python test-dataplane lint events-docs config-schema demo chaos bench clean images deploy-tools test-deploy

setup:
	@scripts/setup.sh

# pytest exits 5 when it collected nothing; make treats that as a failure, as it should.
test: setup lint test-dataplane test-python

test-python:
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 $(PYTEST_ARGS)

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

# Regenerate docs/config.schema.json (the config document's JSON Schema, for editors) from the
# pydantic models. A test fails when the checked-in file differs from what this writes.
config-schema: setup
	$(PY) -m vgw.config.schemagen docs/config.schema.json

# Every container image, with podman, from a debootstrap base (scripts/build-images.sh, docs/deploy.md).
images: deploy-tools
	@scripts/build-images.sh

# What building and running the images needs (not part of `make setup`: only these targets use it).
DEPLOY_APT := podman runc catatonit iptables debootstrap
deploy-tools:
	@missing=$$(for p in $(DEPLOY_APT); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

# The shipped forms run for real (minutes: image builds, containers): tests marked `deploy`.
test-deploy: setup images
	VGW_TEST_DEPLOY=1 $(PY) -m pytest -q -p no:cacheprovider -m deploy tests/deploy $(PYTEST_ARGS)

# The lab (deploy/lab, docs/lab.md): up, every scenario under steady client traffic, the report, down.
demo: setup
	$(VENV)/bin/vgwctl lab demo $(DEMO_ARGS)

# The chaos suite (deploy/lab/chaos.py, docs/lab.md "Chaos"): a lab of its own, every fault in turn
# under client traffic, the report table; fails when a fault broke its bound. make test runs a short form.
chaos: setup
	$(VENV)/bin/vgwctl lab --id chs chaos $(CHAOS_ARGS)

bench: setup
	@if [ -f dataplane/Makefile ]; then $(MAKE) -s -C dataplane bench; fi
	$(PY) tests/bench/bench_bus.py
	$(PY) tests/bench/bench_config.py
	$(PY) tests/bench/bench_healthcheck.py
	$(PY) tests/bench/bench_forwarder.py
	$(PY) tests/bench/bench_fwd_control.py
	$(PY) tests/bench/bench_fwd_restart.py
	$(PY) tests/bench/bench_lab_restart.py
	$(PY) tests/bench/bench_routectl.py
	$(PY) tests/bench/bench_mass_transition.py

clean:
	@if [ -f dataplane/Makefile ]; then $(MAKE) -s -C dataplane clean; fi
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
