"""The held-out volume as other scanners would acquire it — the robustness test set (issue 14).

:func:`make_variants` turns one labelled 1 mm volume (the held-out MNI152 T1 with its carried-over
AAL classes) into :data:`VARIANT_NAMES`:

* ``plain`` — the file as it is;
* ``{axial,coronal,sagittal} {1mm,2x2x3mm,1x1x5mm}`` — a new voxel grid **acquired in that plane**:
  the array's first two axes are the in-plane row/column directions and its last axis is the slice
  direction, with DICOM-like (LPS-style) directions written into the affine (axial: rows run R→L,
  columns A→P, slices I→S; coronal: R→L, S→I, slices P→A; sagittal: A→P, S→I, slices R→L — patient
  left/right are where the affine says, so a reader that ignored it would mirror the brain).
  The in-plane pixel and the slice thickness are the first numbers and the last; each voxel's value
  is the 1 mm image blurred with a Gaussian slice/pixel profile whose FWHM is the voxel size along
  each axis, sampled trilinearly at the voxel centre. The grid covers the original field of view;
* ``axial 1mm oblique`` — axial 1 mm tilted by 12° about the left–right axis and 6° about the
  vertical one (a scan planned on the AC–PC line of a tilted head);
* ``bias field`` — the plain grid times a smooth multiplicative field (× 0.64 … × 1.55 over the head);
* ``T2-like inversion`` — inside the head, intensity → (99th percentile − intensity), so CSF is bright
  and white matter dark; the background stays 0;
* ``cropped FOV`` — the plain grid cut to world z ∈ [−45, 55] mm: the vertex and the lower half of the
  cerebellum are outside the scan.

**Labels are evaluated on each variant's own grid**: the 1 mm ground truth sampled at every variant
voxel centre (nearest neighbour). That is the best mask a segmenter of that scan could output on its
grid; the prediction is the segmenter's mask on the same grid (the file it would write).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Variant", "VARIANTS", "VARIANT_NAMES", "make_variant", "make_variants", "write_variants", "plane_directions"]

# RAS direction of (row, column, slice) axes for each acquisition plane (see the module docstring)
_PLANES = {
    "axial": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "coronal": ((-1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "sagittal": ((0, -1, 0), (0, 0, -1), (-1, 0, 0)),
}
_SIZES = {"1mm": (1.0, 1.0, 1.0), "2x2x3mm": (2.0, 2.0, 3.0), "1x1x5mm": (1.0, 1.0, 5.0)}


@dataclass(frozen=True)
class Variant:
    name: str
    plane: str = "axial"
    voxel: tuple[float, float, float] | None = None  # (row, column, slice) mm; None: the original grid
    tilt_deg: tuple[float, float] = (0.0, 0.0)
    intensity: str | None = None  # "bias" | "t2like"
    crop_z: tuple[float, float] | None = None  # world z range kept (mm)


VARIANTS: list[Variant] = [Variant("plain")]
VARIANTS += [Variant(f"{p} {s}", plane=p, voxel=v) for p in _PLANES for s, v in _SIZES.items()]
VARIANTS += [Variant("axial 1mm oblique", voxel=(1.0, 1.0, 1.0), tilt_deg=(12.0, 6.0)),
             Variant("bias field", intensity="bias"), Variant("T2-like inversion", intensity="t2like"),
             Variant("cropped FOV", crop_z=(-45.0, 55.0))]
VARIANT_NAMES = [v.name for v in VARIANTS]


def _rot(deg_x: float, deg_z: float) -> np.ndarray:
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def plane_directions(plane: str, voxel, tilt_deg=(0.0, 0.0)) -> np.ndarray:
    """3×3 voxel→RAS matrix (columns: row, column and slice steps in mm) of an acquisition."""
    d = np.array(_PLANES[plane], dtype=np.float64).T * np.asarray(voxel, dtype=np.float64)[None]
    return _rot(*tilt_deg) @ d


def _resample(img: np.ndarray, lab: np.ndarray, affine: np.ndarray, new_affine: np.ndarray, shape, voxel_mm) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    # slice/pixel profile: FWHM = voxel size along each world axis (of the source's 1 mm voxels)
    src_vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    world_size = np.abs(new_affine[:3, :3]).max(1)  # mm step along each world axis (axis-aligned grids)
    src_axis_world = np.abs(affine[:3, :3]).argmax(0)
    sigma = [max(0.0, (world_size[src_axis_world[i]] ** 2 - src_vox[i] ** 2)) ** 0.5 / 2.355 / src_vox[i] for i in range(3)]
    blurred = ndimage.gaussian_filter(img.astype(np.float32), sigma) if max(sigma) > 0.05 else img.astype(np.float32)
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    m = np.linalg.inv(affine) @ new_affine
    src = m[:3, :3] @ ijk + m[:3, 3:4]
    out = ndimage.map_coordinates(blurred, src, order=1, mode="constant", cval=0.0).reshape(shape)
    out_lab = ndimage.map_coordinates(lab, src, order=0, mode="constant", cval=0).reshape(shape)
    return out.astype(np.float32), out_lab.astype(np.uint8)


def _bias_field(shape) -> np.ndarray:
    u = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*u, indexing="ij")
    return np.exp(0.3 * x + 0.15 * y - 0.25 * z ** 2 + 0.1 * x * z).astype(np.float32)


def make_variant(img: np.ndarray, lab: np.ndarray, affine: np.ndarray, v: Variant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, labels on the variant grid, affine) of variant ``v`` of a labelled volume."""
    img = np.asarray(img, dtype=np.float32)
    lab = np.asarray(lab).astype(np.uint8)
    affine = np.asarray(affine, dtype=np.float64)
    if v.voxel is not None:
        d = plane_directions(v.plane, v.voxel, v.tilt_deg)
        corners = np.array([[a, b, c, 1.0] for a in (0, img.shape[0] - 1) for b in (0, img.shape[1] - 1) for c in (0, img.shape[2] - 1)]).T
        world = (affine @ corners)[:3]
        vox = np.linalg.inv(d) @ world
        lo, hi = vox.min(1), vox.max(1)
        shape = tuple(int(np.floor(h - lo_)) + 1 for lo_, h in zip(lo, hi))
        new = np.eye(4)
        new[:3, :3] = d
        new[:3, 3] = d @ lo
        out, out_lab = _resample(img, lab, affine, new, shape, v.voxel)
        return out, out_lab, new
    out, out_lab, new = img.copy(), lab.copy(), affine.copy()
    if v.intensity == "bias":
        out = out * _bias_field(out.shape)
    elif v.intensity == "t2like":
        inside = out > 0
        hi = float(np.percentile(out[inside], 99))
        out = np.where(inside, np.clip(hi - out, 0, None) + 0.02 * hi, 0).astype(np.float32)
    if v.crop_z is not None:
        z = affine[2, 2] * np.arange(out.shape[2]) + affine[2, 3]
        if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
            raise ValueError("cropped FOV variant expects an axis-aligned source grid")
        keep = np.flatnonzero((z >= v.crop_z[0]) & (z <= v.crop_z[1]))
        out, out_lab = out[:, :, keep[0]:keep[-1] + 1], out_lab[:, :, keep[0]:keep[-1] + 1]
        new[:3, 3] = affine[:3, :3] @ np.array([0, 0, keep[0]]) + affine[:3, 3]
    return out.astype(np.float32), out_lab, new


