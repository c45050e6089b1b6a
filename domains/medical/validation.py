"""Checks on user volumes, each failing with a :class:`MedicalInputError` that names the file and
the problem (wrong dimensionality, non-image file, image/label geometry mismatch, empty label,
NaN/inf voxels, absurd sizes) instead of a traceback from deep inside nibabel or MONAI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "MedicalInputError",
    "check_image_array",
    "check_label_array",
    "check_geometry_match",
    "MAX_VOXELS",
    "MAX_SIDE",
]

MAX_VOXELS = 1024 * 1024 * 1024  # 1 Gi voxels: 4 GB as float32 — bigger than any clinical CT/MRI
MAX_SIDE = 4096
MIN_SIDE = 2


class MedicalInputError(ValueError):
    """A user-supplied volume, label or folder cannot be used; the message says which and why."""


def check_image_array(data: np.ndarray, path: str | Path, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Return ``data`` as a 3D array or raise naming ``path`` and the problem.

    A trailing singleton 4th axis (common in NIfTI) is dropped; real 4D series are refused."""
    name = str(path)
    if data.ndim == 4 and data.shape[3] == 1:
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
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
            raise MedicalInputError(f"{name}: {n_nan} NaN and {n_inf} inf voxel(s); expected finite intensities")
    if spacing is not None:
        sp = np.asarray(spacing, dtype=float)
        if not np.all(np.isfinite(sp)) or np.any(sp <= 0) or np.any(sp > 100):
            raise MedicalInputError(f"{name}: absurd voxel spacing {tuple(np.round(sp, 4))} mm (expected 0 < spacing ≤ 100 mm)")
    return data


def check_label_array(label: np.ndarray, path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Integer labels, not empty, values within ``0..num_classes-1`` (when given)."""
    name = str(path)
    label = check_image_array(label, path)
    if np.issubdtype(label.dtype, np.floating):
        if not np.allclose(label, np.round(label)):
            raise MedicalInputError(f"{name}: label volume holds non-integer values; expected integer class ids")
    label = np.round(label).astype(np.int16)
    if not label.any():
        raise MedicalInputError(f"{name}: label volume is empty (no foreground voxel)")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        raise MedicalInputError(f"{name}: label values span {lo}..{hi}; expected 0..{(num_classes or 1) - 1}")
    return label


def check_geometry_match(image_shape, image_affine, label_shape, label_affine, image_path, label_path, atol: float = 1e-3) -> None:
    """Image and label must share the voxel grid (shape and affine)."""
    if tuple(image_shape[:3]) != tuple(label_shape[:3]):
        raise MedicalInputError(f"{label_path}: label shape {tuple(label_shape[:3])} does not match image {image_path} shape {tuple(image_shape[:3])}")
    if not np.allclose(np.asarray(image_affine), np.asarray(label_affine), atol=atol):
        raise MedicalInputError(
            f"{label_path}: label geometry (affine) does not match image {image_path}; max difference "
            f"{float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max()):.4g} mm. Resample the label onto the image grid first."
        )
