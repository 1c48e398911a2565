# Flywheel: the three commands the README promises, plus a few helpers.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test lint demo down clean-var help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup:  ## install Debian packages and both virtual environments (idempotent)
	@deploy/local/setup.sh

lint: setup  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy flywheel model_store serving training monitoring tasks loadtests

test: setup lint  ## set-up, lint, then the whole test suite against real servers
	@$(VENV)/bin/pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status = 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

REPLICAS ?= 1
ENGINES ?= embedded

demo: setup  ## the platform's main job (REPLICAS=2: two of every server and gateway; ENGINES=scale-out: Spark cluster, Airflow on Celery)
	@REPLICAS=$(REPLICAS) ENGINES=$(ENGINES) deploy/local/demo.sh

down:  ## stop whatever `flywheel up` started
	$(VENV)/bin/flywheel down

clean-var: down  ## remove local state under var/ (models, data, logs)
	rm -rf var
