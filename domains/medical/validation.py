"""Checks on user volumes, each failing with a :class:`MedicalInputError` that names the file and
the problem (wrong dimensionality, non-image file, image/label geometry mismatch, empty label,
NaN/inf voxels, absurd sizes, implausible spacing, a resampled grid too large to allocate) instead
of a traceback from deep inside nibabel or MONAI.

Limits (one place): :data:`MAX_VOXELS` / :data:`MAX_SIDE` on the input grid; voxel spacing
:data:`MIN_SPACING_MM`..:data:`MAX_SPACING_MM` on every axis (0.1 mm is finer than any clinical CT/MR —
micro-CT aside —, 20 mm coarser than any usable slice thickness; outside, the header is almost surely
wrong, e.g. metres or micrometres); :data:`MAX_RESAMPLED_VOXELS` on the network's resampled grid
(estimated from the header before anything is allocated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import UserInputError

__all__ = [
    "MedicalInputError",
    "check_image_array",
    "check_label_array",
    "check_geometry_match",
    "MAX_VOXELS",
    "MAX_SIDE",
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
    "MAX_RESAMPLED_VOXELS",
    "check_spacing",
    "check_resampled_size",
    "check_not_blank",
    "check_modality",
]

MAX_VOXELS = 1024 * 1024 * 1024  # 1 Gi voxels: 4 GB as float32 — bigger than any clinical CT/MRI
MAX_SIDE = 4096
MIN_SIDE = 2
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0
MAX_RESAMPLED_VOXELS = 512 ** 3  # the network grid: 134 M voxels (C float32 copies of it are held at once)


class MedicalInputError(UserInputError, ValueError):
    """A user-supplied volume, label or folder cannot be used; the message says which and why."""


def check_image_array(data: np.ndarray, path: str | Path, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Return ``data`` as a 3D array or raise naming ``path`` and the problem.

    Trailing singleton axes (a NIfTI's time axis of one volume, or its 5th axis of one component: (x, y, z, 1, 1))
    are dropped; real 4D series and multi-component (5D) images are refused."""
    name = str(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MedicalInputError(f"{name}: expected a 3D volume, got {data.ndim}D data of shape {tuple(data.shape)}"
                                + (" (a 4D series: pick one volume first)" if data.ndim == 4 else ""))
    if any(s < MIN_SIDE for s in data.shape):
        raise MedicalInputError(f"{name}: volume shape {tuple(data.shape)} has an axis shorter than {MIN_SIDE} voxels")
    if any(s > MAX_SIDE for s in data.shape) or int(np.prod(data.shape, dtype=np.int64)) > MAX_VOXELS:
        raise MedicalInputError(f"{name}: absurd volume size {tuple(data.shape)} (limit {MAX_SIDE} per axis, {MAX_VOXELS:,} voxels in all)")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise MedicalInputError(f"{name}: voxel type {data.dtype} is not numeric")
    if np.iscomplexobj(data):  # casting to float would silently drop the imaginary part
        raise MedicalInputError(f"{name}: complex voxels ({data.dtype}); expected real intensities (save the magnitude image instead)")
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
            raise MedicalInputError(f"{name}: {n_nan} NaN and {n_inf} inf voxel(s); expected finite intensities")
    if spacing is not None:
        check_spacing(spacing, path)
    return data


def check_not_blank(data: np.ndarray, path: str | Path) -> None:
    """An image to segment must vary: one value in every voxel (a blank export, a series without pixel data)
    has no anatomy, and the network still 'found' several hundred mL of structures in it (flagged only as
    out of distribution)."""
    if data.size and np.min(data) == np.max(data):
        from core.errors import plain

        raise MedicalInputError(f"{path}: every voxel is {plain(np.min(data))}: a blank image has nothing to segment "
                                "(an export without pixel data, or the wrong file?)")


def check_modality(volume_modality: str | None, model_modality: str, path: str | Path) -> None:
    """A scan that says what it is (a DICOM series' Modality, CT or MR) must be what the model was trained on: CT is
    windowed in Hounsfield units, MRI normalised by its own percentiles, so the other kind was segmented silently
    into nonsense. Files that do not say (NIfTI, NRRD) and other modalities are not judged here."""
    def kind(m):
        m = str(m or "").strip().upper()
        return {"MR": "MRI", "MRI": "MRI", "CT": "CT"}.get(m)

    have, want = kind(volume_modality), kind(model_modality)
    if have and want and have != want:
        raise MedicalInputError(f"{path}: a {have} scan (DICOM Modality {str(volume_modality).strip()}), but this model was trained on {want} "
                                f"(its intensity preprocessing is {want}'s); segment it with a model trained on {have}")


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def check_spacing(spacing, path: str | Path) -> None:
    """Every voxel spacing within ``MIN_SPACING_MM``..``MAX_SPACING_MM``."""
    sp = np.asarray(spacing, dtype=float)
    if not np.all(np.isfinite(sp)) or np.any(sp < MIN_SPACING_MM) or np.any(sp > MAX_SPACING_MM):
        raise MedicalInputError(f"{path}: absurd voxel spacing {_mm(sp)} mm (expected {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm per axis); "
                                "check the header's units and pixel spacing")


def resampled_shape(shape, spacing, target_spacing: float) -> tuple[int, ...]:
    """The grid size after resampling a ``shape`` volume of ``spacing`` mm to ``target_spacing`` mm
    (what MONAI ``Spacing`` allocates, up to a voxel per axis)."""
    return tuple(int(np.ceil(float(n) * float(s) / float(target_spacing))) for n, s in zip(shape, spacing))


def check_resampled_size(shape, spacing, target_spacing: float, path: str | Path) -> None:
    """Refuse, before allocating it, a resampled grid larger than ``MAX_RESAMPLED_VOXELS``."""
    check_spacing(spacing, path)
    out = resampled_shape(shape, spacing, target_spacing)
    n = float(np.prod([float(x) for x in out]))
    if n > MAX_RESAMPLED_VOXELS:
        raise MedicalInputError(f"{path}: {tuple(int(x) for x in shape)} voxels of {_mm(spacing)} mm resample to {out} at the model's "
                                f"{float(target_spacing):g} mm ({n:,.0f} voxels, limit {MAX_RESAMPLED_VOXELS:,}); the field of view "
                                f"({_mm(np.asarray(shape) * np.asarray(spacing))} mm) is implausible for one scan")


def check_label_array(label: np.ndarray, path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Integer labels, not empty, values within ``0..num_classes-1`` (when given; else within int16), as int16. The range
    is checked on the values as stored: the int16 cast came first, so 65535 (a common 'ignore' label of a uint16 map) was
    reported as -1, and 65537 became class 1 without a word."""
    name = str(path)
    label = check_image_array(label, path)
    if np.issubdtype(label.dtype, np.floating):
        rounded = np.round(label)
        off = ~np.isclose(label, rounded)
        if off.any():
            raise MedicalInputError(f"{name}: label volume holds non-integer values; expected integer class ids (found {int(off.sum()):,} "
                                    f"voxel(s) off an integer, e.g. {float(label[off].flat[0]):.6g})")
        label = rounded
    if not label.any():
        raise MedicalInputError(f"{name}: label volume is empty (no foreground voxel)")
    lo, hi = int(label.min()), int(label.max())
    top = (num_classes - 1) if num_classes is not None else int(np.iinfo(np.int16).max)
    if lo < 0 or hi > top:
        raise MedicalInputError(f"{name}: label values span {lo}..{hi}; expected 0..{top}")
    return label.astype(np.int16)


def check_geometry_match(image_shape, image_affine, label_shape, label_affine, image_path, label_path, atol: float = 1e-3) -> None:
    """Image and label must share the voxel grid (shape and affine)."""
    if tuple(image_shape[:3]) != tuple(label_shape[:3]):
        raise MedicalInputError(f"{label_path}: label shape {tuple(label_shape[:3])} does not match image {image_path} shape {tuple(image_shape[:3])}")
    if not np.allclose(np.asarray(image_affine), np.asarray(label_affine), atol=atol):
        raise MedicalInputError(
            f"{label_path}: label geometry (affine) does not match image {image_path}; max difference "
            f"{float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max()):.4g} mm. Resample the label onto the image grid first."
        )
