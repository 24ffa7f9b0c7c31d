# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TOWERFLOW_HOME ?= $(CURDIR)/.towerflow
export DAGSTER_HOME ?= $(TOWERFLOW_HOME)/dagster
export MLFLOW_DISABLE_TELEMETRY := true
# Two notices Dagster's own CLI prints on every `dagster asset materialize --select '*'` (the
# command is superseded by `dg launch --assets '*'`, which works here too; `*` selects through a
# beta parameter): not about this project, so not shown before the demo's own lines.
export PYTHONWARNINGS := ignore:Function `asset_materialize_command` is superseded,ignore:Parameter `include_sources` of function `AssetSelection.all`
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
UV := $(BIN)/uv pip install --quiet --python $(BIN)/python
# The venv's packages are installed without bytecode (uv's default; pip's --no-compile): compiling
# every module of torch, mlflow, dagster and the rest cost about 50 s of the install on 2 cores,
# most of it for modules nothing here imports. Python writes the bytecode of what a command
# imports the first time it imports it, unless PYTHONDONTWRITEBYTECODE is set (some containers
# set it), and then every command recompiles what it imports: so it is unset for these commands.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo lint test test-fast dev serve bench peers clean-home

# torch first, with pip, pinned to the CPU wheel on disk (pip's find-links), so the project's
# torch range is already met and nothing pulls a multi-GB CUDA build. Then the project with uv,
# which fetches and unpacks in parallel: the same versions as pip in a tenth of the time (about
# 12 s against 83 s for the project and its dev extra, 2 loaded cores). uv reads no pip.conf: where only
# pip reaches the package index (a mirror set in pip.conf), pip installs it instead.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 uv
	$(UV) -e '.[dev]' || $(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The committed instance settings (orchestration/dagster.yaml: telemetry off, the warehouse pool,
# one run at a time, run monitoring), linked into a DAGSTER_HOME that has none of its own. The
# single-writer rule does not depend on it: the code sets the pool limit on any instance and the
# daemon's dead_run_sweep fails runs whose process is gone (orchestration/instance.py).
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	ln -sfn $(CURDIR)/orchestration/dagster.yaml $@

# `make demo WORKERS=2` trains two_tower_model on 2 processes (torchrun, DDP); default: one, in process.
WORKERS ?=
# The ranking and generative groups, smaller than their product defaults (the library dataclasses
# in models/ranking/ and models/generative/, which the Dagster configs are derived from) for the
# demo's time budget: 100 candidates, 2 ranker epochs (its best on the demo data is the first),
# 500 validation users; a 32-wide 1+1-layer
# generative retriever, 4 epochs (its causal windows make an epoch cheap), 300 users per split decoded.
RANKING_DEMO := "ranking_candidates": {"config": {"n_candidates": 100}}, "ranked_recommendations": {"config": {"n_candidates": 100}}, "ranking_model": {"config": {"epochs": 2, "valid_users": 500}}
GENERATIVE_DEMO := "generative_retriever": {"config": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn": 64, "history_len": 10, "epochs": 4, "valid_users": 200}}, "generative_evaluation": {"config": {"eval_users": 300}}
COMMA := ,
# The two-tower 64 wide, the width of catalogs over 100k items (models/retrieval/towers.py
# width_for), not the 128 the demo's 2,000 items would get: 128 made an epoch 2.1x as long on the
# demo data (7 s against 3.4 s) and the demo 2 min 50 s of its 3 minutes (valid NDCG@10 0.186
# against 0.181, one run).
TWO_TOWER_DEMO := "two_tower_model": {"config": {"dim": 64, "hidden": 64$(if $(WORKERS),$(COMMA) "workers": $(WORKERS))}}
# The console at INFO: the steps' own lines, not Dagster's engine events at DEBUG before them.
LOGS_DEMO := "loggers": {"console": {"config": {"log_level": "INFO"}}}
DEMO_CONFIG := --config-json '{$(LOGS_DEMO)$(COMMA) "ops": {$(RANKING_DEMO)$(COMMA) $(GENERATIVE_DEMO)$(COMMA) $(TWO_TOWER_DEMO)}}'

# Generate the default synthetic data only when no event file has landed, then run the graph.
demo: install $(DAGSTER_HOME)/dagster.yaml
	@if [ -z "$$(find $(TOWERFLOW_HOME)/landing/events -type f 2>/dev/null | head -n 1)" ]; then \
		$(BIN)/towerflow generate; \
	else echo "landing/events already has files: not generating"; fi
	$(BIN)/dagster asset materialize -m orchestration.definitions --select '*' $(DEMO_CONFIG)
	$(BIN)/towerflow status
	@echo; echo "Recommendations for one known user (towerflow recommend --user ID):"
	$(BIN)/towerflow recommend --sample 1 -k 10
	@echo; echo "The same user, retrieved then ranked (towerflow recommend --rank --user ID):"
	$(BIN)/towerflow recommend --rank --sample 1 -k 10 --candidates 100
	@echo; echo "The same user from the generative retriever (towerflow recommend --retriever generative):"
	$(BIN)/towerflow recommend --sample 1 -k 10 --retriever generative

# Lint and format check first (ruff, configured in pyproject.toml): seconds, and it names the line.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

# The online service on 127.0.0.1:8000 (HOST=, PORT= to change; TOWERFLOW_API_TOKEN turns auth on).
HOST ?= 127.0.0.1
PORT ?= 8000
serve: install
	$(BIN)/towerflow serve --host $(HOST) --port $(PORT)

bench: install
	$(UV) -e '.[dev,bench]' || $(PIP) -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_cleaning.py

# The benchmarks' SASRec peer (rectools[torch]) in its own venv outside the repo: rectools 0.19
# pins pandas 2 / numpy 1, which towerflow's venv cannot hold. torch first (the CPU wheel), and a
# pyarrow that still reads numpy 1 (the Parquet files the benchmarks exchange with it).
PEERS ?= $(CURDIR)/.peers/rectools
peers:
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PEERS)/bin/python -m pip install --quiet --disable-pip-version-check 'rectools[torch]' 'pyarrow<21'

clean-home:
	rm -rf $(TOWERFLOW_HOME)
