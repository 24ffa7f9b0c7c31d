# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TOWERFLOW_HOME ?= $(CURDIR)/.towerflow
export DAGSTER_HOME ?= $(TOWERFLOW_HOME)/dagster
export MLFLOW_DISABLE_TELEMETRY := true
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test test-fast dev bench clean-home

# torch first, pinned to the CPU wheel on disk, so the project's torch range is already met
# and pip never pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# One run at a time: every job writes the one DuckDB warehouse (a single writer), so a sensor's
# run queues behind a scheduled retrain instead of failing on the file lock.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\nconcurrency:\n  runs:\n    max_concurrent_runs: 1\n' > $@

# `make demo WORKERS=2` trains two_tower_model on 2 processes (torchrun, DDP); default: one, in process.
WORKERS ?=
comma := ,
# The generative group's demo run is small (a 32-wide 1+1-layer retriever, 2 epochs, 300 users
# per split decoded); the product defaults in assets/config.py are TIGER-sized.
GENERATIVE_DEMO := "item_semantic_ids": {"config": {"epochs": 20}}, "generative_retriever": {"config": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn": 64, "history_len": 10, "epochs": 2, "valid_users": 200}}, "generative_evaluation": {"config": {"eval_users": 300}}
DEMO_CONFIG := --config-json '{"ops": {$(GENERATIVE_DEMO)$(if $(WORKERS),$(comma) "two_tower_model": {"config": {"workers": $(WORKERS)}})}}'

# Generate the default synthetic data only when no event file has landed, then run the graph.
demo: install $(DAGSTER_HOME)/dagster.yaml
	@if [ -z "$$(find $(TOWERFLOW_HOME)/landing/events -type f 2>/dev/null | head -n 1)" ]; then \
		$(BIN)/towerflow generate; \
	else echo "landing/events already has files: not generating"; fi
	$(BIN)/dagster asset materialize -m orchestration.definitions --select '*' $(DEMO_CONFIG)
	$(BIN)/towerflow status
	@echo; echo "Recommendations for one known user (towerflow recommend --user ID):"
	$(BIN)/towerflow recommend --sample 1 -k 10
	@echo; echo "The same user from the generative retriever (towerflow recommend --retriever generative):"
	$(BIN)/towerflow recommend --sample 1 -k 10 --retriever generative

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

bench: install
	$(PIP) -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_cleaning.py

clean-home:
	rm -rf $(TOWERFLOW_HOME)