def make_variants(image_path: str | Path, label_path: str | Path, names: list[str] | None = None):
    """Yield ``(variant, image, labels, affine)`` for every variant (or those ``names``, in that order)."""
    import nibabel as nib

    im, lb = nib.load(str(image_path)), nib.load(str(label_path))
    img, lab = np.asarray(im.dataobj, dtype=np.float32), np.asarray(lb.dataobj).astype(np.uint8)
    by_name = {v.name: v for v in VARIANTS}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {VARIANT_NAMES}")
    for v in VARIANTS if names is None else [by_name[n] for n in names]:  # in the order asked
        yield (v, *make_variant(img, lab, im.affine, v))


def write_variants(image_path: str | Path, label_path: str | Path, out_dir: str | Path, names: list[str] | None = None) -> list[dict]:
    """Write each variant as ``<slug>.nii.gz`` and ``<slug>_label.nii.gz`` (NIfTI, qform = sform =
    the variant affine); returns ``[{"variant", "image", "label"}]``."""
    import nibabel as nib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for v, img, lab, aff in make_variants(image_path, label_path, names):
        slug = v.name.replace(" ", "_").replace("×", "x")
        paths = {}
        for kind, arr in (("image", img), ("label", lab)):
            p = out_dir / (f"{slug}.nii.gz" if kind == "image" else f"{slug}_label.nii.gz")
            nii = nib.Nifti1Image(arr, aff)
            nii.set_qform(aff, code=1)
            nii.set_sform(aff, code=1)
            nib.save(nii, str(p))
            paths[kind] = str(p)
        rows.append({"variant": v.name, **paths})
    return rows
