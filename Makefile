# Rakuten product classification platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/rakuten-mlops
STAMP := $(VENV)/.installed
# Where `make run` imports the labelled data from (official layout).
RAKUTEN_SOURCE ?= ../shared/data/rakuten-sample
PYTEST_ARGS ?=

export PYTHONUNBUFFERED := 1

.PHONY: help install system-deps run test test-fast lint format bench mlflow-ui clean lock stack stack-down

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies and the package

system-deps: ## Install the system packages the tests start (redis, prometheus, chromium, nginx...)
	bash scripts/install-system-deps.sh

run: install ## Run the whole pipeline (import -> validate -> prepare -> train -> evaluate) with DVC
	@test -d .git || { echo "make run needs a git checkout (DVC tracks the pipeline in git)"; exit 1; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: install system-deps ## Run the whole test suite (installs what it needs first)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install ## Run the tests not marked slow
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## Lint and type-check (ruff + mypy)
	$(VENV)/bin/ruff check src tests bench deploy
	$(VENV)/bin/ruff format --check src tests bench deploy
	$(VENV)/bin/mypy

format: install ## Format the code and fix what ruff can fix
	$(VENV)/bin/ruff format src tests bench deploy
	$(VENV)/bin/ruff check --fix src tests bench deploy

bench: install ## Benchmark quality and speed on the shared sample (prints numbers)
	$(PY) bench/bench_classifier.py --source $(RAKUTEN_SOURCE)

stack: install system-deps ## Start the production topology as local processes (STACK_MODEL=models/classifier to serve it)
	$(PY) deploy/local/stack.py up $(if $(STACK_MODEL),--register-model $(STACK_MODEL))

stack-down: ## Stop every process `make stack` started and drop its databases
	$(PY) deploy/local/stack.py down

mlflow-ui: install ## Start the MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow/mlflow.db}" --host 127.0.0.1 --port 5000 --workers 1

clean: ## Remove caches and build outputs (keeps data and .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info

lock: ## Re-resolve the dependencies in a scratch venv and rewrite requirements/lock.txt
	rm -rf /tmp/rakuten-lock-venv && $(PYTHON_BIN) -m venv /tmp/rakuten-lock-venv
	/tmp/rakuten-lock-venv/bin/pip install --quiet ".[dev]"
	{ echo "# Pinned versions of every installed package (pip constraints). Regenerate with \`make lock\`."; \
	  /tmp/rakuten-lock-venv/bin/pip freeze --exclude-editable | grep -v '^rakuten-mlops' | sort -f; } > requirements/lock.txt
