"""The robustness test set (domains.medical.variants): every required acquisition is there, each
variant's grid is really acquired in its plane and resolution (affine, shape), anatomy stays where
it was in the world, and the intensity/FOV variants do what their names say."""

from __future__ import annotations

import numpy as np
import pytest

from domains.medical.variants import VARIANT_NAMES, VARIANTS, make_variant, plane_directions


def _volume():
    n = (40, 48, 36)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = (-20.0, -24.0, -18.0)
    img = np.zeros(n, np.float32)
    lab = np.zeros(n, np.uint8)
    img[6:34, 6:42, 4:32] = 50.0
    img[8:18, 10:40, 8:28] = 100.0
    lab[8:18, 10:40, 8:28] = 1  # a block left of centre (low x = patient left in RAS)
    lab[24:32, 20:30, 14:22] = 4
    img[lab == 4] = 70.0
    return img, lab, aff


def _centroid_world(lab: np.ndarray, aff: np.ndarray, c: int) -> np.ndarray:
    ijk = np.argwhere(lab == c).mean(0)
    return aff[:3, :3] @ ijk + aff[:3, 3]


def test_the_required_variants_exist():
    for p in ("axial", "coronal", "sagittal"):
        for s in ("1mm", "2x2x3mm", "1x1x5mm"):
            assert f"{p} {s}" in VARIANT_NAMES
    for extra in ("plain", "bias field", "T2-like inversion", "cropped FOV"):
        assert extra in VARIANT_NAMES
    assert len(VARIANTS) >= 12


@pytest.mark.parametrize("name", ["axial 2x2x3mm", "coronal 1x1x5mm", "sagittal 1x1x5mm", "axial 1mm oblique"])
def test_acquired_grids_keep_the_anatomy_in_place(name):
    img, lab, aff = _volume()
    v = next(v for v in VARIANTS if v.name == name)
    out, out_lab, new = make_variant(img, lab, aff, v)
    spacing = np.sqrt((new[:3, :3] ** 2).sum(0))
    assert np.allclose(spacing, v.voxel)  # the slice thickness is the last axis
    slice_dir = new[:3, 2] / spacing[2]
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[v.plane]
    assert abs(slice_dir[normal]) > 0.95  # the slices are stacked along the plane's normal
    assert out.shape == out_lab.shape
    for c in (1, 4):  # same place in the world, similar volume
        assert np.linalg.norm(_centroid_world(out_lab, new, c) - _centroid_world(lab, aff, c)) < 2.5
        vol_new = (out_lab == c).sum() * np.prod(spacing)
        assert abs(vol_new / (lab == c).sum() - 1) < 0.3
    inside = out[out_lab == 1]
    assert 60 < float(np.median(inside)) <= 101  # intensities sampled from the image (blurred at most)


def test_coronal_grid_is_stored_in_dicom_like_order():
    d = plane_directions("coronal", (1.0, 1.0, 5.0))
    assert np.allclose(d[:, 0], (-1, 0, 0)) and np.allclose(d[:, 1], (0, 0, -1)) and np.allclose(d[:, 2], (0, 5, 0))


def test_intensity_and_fov_variants():
    img, lab, aff = _volume()
    t2, t2_lab, t2_aff = make_variant(img, lab, aff, next(v for v in VARIANTS if v.name == "T2-like inversion"))
    assert np.array_equal(t2_lab, lab) and np.array_equal(t2_aff, aff)
    assert np.all(t2[img == 0] == 0)  # background stays 0
    assert t2[lab == 1].mean() < t2[(img == 50.0)].mean()  # bright tissue became dark
    crop = next(v for v in VARIANTS if v.name == "cropped FOV")
    c_img, c_lab, c_aff = make_variant(img, lab, aff, crop)
    z = c_aff[2, 2] * np.arange(c_img.shape[2]) + c_aff[2, 3]
    assert z.min() >= crop.crop_z[0] - 1e-6 and z.max() <= crop.crop_z[1] + 1e-6
    assert np.allclose(_centroid_world(c_lab, c_aff, 4), _centroid_world(lab, aff, 4))
    b, b_lab, _ = make_variant(img, lab, aff, next(v for v in VARIANTS if v.name == "bias field"))
    ratio = b[img > 0] / img[img > 0]
    assert ratio.min() < 0.9 and ratio.max() > 1.1 and np.array_equal(b_lab, lab)
