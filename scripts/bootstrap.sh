#!/usr/bin/env bash
# Create .venv when missing, (re)install when the requirement files changed, else do nothing.
# Staged because the stack needs it (see requirements/*.txt and shared STACK.md):
#   torch first (pinned), torchrec's deps, torchrec + recbole without deps, then the rest,
#   everything constrained by requirements/lock.txt so installs repeat.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
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
