# Two commands on a fresh machine: `make demo` (main job, embedded) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# On machines without a local CPU wheel of torch, point pip at PyTorch's CPU index, e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

export RECSYS_HOME ?= $(CURDIR)/.home
export AIRFLOW_HOME := $(RECSYS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
# SQLite only: wait for the write lock instead of failing a UI/API request with "database is locked" (plugins/recsys_sqlite.py)
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS ?= recsys_sqlite.SYNC_CONNECT_ARGS
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC ?= recsys_sqlite.ASYNC_CONNECT_ARGS
export MLFLOW_TRACKING_URI ?= sqlite:///$(RECSYS_HOME)/mlflow/mlflow.db
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# airflow standalone starts its components as `airflow ...` subprocesses: the venv must be on PATH
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-fast airflow-init ui mlflow-ui clean cluster-deps cluster-up cluster-down cluster-status cluster-demo

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=26"
	# the CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "torch==2.13.0+cpu"
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

airflow-init: install
	@mkdir -p $(AIRFLOW_HOME) $(RECSYS_HOME)/mlflow
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

# The main job: load online-retail, validate, train, evaluate and register through the Airflow DAG.
# `make demo DATASET=completejourney` runs the real-sized shop (a year of grocery baskets, 92k products).
DATASET ?= online-retail
export DATASET
demo: airflow-init
	bash scripts/demo.sh

# the tests start real PostgreSQL and Redis servers (the distributed topology): Redis comes from Debian's packages
test: install cluster-deps
	$(PY) -m pytest -q --durations=25

# Unit tests only (no network, no real encoder)
test-fast: install
	$(PY) -m pytest -q -m "not slow and not network"

ui: airflow-init
	$(VENV)/bin/airflow standalone

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000

# ---- the distributed topology without Docker (deploy/localcluster.py; docker-compose.yml is the same for real deployments)
# PostgreSQL 15 server binaries must be installed (Debian: postgresql-15); Redis is installed here when missing.
cluster-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q redis-server >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; \
	  elif command -v sudo >/dev/null; then sudo apt-get install -y -q redis-server; \
	  else echo "redis-server missing: install Debian's package redis-server"; exit 1; fi; }

CLUSTER_ARGS ?=
cluster-up: install cluster-deps
	$(PY) -m deploy.localcluster up $(CLUSTER_ARGS)

cluster-down: install
	$(PY) -m deploy.localcluster down

cluster-status: install
	$(PY) -m deploy.localcluster status

# One command: bring the topology up and run the training DAG on it end to end through the REST API.
RECSYS_CLUSTER_CONF ?= {"dataset": "online-retail"}
cluster-demo: cluster-up
	$(PY) -m deploy.localcluster trigger recsys_training --conf '$(RECSYS_CLUSTER_CONF)' --wait

clean:
	rm -rf $(RECSYS_HOME)
