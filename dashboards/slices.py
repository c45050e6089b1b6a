"""Rendering a 3D scan and its label mask as three orthogonal slices (pure numpy + PIL).

Arrays are indexed ``[x, y, z]`` in canonical (RAS+) orientation, as ``domains.medical.api``
returns them; each plane is turned so that superior/anterior is up, like a radiology viewer
(left-right is shown as stored: the patient's right on the image's left is not enforced).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

PLANES = ("axial", "coronal", "sagittal")
AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def palette(n: int) -> list[str]:
    """``n`` distinct colours as hex; index 0 (background) is black and never drawn."""
    base = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
            "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1"]
    out = ["#000000"]
    for i in range(1, n):
        if i - 1 < len(base):
            out.append(base[i - 1])
        else:  # golden-angle hues beyond the hand-picked set
            r, g, b = colorsys.hsv_to_rgb(((i * 0.618034) % 1.0), 0.75, 0.95)
            out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def hex_to_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def window(image: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[float, float]:
    """Intensity window from percentiles of the non-background voxels (robust to CT air / MRI zeros)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    sample = finite if finite.size <= 2_000_000 else finite[:: max(1, finite.size // 2_000_000)]
    fg = sample[sample > sample.min()] if (sample > sample.min()).any() else sample
    lo, hi = np.percentile(fg, [lo_pct, hi_pct])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def take(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D slice of ``volume`` at ``index`` along ``plane``, rotated for display."""
    sl = np.take(volume, int(np.clip(index, 0, volume.shape[AXIS[plane]] - 1)), axis=AXIS[plane])
    return np.rot90(sl)


def overlay(image2d: np.ndarray, mask2d: np.ndarray | None, colours: dict[int, str], opacity: float,
            win: tuple[float, float], visible: set[int] | None = None) -> np.ndarray:
    """An RGB uint8 picture: the windowed grey image with each visible class blended in its colour."""
    lo, hi = win
    grey = np.clip((np.nan_to_num(image2d.astype(np.float32), nan=lo) - lo) / (hi - lo), 0, 1)
    rgb = np.repeat((grey * 255)[..., None], 3, axis=2)
    if mask2d is not None and opacity > 0:
        for cls, hexcol in colours.items():
            if cls == 0 or (visible is not None and cls not in visible):
                continue
            sel = mask2d == cls
            if sel.any():
                rgb[sel] = (1 - opacity) * rgb[sel] + opacity * np.array(hex_to_rgb(hexcol), dtype=np.float32)
    return rgb.astype(np.uint8)


def to_display(rgb: np.ndarray, pixel_spacing: tuple[float, float], height: int = 320) -> Image.Image:
    """Resize to physical proportions (anisotropic voxels) at a fixed display height."""
    img = Image.fromarray(rgb)
    rows, cols = rgb.shape[:2]
    sy, sx = pixel_spacing
    phys_h, phys_w = rows * sy, cols * sx
    w = max(1, int(round(height * phys_w / phys_h)))
    return img.resize((w, height), Image.NEAREST)


def plane_spacing(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row, column) spacing of a displayed slice after ``take``'s rotation."""
    axes = [a for a in range(3) if a != AXIS[plane]]
    # rot90 turns (a0, a1) into rows=a1, cols=a0
    return float(spacing[axes[1]]), float(spacing[axes[0]])


def foreground_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Centre of the labelled voxels (or of the volume when the mask is empty): a useful first slice."""
    idx = np.argwhere(mask > 0)
    if idx.size == 0:
        return tuple(s // 2 for s in mask.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.round(idx.mean(axis=0)))  # type: ignore[return-value]


def heat(rgb: np.ndarray, heat2d: np.ndarray, opacity: float, scale: float) -> np.ndarray:
    """``rgb`` with a signed map blended in where it is finite: red where positive (supports the
    structure), blue where negative, full colour at ``|value| >= scale``."""
    out = rgb.astype(np.float32)
    ok = np.isfinite(heat2d)
    if not ok.any() or scale <= 0:
        return rgb
    v = np.clip(np.nan_to_num(heat2d) / scale, -1, 1)
    alpha = (opacity * np.abs(v))[..., None] * ok[..., None]
    colour = np.where((v >= 0)[..., None], np.array([255, 40, 40], np.float32), np.array([40, 110, 255], np.float32))
    return ((1 - alpha) * out + alpha * colour).astype(np.uint8)
