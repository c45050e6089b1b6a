"""The single-atlas baseline (domains.medical.atlas) carries an atlas's labels onto a moved,
rescaled copy of its head, on the input's own grid; skull-stripped inputs pick the stripped atlas."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("SimpleITK")

from domains.medical.atlas import AtlasConfig, AtlasSegmenter, looks_skull_stripped  # noqa: E402


def _head(shift=(0.0, 0.0, 0.0), scale=1.0, n=48):
    x, y, z = np.meshgrid(*(np.arange(n) - n / 2 + 0.5,) * 3, indexing="ij")
    x, y, z = (x - shift[0]) / scale, (y - shift[1]) / scale, (z - shift[2]) / scale
    r = np.sqrt(x ** 2 + (y / 1.2) ** 2 + z ** 2)
    head = np.where(r < 20, 60.0, 0.0) + np.where(r < 15, 40.0, 0.0)
    lab = np.zeros(r.shape, np.uint8)
    brain = r < 15
    lab[brain & (x < 0)] = 1
    lab[brain & (x >= 0)] = 2
    lab[brain & (z < -7)] = 3
    head = head + np.where(lab == 3, 30.0, 0.0) + np.where(brain & (np.abs(x) < 1.5), -30.0, 0.0)
    return head.astype(np.float32), lab


def _save(arr, path, spacing=2.0):
    import nibabel as nib

    aff = np.diag([spacing] * 3 + [1.0])
    aff[:3, 3] = -spacing * np.array(arr.shape) / 2
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    return path


def test_atlas_labels_follow_a_moved_head(tmp_path):
    head, lab = _head()
    brain = np.where(lab > 0, head, 0).astype(np.float32)
    moved, moved_lab = _head(shift=(3.0, -2.0, 2.0), scale=1.08)
    seg = AtlasSegmenter(_save(head, tmp_path / "head.nii.gz"), _save(brain, tmp_path / "brain.nii.gz"), _save(lab, tmp_path / "lab.nii.gz"),
                         AtlasConfig(work_mm=2.0, affine_iterations=60, bspline_iterations=5, affine_shrink=(2, 1), bspline_shrink=(1,),
                                     sampling=0.5), template="head")
    out = seg.predict_file(_save(moved, tmp_path / "input.nii.gz"))
    assert out.shape == moved.shape and out.dtype == np.uint8
    assert seg.last_template == "head" and seg.last_seconds > 0
    for c in (1, 2, 3):
        a, b = out == c, moved_lab == c
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.8, (c, dice)
    identity = [2 * ((lab == c) & (moved_lab == c)).sum() / ((lab == c).sum() + (moved_lab == c).sum()) for c in (1, 2)]
    assert min(identity) < 0.85  # the registration did the work, not an identity transfer


def test_skull_stripped_inputs_are_recognised():
    head, lab = _head(n=64)
    assert not looks_skull_stripped(np.where(head > 0, 1.0, 0.0), (6.0, 6.0, 6.0))  # ~10 L head at 6 mm voxels
    assert looks_skull_stripped(np.where(lab > 0, 1.0, 0.0), (2.0, 2.0, 2.0))
