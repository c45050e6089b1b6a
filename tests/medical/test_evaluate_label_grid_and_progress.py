"""Sixth real-use pass, evaluate and the long waits: a test label on another grid than its image (built from the bundled
MNI152 label) was refused only after the torch/MONAI imports, the model and the run's start (~1 min on a loaded machine),
leaving a failed run; resampling a mask back onto a large CT (7-15 s), HD95 (seconds per class on a 1 mm volume, ~20 s
under load) and the imports themselves showed nothing while the user waited."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domains.medical.validation import MedicalInputError
from tests.progress_support import record_bars

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "datasets/data/msd-brain-aal"


def _first(folder: Path) -> Path:
    files = sorted(folder.glob("*.nii*"))
    if not files:
        pytest.skip(f"{folder} is not prepared (python -m core.data prepare medical)")
    return files[0]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "\t" not in msg, msg
    return msg


# --- evaluate: a label on another grid ----------------------------------------------------------------------------


def _task_with_label(tmp_path: Path, label: nib.Nifti1Image) -> Path:
    import json

    task = tmp_path / "task"
    for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (task / d).mkdir(parents=True)
    meta = json.loads((BRAIN / "dataset.json").read_text())
    meta.pop("synthesis", None)
    (task / "dataset.json").write_text(json.dumps(meta))
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        for f in (BRAIN / d).iterdir():
            os.symlink(f, task / d / f.name)
    nib.save(label, task / "labelsTs" / _first(BRAIN / "labelsTs").name)
    return task


@pytest.mark.parametrize("change", ["shape", "affine"])
def test_evaluate_refuses_a_label_on_another_grid_before_the_model_or_a_run(tmp_path, tiny_run, monkeypatch, change):
    from core.config import parse_config
    from domains.medical import predict
    from domains.medical.config import EvaluateConfig
    from domains.medical.evaluate import evaluate

    src = nib.load(_first(BRAIN / "labelsTs"))
    data, aff = np.asarray(src.dataobj), src.affine.copy()
    if change == "shape":  # the label saved at 2 mm (a resampled copy)
        data, aff[:3, :3] = data[::2, ::2, ::2], aff[:3, :3] * 2
    else:  # same shape, origin 4 mm off (another export's header)
        aff[:3, 3] += 4.0
    task = _task_with_label(tmp_path, nib.Nifti1Image(data.astype(np.uint8), aff))
    runs_before = sorted(p.name for p in tiny_run.parent.iterdir())

    def model_loaded(*a, **k):
        raise AssertionError("the model was loaded before the label's grid was checked")

    monkeypatch.setattr(predict.Segmenter, "from_run", classmethod(model_loaded))
    cfg = parse_config(EvaluateConfig, ["--runs-dir", str(tiny_run.parent.parent), "--model-run", str(tiny_run), "--task", str(task)])
    with pytest.raises(MedicalInputError) as e:
        evaluate(cfg)
    msg = _one_line(e)
    assert ("label shape (99, 117, 95) does not match" if change == "shape" else "label geometry (affine) does not match") in msg
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == runs_before  # no failed evaluate run


# --- progress where a user waits ---------------------------------------------------------------------------------


@pytest.fixture()
def bars(monkeypatch):
    """Every bar predict and metrics open (kept after they close, with their counts), shown (SUITE_PROGRESS=1)."""
    from domains.medical import metrics, predict

    monkeypatch.setenv("SUITE_PROGRESS", "1")
    return record_bars(monkeypatch, predict, metrics)


@pytest.mark.parametrize("oblique", [False, True])
def test_resampling_back_onto_a_large_grid_shows_a_bar_over_its_slabs(bars, oblique, capsys):
    import torch

    from domains.medical.predict import logits_to_native

    torch.manual_seed(0)
    logits = torch.randn(3, 20, 20, 12)
    src = np.diag([3.0, 3.0, 3.0, 1.0])
    dst = np.diag([0.5, 0.5, 0.5, 1.0])
    if oblique:  # a rotated input grid: the generic resampler's path
        c, s = np.cos(0.2), np.sin(0.2)
        dst[:2, :2] = np.array([[c, -s], [s, c]]) * 0.5
    shape = (110, 110, 70)
    quiet = logits_to_native(logits, src, dst, shape, slab=16)
    assert all(b.disable for b in bars)  # no bar shown unless asked for
    bars.clear()
    shown = logits_to_native(logits, src, dst, shape, slab=16, show_progress=True)
    np.testing.assert_array_equal(shown, quiet)  # the bar changes no label
    (bar,) = bars
    assert bar.desc == "resampling to the input grid" and bar.n == bar.total >= 4
    assert "resampling to the input grid" in capsys.readouterr().err  # shown (a closed bar reads as disabled)


def test_hd95_shows_a_bar_over_the_classes_of_each_case(bars, capsys):
    from domains.medical.metrics import evaluate_volumes, hd95_per_class
    from domains.medical.io import Volume

    label = np.asarray(nib.load(_first(BRAIN / "labelsTs")).dataobj)[::2, ::2, ::2].astype(np.uint8)
    names = ["background", "cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei"]
    mask = np.roll(label, 2, axis=0)
    plain = hd95_per_class(mask, label, names, (2.0, 2.0, 2.0))
    assert all(b.disable for b in bars)  # no bar shown unless asked for
    bars.clear()

    class Seg:  # the commands' segmenter shows its bars
        class_names, show_progress = names, True

        def predict_volume(self, vol):
            return mask

    res = evaluate_volumes(Seg(), [("mni152", Volume(label.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "x", "nifti"), label)])
    assert res["hd95_mm"] == plain
    (bar,) = bars
    assert bar.desc == "HD95 mni152" and bar.n == bar.total == 4
    assert "HD95 mni152" in capsys.readouterr().err
