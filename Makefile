# The README's commands. Everything runs as root on Debian 12/13; `setup` is idempotent.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CT := $(VENV)/bin/cargotrace

.PHONY: setup demo test test-unit test-cluster-faults lint up down run bench clean-state

setup:
	bash scripts/setup.sh

demo: setup
	$(CT) demo

test: setup
	bash scripts/test.sh

test-cluster-faults: setup
	$(PY) -m pytest -q -p no:cacheprovider -m cluster_faults tests/integration

test-unit:
	$(PY) -m pytest tests/unit -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

up:
	$(CT) up

down:
	$(CT) down

run: up
	$(CT) run

bench: setup
	$(CT) up && $(CT) bench ingest
