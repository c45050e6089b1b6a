#!/usr/bin/env bash
# Medical demo on the real offline volumes (≤ 3 min on 2 cores): prepare → quick train (Colin27)
# → evaluate on the held-out MNI152 → infer one volume → score a folder → export a MONAI bundle.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS_DIR:-runs}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "--- medical 1/6: prepare MSD-layout tasks (Colin27+AAL / MNI152, InVesalius head CT)"
$PY -m core.data prepare medical
if ! $PY -c "from core.data import dataset_dir; dataset_dir('msd-brain-aal')" 2>/dev/null; then
  echo "--- medical: SKIPPED — the MRI task needs the Debian package mricron-data (Colin27 + AAL)."
  echo "    Install it with: sudo apt-get install -y mricron-data invesalius-examples ; then rerun make demo."
  exit 0
fi
echo "--- medical 2/6: quick 3D UNet training (200 steps, mild augmentation, ~1 min on 2 cores; the full default is python -m domains.medical.train)"
# --augment standard: in 200 steps the default robust recipe has not yet learnt the deep grey nuclei (Dice 0.01 measured);
# the mild recipe segments all four classes at this budget
$PY -m domains.medical.train --runs-dir "$RUNS" --augment standard --no-with-skull --max-epochs 10 --iters-per-epoch 20 --val-every 5 --no-evaluate-test
echo "--- medical 3/6: evaluate on the held-out MNI152 volume (native grid, Dice + HD95)"
$PY -m domains.medical.evaluate --runs-dir "$RUNS"
echo "--- medical 4/6: infer one volume -> mask NIfTI (input geometry), mL per structure, PNG overlay"
$PY -m domains.medical.infer --runs-dir "$RUNS"
echo "--- medical 5/6: score a folder (the task's volumes) -> masks + Parquet via core.scoring"
$PY -m domains.medical.score --runs-dir "$RUNS" --no-progress
echo "--- medical 6/6: export a MONAI bundle and run it back with monai.bundle"
$PY -m domains.medical.bundle --runs-dir "$RUNS"
