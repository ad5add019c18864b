# Two commands set everything up on a fresh machine:
#   make repro   create .venv from requirements.lock, then run the whole pipeline (dvc repro)
#   make test    create .venv, then run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

# Offline by default: data and weights come from the verified mirrors of the download stages.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONUNBUFFERED=1

.PHONY: setup browser repro seeds exps sweep full-size gpu-check team-up team-down test test-fast ui serve clean

setup: $(STAMP)

# uv installs the locked packages in seconds where pip takes minutes (torch with its CUDA libraries)
UV_VERSION := 0.13.9
# uv reads no pip.conf: the extra indexes pip is configured with (a company mirror, a local copy of
# PyPI) go to uv as well, searched before PyPI, so what is at hand is not downloaded again (the
# packages are pinned, so which index serves one does not change it)
PIP_INDEXES := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
ifneq ($(strip $(PIP_INDEXES)),)
export UV_EXTRA_INDEX_URL ?= $(PIP_INDEXES)
export UV_INDEX_STRATEGY ?= unsafe-first-match
endif
UV_PIP := $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python

# Bytecode compiled once, at install: where PYTHONDONTWRITEBYTECODE is set, each dvc or python
# command would compile what it imports again (a no-op `dvc repro` takes 2.0 s instead of 1.1 s)
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_PIP) --compile-bytecode -r requirements.lock
	$(UV_PIP) --no-deps -e .
	touch $@

repro: setup
	dvc repro

# Each project's training over seeds 1-4 (seed 0 is the default run), each seed a DVC experiment
# (`dvc exp show`), then the spread of test accuracy in reports/seeds.md; `make seeds
# PROJECTS=fashion` seeds those projects alone (after a change to their recipe)
seeds: setup
	python -m dlprojects.seeds run $(if $(PROJECTS),--projects $(PROJECTS))
	python -m dlprojects.seeds table

# A sweep (experiments/sweeps/<name>.yaml): its trials as DVC experiments, WORKERS at a time,
# nested under one MLflow run; then its ranking and its comparison page (reports/sweeps/<name>.html)
SWEEP ?= experiments/sweeps/vit-lr-wd.yaml
WORKERS ?= 1
sweep: setup
	python -m dlprojects.sweep run $(SWEEP) --workers $(WORKERS)
	python -m dlprojects.sweep page $(SWEEP)

# `dvc exp show` at a glance: each model's headline test figure and the params that differ
# (ARGS="--csv" or other dvc exp show options)
exps: setup
	python -m dlprojects.experiments show $(ARGS)

# The full-size configuration, for a GPU (experiments/full-size.yaml), as the DVC experiment
# "full-size" (`dvc exp show`; the stages log the changed params to MLflow, tagged
# dvc.exp_name=full-size)
full-size: setup
	python -m dlprojects.experiments run experiments/full-size.yaml

# On a GPU machine: the smoke stages on CUDA, one DDP run over all GPUs, each torch model at full
# size for 50 steps (samples/s, memory, MFU); writes reports/gpu_check.md
gpu-check: setup
	python benchmarks/gpu_check.py

# A team's servers on 127.0.0.1, data under .team/ (gitignored): PostgreSQL, an S3 store
# (SeaweedFS), mlflow server with logins; DVC remote `team`. `eval $(python -m dlprojects.team env)`
# points a shell at them
team-up: setup
	python -m dlprojects.team up

team-down: setup
	python -m dlprojects.team down

# Debian's chromium, for the browser tests (MLflow UI, report page)
browser:
	@command -v chromium >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium \
		|| { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		     $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium; }; } >/dev/null

# two workers, a test file to each in turn, the longest first (tests/conftest.py): test_pipeline.py
# (the smoke pipeline, built once, each test building on the one before) on one, test_team.py (two
# clones against the team's servers) on the other, the other files beside them
TEST_WORKERS ?= 2
test: setup browser
	pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup
	pytest -m "not slow"

ui: setup  ## the MLflow UI on http://127.0.0.1:5000 (HOST=0.0.0.0 to share it)
	@echo "MLflow UI, opening each experiment on its training runs:" \
		"http://$(or $(HOST),127.0.0.1):$(or $(PORT),5000)/#/experiments?workflowType=machine_learning"
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(or $(HOST),127.0.0.1) \
		--port $(or $(PORT),5000) --workers 1

# One logged model over HTTP: make serve MODEL=models:/<name>@champion [PORT=5001] [HOST=0.0.0.0]
serve: setup
	python -m dlprojects.serve $(or $(MODEL),$(error name the model: make serve MODEL=models:/<name>@champion)) \
		--host $(or $(HOST),127.0.0.1) --port $(or $(PORT),5001)

clean:
	rm -rf $(VENV)
