# Flight-delay MLOps platform. `make help` lists the targets.
# Every target sets up what it needs: a fresh clone needs only Python 3.11 and make.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/uv/bin/uv
UV_VERSION := 0.13.9
BIN := $(VENV)/bin
MLOPS := $(BIN)/mlops
PYTEST_ARGS ?=
RUN_ARGS ?=
SERVE_ARGS ?=

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install -q uv==$(UV_VERSION)

# The pinned environment: rebuilt when a lock file or the package metadata changes.
$(VENV)/.stamp: requirements.lock requirements-dev.lock pyproject.toml | $(UV)
	test -x $(BIN)/python || $(UV) venv -q -p $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip install -q -r requirements.lock -r requirements-dev.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.stamp ## create or update the pinned environment (.venv)

lock: | $(UV) ## re-resolve requirements*.lock from requirements*.in
	$(UV) pip compile -q requirements.in --python-version 3.11 -o requirements.lock
	$(UV) pip compile -q requirements-dev.in --python-version 3.11 -o requirements-dev.lock

# Prepared Feast sources, registered definitions and a filled online store.
feature_repo/data/.stamp: $(VENV)/.stamp mlops/data.py mlops/realtime.py mlops/features.py feature_repo/definitions.py feature_repo/feature_store.yaml
	$(MLOPS) prepare
	$(MLOPS) feast-apply
	$(MLOPS) materialize
	touch $@

data: feature_repo/data/.stamp ## prepare the flights data, feast apply, materialize

# The local loop's shadow analysis (every run after the first model) needs a prometheus binary.
# Installing it may fail (no root, no apt-get): `make run` then goes on, says so, and deploy
# skips the shadow analysis with that reason, leaving the candidate a candidate.
prometheus: ## install prometheus, promtool and the Pushgateway (the local shadow analysis uses them)
	bash tools/install-prometheus.sh

local-tools:
	@bash tools/install-prometheus.sh || echo "make: WARNING: prometheus is not installed (see above):" \
	  "later runs skip the shadow analysis and keep their candidate; fix it, then \`make prometheus\`" >&2

run: data local-tools ## run the training pipeline locally (kfp.local) and print what it decided
	$(MLOPS) run $(RUN_ARGS)

serve: data ## serve the production model on 127.0.0.1:8080 (KServe V1/V2, /metrics)
	$(MLOPS) serve $(SERVE_ARGS)

compile: venv ## compile the pipeline to pipelines/training_pipeline.yaml
	$(MLOPS) compile

report: venv ## screenshot the newest local run report to runs/report.png
	bash tools/install-chromium.sh
	$(BIN)/python -c "from pathlib import Path; from tools.browser import screenshot; \
	r = max(Path('runs').glob('*/report.html'), key=lambda p: p.stat().st_mtime); \
	print(screenshot(r, Path('runs/report.png')))"

# Feast's Spark offline store (feature_repo/feature_store.spark.yaml) runs in a local JVM:
# tests/integration/test_feast_spark.py and bench_feast_spark need a Java runtime.
jre: ## install a Java runtime for pyspark (Feast's Spark offline store)
	bash tools/install-jre.sh

test: venv jre ## run the test suite (unit, integration, e2e, containers)
	$(BIN)/pytest -m "unit or integration or e2e or containers" $(PYTEST_ARGS)

test-unit: venv ## run the fast unit tests only
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

lint: venv ## ruff format check, ruff lint, mypy, import layers (import-linter)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy mlops components pipelines serving
	$(BIN)/lint-imports

# The TFX peer is optional: without it bench_vs_tfx records "not installed", never old figures.
bench: data jre ## run the benchmarks (with the TFX peer); figures go to bench/results.json
	bash tools/install-tfx-peer.sh || echo "TFX peer not installed; bench_vs_tfx will say so"
	$(BIN)/python -m bench.run

clean: ## remove generated data and runs (keeps the environment)
	rm -rf feature_repo/data runs registry

-include mk/*.mk

.PHONY: help venv lock data prometheus jre local-tools run serve compile report test test-unit lint bench clean
