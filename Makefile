# Two commands for a newcomer: `make demo` and `make test`. Both create/refresh .venv first.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-slow data bench dashboards clean-runs help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## create .venv when missing and install the pinned stack (no-op when up to date)
	@bash scripts/bootstrap.sh

data: setup  ## prepare every real data set into datasets/data (idempotent)
	$(PY) -m core.data prepare all

demo: setup  ## prepare data, train every domain, score a batch, open the dashboards
	@bash scripts/demo.sh

test: setup  ## the default test suite (fast tier)
	$(PY) -m pytest

test-slow: setup  ## the slow tier as well
	$(PY) -m pytest -m "slow or not slow"

# the benchmarks (bench/finance_runs.py and bench/recommendation_seq_tune.py are tools that take arguments, not benchmarks)
BENCHES = bench/finance.py bench/scoring.py bench/finetune.py bench/medical.py bench/recommendation.py bench/trust.py

bench: setup  ## run every benchmark and rewrite its section of BENCHMARKS.md (hours on 2 cores; speed sections per kind of CPU)
	@for b in $(BENCHES); do echo "== $$b"; $(PY) $$b || exit 1; done

dashboards: setup  ## serve the Streamlit dashboards on http://127.0.0.1:8501
	$(PY) -m streamlit run dashboards/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true --browser.gatherUsageStats false

clean-runs:  ## delete runs/ (training outputs, MLflow store)
	rm -rf runs
