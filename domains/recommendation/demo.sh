#!/usr/bin/env bash
# Recommendation demo on the bundled MovieLens-100K (offline; the default training run — epoch chosen on validation, then refit — dominates):
# prepare → train (two-tower + most-popular + BPR on the same split) → evaluate → score all users → recommend (each a job run of its own) → the sequence model, 3 quick epochs.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUNS=${RUNS_DIR:-runs}
$PY -m core.data prepare ml-100k
$PY -m domains.recommendation.train --runs-dir "$RUNS" ${DEMO_TRAIN_ARGS:-}
$PY -m domains.recommendation.evaluate --runs-dir "$RUNS"
$PY -m domains.recommendation.score --runs-dir "$RUNS" --overwrite
$PY -m domains.recommendation.recommend --runs-dir "$RUNS" --user 42
$PY -m domains.recommendation.recommend --runs-dir "$RUNS" --similar-to 50 --k 5
$PY -m domains.recommendation.recommend --runs-dir "$RUNS" --user 99999 --k 5   # unknown user: flagged fallback
$PY -m domains.recommendation.train_sequential --runs-dir "$RUNS" --epochs 3   # the sequence model on leave-last-out (quick: 3 epochs; the default early-stops at ~25)
