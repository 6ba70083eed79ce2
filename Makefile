# The two commands of the README, each doing its own set-up:
#   make run    create .venv if absent, install the pinned stack, run the whole DAG
#   make test   the same .venv, then the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/config.yaml
SNAKEMAKE_ARGS ?=

.PHONY: run test lint dry-run report bench bench-dag gpu-check reproduce-cifar10 reproduce-imagenet clean-results help

help:
	@echo "make run      the whole DAG on $(CONFIG) (creates $(VENV) on first use)"
	@echo "make test     the test suite"
	@echo "make lint     ruff, snakefmt, lint-imports (the layering) and snakemake --lint"
	@echo "make dry-run  what a run would do"
	@echo "make report   results/report.html: every table and figure of the run, captioned"
	@echo "make bench    every benchmark, one at a time; headline ratios in bench/results/summary.md"
	@echo "make gpu-check  on one GPU (< 8 min): bench/gpu.py, 2-rank training, a lease, an fp16 attack, sharded evaluation, the peer ratios"
	@echo "make bench-dag  the whole default DAG twice from empty folders (auto, then float32 on the CPU limited to AVX2): wall time, fixed cost per job"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the pins or the package metadata change. A first install takes about 6.5 GB
# (torch's CUDA build and its nvidia-* wheels): checked before pip starts, so that a full disk
# stops with the numbers instead of pip's "No space left on device" halfway through.
VENV_MIN_FREE_GB ?= 8
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	@if ! ls -d $(VENV)/lib/python*/site-packages/torch >/dev/null 2>&1; then \
		free=$$(df -Pk $(VENV) | awk 'NR == 2 {print int($$4 / 1048576)}'); \
		if [ "$$free" -lt $(VENV_MIN_FREE_GB) ]; then \
			echo "make: installing the pinned stack into $(VENV) needs about $(VENV_MIN_FREE_GB) GB free;" \
				"df says $$free GB free there. Free some space, or put the environment on a" \
				"bigger disk (make VENV=/path/.venv ...), then run make again." >&2; \
			exit 1; \
		fi; \
	fi
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# `robustsoup config` first: Snakemake reports a YAML syntax error without its file and line.
run: $(STAMP)
	@$(BIN)/robustsoup config $(CONFIG) > /dev/null
	$(BIN)/snakemake --cores all --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

dry-run: $(STAMP)
	@$(BIN)/robustsoup config $(CONFIG) > /dev/null
	$(BIN)/snakemake --cores all --configfile $(CONFIG) --dry-run $(SNAKEMAKE_ARGS)

report: $(STAMP)
	$(BIN)/snakemake --cores all --configfile $(CONFIG) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --configfile $(CONFIG) --report results/report.html
	@echo "report: results/report.html"

reproduce-cifar10 reproduce-imagenet: reproduce-%:
	@echo "Set the data roots in config/presets/$*.yaml (data.root, data.shifts), then on the cluster:"
	@echo "  $(BIN)/snakemake --profile profiles/slurm --configfile config/presets/$*.yaml"
	@echo "or on a workstation with 4 GPUs:"
	@echo "  $(BIN)/snakemake --cores all --resources gpu=4 --configfile config/presets/$*.yaml"
	@echo "Expected artifacts (docs/reproducing.md says which paper table each one answers):"
	@echo "  (each table: mean ± sd over the config's seeds; each seed's own under results/$*/seed-<s>/)"
	@echo "  results/$*/tables/accuracy.{csv,md}        clean / Linf / L2 / L1 / union accuracy, training cost"
	@echo "  results/$*/seed-<s>/figures/soup_line_*    accuracy along the soup lines"
	@echo "  results/$*/tables/soups_shifts.{csv,md}    soups per distribution shift"
	@echo "  results/$*/seed-<s>/figures/soup_{composition,ternary}.{png,pdf}"
	@echo "  results/$*/tables/rws_{table1,table4,oracle_free,transfer}.{csv,md}, seed-<s>/figures/rws_*"
	@echo "  results/$*/tables/distill.{csv,md}         robust distillation"
	@echo "  results/$*/metrics/all.tsv                 every measurement of every seed, tidy"
	@echo "  then: $(BIN)/snakemake --configfile config/presets/$*.yaml --report results/report.html"

# Tests marked `ci` (slow) run in CI only: .ci/run calls `make test PYTEST_ARGS=`. The 25 slowest
# tests are listed at the end, so that a slow one is seen where it is added.
PYTEST_ARGS ?= -m "not ci"
test: $(STAMP)
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

# The soups benchmark uses the base models of the default run (make run first); the peer benchmarks
# read the parity kit's reference checkouts from REFS (tools/parity/README.md; without them they fall back).
REFS ?= /tmp/refs
bench: $(STAMP)
	$(BIN)/python bench/run_all.py --refs $(REFS)

# One GPU, under 8 minutes: the GPU paths a first real run depends on, one table (bench/gpu_check.py).
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py
	$(BIN)/python bench/peers.py --device cuda --quick --refs $(REFS) --summary bench/results/peers_gpu.json

# ~18 minutes on 2 cores: two whole runs of the default DAG in temporary folders (auto; float32 limited to AVX2).
bench-dag: $(STAMP)
	$(BIN)/python bench/dag_walltime.py --cores $(shell nproc) --precisions auto,float32 --avx2-float32 --summary bench/results/dag_walltime.json

# Code shape: ruff (lint + format), snakefmt, the import-layer contracts, snakemake --lint.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools workflow/scripts
	$(BIN)/ruff format --check src tests bench tools workflow/scripts
	$(BIN)/snakefmt --check workflow/
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint --configfile $(CONFIG)

clean-results:
	rm -rf results logs benchmarks .snakemake
