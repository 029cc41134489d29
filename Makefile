# The project's tasks. CI runs `make test` exactly as a person types it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv installs everything from uv.lock; bootstrapped into .tools/ when it is not installed.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.tools/bin/uv
endif
PYTHON ?= python3.11
RUN := $(UV) run --frozen
PORT ?= 3000

.PHONY: help install demo dev mlflow serve dashboard test lint format db-upgrade db-stop stack stack-stop clean

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

.venv/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

# The dbt manifest Dagster loads the dbt assets from, parsed at build time (dagster dev
# re-parses on every load); rebuilt when a model, macro, test or the project file changes.
DBT_MANIFEST := dbt_project/target/manifest.json
$(DBT_MANIFEST): .venv/.installed dbt_project/dbt_project.yml $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null)
	$(RUN) dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

install: .venv/.installed $(DBT_MANIFEST) ## Create .venv, install the locked dependencies, parse the dbt project
	@$(RUN) retention env --dotenv .env --keep-existing > /dev/null

# Both write DAGSTER_HOME into ./.env, which Dagster's own commands read in this folder.
demo: install ## Build today, train a first champion (small budget), score today; serve the dashboard (:8501) and Dagster UI (:3000)
	$(RUN) retention demo --port $(PORT) --dotenv .env

dev: install ## Serve the Dagster UI (webserver and daemon) on the local instance
	eval "$$($(RUN) retention env --dotenv .env)" && $(RUN) dagster dev -w workspace.yaml -p $(PORT)

# The store's URI reaches MLflow through the environment: its password stays off the process list.
mlflow: install ## MLflow UI on :5000 over the platform's registry (backend store in Postgres)
	store="$$($(RUN) retention model tracking-uri --show-password)" && \
	MLFLOW_BACKEND_STORE_URI="$$store" $(RUN) mlflow ui --port 5000

serve: install ## Serve the prediction API on :8000 (RETENTION_API_* settings; docs at /docs)
	$(RUN) retention serve

dashboard: install ## Serve the retention team's dashboard on :8501, read-only (RETENTION_DASHBOARD_*)
	$(RUN) retention dashboard

test: install ## Run the whole test suite against real Postgres and real dbt (PYTEST_ARGS=… narrows it)
	$(RUN) pytest $(PYTEST_ARGS)

lint: install ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

db-upgrade: install ## Apply the warehouse migrations
	$(RUN) retention db upgrade

db-stop: install ## Stop the embedded Postgres
	$(RUN) retention db stop

stack: install ## The compose topology as local processes (Dagster, MLflow, API, dashboard, exporter, Prometheus), in the background
	$(RUN) retention stack up

stack-stop: install ## Stop everything `make stack` started (`retention stack status` shows how each service is)
	$(RUN) retention stack down

clean: ## Remove build outputs (keeps .retention/ data)
	rm -rf dbt_project/target dbt_project/logs .pytest_cache .ruff_cache
