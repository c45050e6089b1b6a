#!/usr/bin/env bash
# Create .venv when missing, (re)install when the requirement files changed, else do nothing.
# Staged because the stack needs it (see requirements/*.txt and shared STACK.md):
#   torch first (pinned), torchrec's deps, torchrec + recbole without deps, then the rest,
#   everything constrained by requirements/lock.txt so installs repeat.
set -euo pipefail
cd "$(dirname "$0")/.."
# The stack is pinned for CPython 3.11 (torch 2.14.1 wheels, requires-python in pyproject.toml).
# Take $PYTHON, else the first 3.11 on PATH; refuse anything else with one clear line.
pick_python() {
  local c
  for c in ${PYTHON:-} python3.11 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}
if [[ ! -x .venv/bin/python ]]; then
  PY=$(pick_python) || { echo "[setup] error: Python 3.11 is required (found: $(python3 --version 2>&1 || echo none)); install python3.11 (Debian: apt-get install python3.11-venv) or set PYTHON=/path/to/python3.11" >&2; exit 2; }
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || { echo "[setup] error: $PY has no venv/ensurepip module; on Debian/Ubuntu: apt-get install python3.11-venv (or use another 3.11, PYTHON=...)" >&2; exit 2; }
fi
VENV=.venv
STAMP="$VENV/.suite-install-stamp"
WANT="$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=(pip_quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c requirements/lock.txt)
# This machine's pip config lists local wheel folders that may not exist; pip warns once per
# package about them. Hide that noise only; real errors still show and still fail the script.
pip_quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
echo "[setup] 1/5 torch + torchvision";            "${PIP[@]}" -r requirements/stage1-torch.txt
echo "[setup] 2/5 torchrec runtime deps";          "${PIP[@]}" -r requirements/stage2-torchrec-deps.txt
echo "[setup] 3/5 torchrec, recbole (no deps)";    "${PIP[@]}" --no-deps -r requirements/stage3-nodeps.txt
echo "[setup] 4/5 MONAI, timm, forecasting, Ray, MLflow, Streamlit, data packages"; "${PIP[@]}" -r requirements/stage4-stack.txt
echo "[setup] 5/5 this project (editable)";        pip_quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
echo "$WANT" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
