# Picogate developer entry points. Every target that needs tools runs tools/bootstrap.sh first:
# it installs mosquitto/socat when missing and keeps .venv in step with pyproject.toml.
#
#   make test PYTEST_ARGS='tests/integration -k modbus'
#   make bench BENCH_ARGS='--quick'
#   make test EXTRAS=dev,micropython      # extra optional-dependency groups for the venv

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
EXTRAS      ?= dev
PYTEST_ARGS ?=
BENCH_ARGS  ?=
BOOTSTRAP   := bash tools/bootstrap.sh $(EXTRAS)

.PHONY: help bootstrap run test lint bench wheel clean distclean

help: ## show this help
	@echo "Picogate make targets:"
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "Variables: PYTEST_ARGS, BENCH_ARGS, EXTRAS (default dev)."

bootstrap: ## install mosquitto/socat if missing; create .venv and install picogate[EXTRAS]
	@$(BOOTSTRAP)

run: bootstrap ## run the demo (picogate demo)
	$(VENV)/bin/picogate demo

test: bootstrap ## run the tests (pass PYTEST_ARGS)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: bootstrap ## ruff check, ruff format --check, mypy (strict), the import contract, firmware vs rp2 stubs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) tools/fw_typecheck.py

bench: bootstrap ## run the benchmarks (pass BENCH_ARGS)
	$(PY) bench/run.py $(BENCH_ARGS)

wheel: bootstrap ## build a wheel into dist/
	$(PY) -m pip wheel --disable-pip-version-check -q --no-deps -w dist .

clean: ## remove build output and caches (keeps .venv)
	rm -rf dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv and .rp2 (the emulated Pico's runner) too
	rm -rf $(VENV) .rp2
