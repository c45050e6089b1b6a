#!/usr/bin/env bash
# Finance demo on the bundled real panel (offline, a few minutes on 2 cores):
# prepare -> train -> quick walk-forward backtest -> forecast (XNYS calendar) -> zero-shot forecast of a
# Yahoo-style single-series CSV -> batch score.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 SUITE_PROGRESS=${SUITE_PROGRESS:-1}
RUNS=${RUNS_DIR:-runs}
# Keep the command's output on screen and pick the run directory out of it afterwards.
# (Not `tee /dev/stderr`: when stderr is a log file, reopening it truncates the log.)
OUT=$(mktemp); CSV=$(mktemp -d); trap 'rm -rf "$OUT" "$CSV"' EXIT
rundir() { sed -n 's/^Run directory: \(.*\)  (completed)$/\1/p' "$OUT" | tail -1; }

echo "--- finance 1/6: prepare the real daily panel"
$PY -m core.data prepare finance-daily-panel

echo "--- finance 2/6: train the global TFT without the VIX/WTI covariates (so it can read any price file; last 63 days held out)"
$PY -m domains.finance.train --runs-dir "$RUNS" --epochs 2 --max-batches 30 --no-covariates | tee "$OUT"
TRAIN=$(rundir)

echo "--- finance 3/6: quick walk-forward backtest vs the classical risk models"
$PY -m domains.finance.backtest --runs-dir "$RUNS" --quick

echo "--- finance 4/6: forecast from the latest data (dates on the NYSE calendar)"
$PY -m domains.finance.forecast --runs-dir "$RUNS" --model-run "$TRAIN" --tickers SP500 AAPL JPM XOM

echo "--- finance 5/6: a Yahoo-style single-series CSV (Date index, Adj Close) of a new ticker, forecast zero-shot"
$PY - "$CSV/QQQ.csv" <<'PYEOF'
import sys
from domains.finance.data import load_panel
s = load_panel()
s = s[s["ticker"] == "NASDAQ"].set_index("date").rename_axis("Date")  # written as a stranger would download it
s = s.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Adj Close", "volume": "Volume"})
s[["Open", "High", "Low", "Adj Close", "Volume"]].to_csv(sys.argv[1])
PYEOF
$PY -m domains.finance.forecast --runs-dir "$RUNS" --model-run "$TRAIN" --data "$CSV/QQQ.csv" --zero-shot

echo "--- finance 6/6: batch forecasts for every ticker to Parquet (core.scoring)"
$PY -m domains.finance.score --runs-dir "$RUNS" --model-run "$TRAIN" --workers 1
