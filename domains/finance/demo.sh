#!/usr/bin/env bash
# Finance demo on the bundled real panel (offline, ~2-3 minutes on 2 cores):
# prepare -> train -> walk-forward backtest (2 folds) -> forecast -> batch score.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 SUITE_PROGRESS=${SUITE_PROGRESS:-1}
RUNS=${RUNS_DIR:-runs}
# Keep the command's output on screen and pick the run directory out of it afterwards.
# (Not `tee /dev/stderr`: when stderr is a log file, reopening it truncates the log.)
OUT=$(mktemp); trap 'rm -f "$OUT"' EXIT
rundir() { sed -n 's/^Run directory: \(.*\)  (completed)$/\1/p' "$OUT" | tail -1; }

echo "--- finance 1/5: prepare the real daily panel"
$PY -m core.data prepare finance-daily-panel

echo "--- finance 2/5: train the global TFT (holds out the last 63 days for validation)"
$PY -m domains.finance.train --runs-dir "$RUNS" --epochs 2 --max-batches 30 | tee "$OUT"
TRAIN=$(rundir)

echo "--- finance 3/5: walk-forward backtest vs random walk, historical, EWMA, GARCH(1,1)"
$PY -m domains.finance.backtest --runs-dir "$RUNS" --folds 2 --epochs 2 --refit-epochs 1 --max-batches 30

echo "--- finance 4/5: forecast from the latest data"
$PY -m domains.finance.forecast --runs-dir "$RUNS" --model-run "$TRAIN" --tickers SP500 AAPL JPM XOM

echo "--- finance 5/5: batch forecasts for every ticker to Parquet (core.scoring)"
$PY -m domains.finance.score --runs-dir "$RUNS" --model-run "$TRAIN" --workers 1
