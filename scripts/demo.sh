#!/usr/bin/env bash
# The main job end to end on the bundled real data. Each step prints its run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { echo; echo "=== $* ==="; }

step "1. prepare real data sets (python -m core.data prepare all)"
$PY -m core.data prepare all

for d in medical finance recommendation; do
  if [[ -f domains/$d/demo.sh ]]; then
    step "2. $d: train, evaluate and score (domains/$d/demo.sh)"
    bash domains/$d/demo.sh
  fi
done

if [[ -f dashboards/app.py && "${DEMO_NO_DASHBOARD:-0}" != "1" ]]; then
  step "3. dashboards on http://127.0.0.1:8501 (Ctrl-C to stop)"
  exec $PY -m streamlit run dashboards/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true --browser.gatherUsageStats false
fi
