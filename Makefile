# Sentri — `make run` starts everything with demo cameras, `make test` runs the tests.
# Both create the virtual environment (.venv) first when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sentri-installed
PYTEST_ARGS ?=
N ?= 2
# docker compose, or docker-compose against podman's socket (scripts/compose.sh)
COMPOSE ?= bash scripts/compose.sh

.PHONY: run test test-fast test-faults lint format bench up down logs ps scale-detector venv lock clean test-tools test-deploy

run: $(STAMP) ## Start Redis, ingest, workers, gateway and a demo agent (http://localhost:5002)
	$(VENV)/bin/sentri up --demo

test: $(STAMP) test-tools ## Install what is missing, then run the test suite (fault drills: make test-faults)
	$(PY) -m pytest -m "not faults and not deploy" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

test-faults: $(STAMP) test-tools ## The fault-injection drills (kill -9, SIGSTOP, floods, outages), ~6 min
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

bench: $(STAMP) ## Benchmarks; writes bench/results.json and bench/results.md
	$(PY) -m bench.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

venv: $(STAMP)

# The venv is (re)built when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/install.sh
	touch $(STAMP)

test-tools: ## Chromium and docker-compose from Debian for the browser/deploy tests
	@bash scripts/ensure_test_tools.sh

lock: ## Re-resolve and pin every dependency into constraints.txt
	bash scripts/lock.sh

up: ## docker compose (or podman): build the images, start every central service
	$(COMPOSE) up -d --build

down: ## stop the stack (volumes are kept; `bash scripts/compose.sh down -v` drops them)
	$(COMPOSE) down

logs:
	$(COMPOSE) logs -f --tail=200

ps:
	$(COMPOSE) ps

scale-detector: ## make scale-detector N=4
	$(COMPOSE) up -d --no-recreate --scale detector=$(N)

test-deploy: $(STAMP) ## Real images + compose stack under podman/docker (~15-25 min; not in `make test`)
	bash scripts/ensure_deploy_tools.sh >/dev/null
	$(PY) -m pytest -m deploy tests/deploy/test_real_stack.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
