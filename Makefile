# Tacit developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

# Every dependency, direct and transitive, comes from requirements.lock (pip-tools output); Tacit itself is
# installed on top without resolving anything, so a fresh machine gets exactly what CI tested.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Tacit with the dev and align extras from the lock (torch==2.13.0 CPU)

LOCK_ARGS := --quiet --strip-extras --extra dev --extra align --extra postgres --no-emit-index-url --no-emit-find-links

lock: $(STAMP) ## Refresh requirements.lock to the newest releases pyproject.toml allows (then run make test)
	$(VENV)/bin/pip-compile --upgrade $(LOCK_ARGS) -o requirements.lock pyproject.toml
	@# the lock names the release, not this machine's CPU build of it: pip picks the +cpu wheel here, CUDA in images
	sed -i -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' requirements.lock

TACIT_HOME ?= $(HOME)/.local/share/tacit

run: $(STAMP) ## Set up and start the whole stack on embedded defaults (gateway on :8100; Ctrl-C stops it)
	$(VENV)/bin/tacit up --home $(TACIT_HOME)

test: $(STAMP) ## Set up and run the test suite
	$(PY) -m pytest -q -n 2 -m "not gpu and not reliability"

lint: $(STAMP) ## ruff, mypy and the import contracts (lint-imports: pyproject.toml [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy tacit tacit_cli feature_svc
	$(VENV)/bin/lint-imports

bench: $(STAMP) ## Benchmarks (print tables, compare against the baseline in the same run)
	$(PY) bench/features.py
	$(PY) bench/reward.py
	$(PY) bench/gateway.py

results: $(STAMP) ## Reward-model evaluation (paper + grouped protocols) -> docs/results/reward.md and PNGs
	$(PY) -m reward_svc.model.report --out docs/results

RELIABILITY_OUT ?= $(CURDIR)/.reliability
FUZZ_CASES ?= 1500
LOAD_SECONDS ?= 300

reliability: $(STAMP) ## Long reliability run (load 5 min, fuzzing, faults, access, privacy) -> docs/reliability.md
	rm -rf $(RELIABILITY_OUT) && mkdir -p $(RELIABILITY_OUT)
	@status=0; \
	TACIT_RELIABILITY_OUT=$(RELIABILITY_OUT) $(PY) bench/load.py --duration $(LOAD_SECONDS) || status=1; \
	TACIT_RELIABILITY_OUT=$(RELIABILITY_OUT) TACIT_FUZZ_CASES=$(FUZZ_CASES) \
		$(PY) -m pytest -q -n 2 -m "not gpu" tests/reliability || status=1; \
	$(PY) -m tests.reliability.report --results $(RELIABILITY_OUT) --out docs/reliability.md || status=1; \
	exit $$status

up: run ## Alias of run

down: ## Stop a stack started by `make run` in another terminal
	-@test -f $(TACIT_HOME)/up.json && kill -INT $$($(PY) -c "import json,sys; print(json.load(open(sys.argv[1]))['pid'])" $(TACIT_HOME)/up.json) || echo "no stack running in $(TACIT_HOME)"

.PHONY: help install lock run test lint bench results reliability up down
