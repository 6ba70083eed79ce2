# The two commands of the README, each doing its own set-up:
#   make run    create .venv if absent, install the pinned stack, run the whole DAG
#   make test   the same .venv, then the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/config.yaml
SNAKEMAKE_ARGS ?=

.PHONY: run test lint dry-run clean-results help

help:
	@echo "make run      the whole DAG on $(CONFIG) (creates $(VENV) on first use)"
	@echo "make test     the test suite"
	@echo "make lint     snakemake --lint"
	@echo "make dry-run  what a run would do"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores all --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

dry-run: $(STAMP)
	$(BIN)/snakemake --cores all --configfile $(CONFIG) --dry-run $(SNAKEMAKE_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile $(CONFIG)

clean-results:
	rm -rf results logs benchmarks .snakemake
