# Tandem: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCE ?= simulator
IMPORTS := import torch, airflow, cosmos, duckdb, polars, great_expectations, mtl_model
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export DO_NOT_TRACK := 1

.PHONY: venv demo test lint bench clean

# torch==2.13.0 first (the CPU wheel on disk), then the project with its pinned set.
$(VENV)/.installed: pyproject.toml
	@echo "installing into $(VENV) (a few minutes the first time: 4 steps, each says when it is done)"
	@t=$$(date +%s); echo "  [1/4] a virtual environment ..."; test -x $(PY) || python3 -m venv $(VENV); \
	  echo "        done in $$(( $$(date +%s) - t ))s"
	@t=$$(date +%s); echo "  [2/4] torch 2.13.0, the CPU wheel on disk ..."; \
	  $(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true; \
	  echo "        done in $$(( $$(date +%s) - t ))s"
	@t=$$(date +%s); echo "  [3/4] Tandem and its pinned set: Airflow, cosmos, dbt, DuckDB, GX ..."; \
	  $(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true; \
	  echo "        done in $$(( $$(date +%s) - t ))s"
	@t=$$(date +%s); echo "  [4/4] importing torch, airflow, cosmos, duckdb, polars, great_expectations ..."; \
	  $(PY) -c "$(IMPORTS)" >/dev/null 2>&1 || $(PY) -c "$(IMPORTS)" || (echo "install failed" >&2; exit 1) \
	  && echo "        done in $$(( $$(date +%s) - t ))s: $(VENV) is ready"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	@TANDEM_DEMO_SOURCE=$(SOURCE) $(PY) -m mtl_model.pipeline.demo

test: venv
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q

lint: venv
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

# Benchmarks print their figures (docs/benchmarks.md records them); not part of `make test`.
bench: venv
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench]" 2>&1 | grep -v "is ignored" || true
	$(PY) bench/bench_simulate.py --sizes 1M,10M
	$(PY) bench/bench_train.py --threads 2 --epochs 2 --markdown
	$(PY) bench/bench_anomalies.py
	$(PY) bench/bench_night.py --events-per-day 1000000 --days 30

clean:
	rm -rf var dbt_project/target dbt_project/logs
