"""Inference engine: a trained run (or an in-memory model) → masks on the input's own voxel grid.

    seg = Segmenter.from_run(run_dir, lcc=True, tta=False)
    res = seg.predict("scan.nii.gz")        # SegmentationResult: canonical image/mask, mL, the OOD check
    mask = seg.predict_volume(volume)       # labels on exactly the volume's grid

Pieces (each public, used by training validation, evaluate, infer, score, the bundle check, the
dashboards and the benchmarks): :func:`sliding_window_logits` (MONAI sliding window, mixed precision
where it pays, an optional progress bar fed once per window batch: :func:`window_batches` of them), :func:`logits_to_native` (softmax back onto the input grid, bounded memory),
:func:`volumes_ml`, :func:`mean_foreground_confidence`, :func:`overlay_png`, :func:`read_task_meta`,
:func:`model_from_run_meta`. Post-processing and test-time augmentation: ``domains.medical.postprocess``;
the out-of-distribution check: ``domains.medical.qc``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from core.checkpoint import load_weights
from core.device import autocast, resolve_device
from core.logging import get_logger
from core.progress import progress
from domains.medical import qc
from domains.medical.config import PipelineConfig
from domains.medical.data import read_task_meta
from domains.medical.io import Volume, load_volume, nifti_affine_mm
from domains.medical.model import create_model, spec_from_task_meta
from domains.medical.postprocess import keep_largest_components, mirror_tta_logits
from domains.medical.transforms import compose, image_steps
from domains.medical.validation import MedicalInputError, check_image_array, check_modality, check_not_blank, check_resampled_size

__all__ = ["Segmenter", "SegmentationResult", "Prediction", "sliding_window_logits", "window_batches", "logits_to_native", "nonzero_box", "box_affine",
           "axis_permutation", "argmax0",
           "volumes_ml", "mean_foreground_confidence", "overlay_png", "read_task_meta", "model_from_run_meta", "canonical", "save_result"]

log = get_logger("medical.predict")


def window_batches(shape, patch: int, sw_batch_size: int = 4, overlap: float = 0.25, batch: int = 1) -> int:
    """How many batches of windows MONAI's ``sliding_window_inference`` runs over ``batch`` images of spatial
    ``shape`` with cubic ``patch`` windows (its ``dense_patch_slices`` grid: a side smaller than the patch is
    padded to one window; else windows every ``int(patch * (1 - overlap))`` voxels, the last one flush with the end)."""
    windows = 1
    for size in shape:
        size = max(int(size), patch)
        if size > patch:
            windows *= math.ceil((size - patch) / max(int(patch * (1 - overlap)), 1)) + 1
    return math.ceil(windows * batch / sw_batch_size)


def sliding_window_logits(model: torch.nn.Module, image: torch.Tensor, patch: int, sw_batch_size: int = 4, overlap: float = 0.25,
                          device: torch.device | None = None, mode: str = "gaussian", amp: bool = True, bar=None) -> torch.Tensor:
    """(1, 1, X, Y, Z) → (1, C, X, Y, Z) fp32 logits by MONAI sliding-window inference; mixed
    precision where :func:`core.device.amp_dtype` says it pays (GPU; CPU with AMX). ``bar``: a progress
    bar (``core.progress``) advanced by one per forward pass of the model — :func:`window_batches` of them
    (one for a whole-volume 2.5D model); MONAI's own ``progress`` would ignore ``SUITE_PROGRESS=0``."""
    device = device or next(model.parameters()).device
    model.eval()
    predictor = model
    if bar is not None:
        def predictor(x: torch.Tensor, *args, **kwargs):  # the same model call, counted
            out = model(x, *args, **kwargs)
            bar.update(1)
            return out
    with torch.inference_mode(), autocast(device, amp):
        if getattr(model, "whole_volume", False):  # 2.5D slice models see whole slices: no 3D windows
            return predictor(image.to(device)).float().cpu()
        out = sliding_window_inference(image.to(device), roi_size=(patch,) * 3, sw_batch_size=sw_batch_size, predictor=predictor,
                                       overlap=overlap, mode=mode, sw_device=device, device="cpu")
    return out.float()


def logits_to_native(logits: torch.Tensor, src_affine, dst_affine, dst_shape, slab: int = 32, margin: int = 2,
                     show_progress: bool = False) -> np.ndarray:
    """Resample (C, x, y, z) softmax probabilities from the network grid onto the input grid
    (trilinear, border padding, as MONAI's ``Invertd`` does in a bundle) and take the argmax there.

    Savings over inverting the whole softmax: only the box (on the input grid) around what the
    network labelled foreground, plus ``margin`` network voxels, is resampled — outside it every
    class probability is background on the network grid already; it is done in slabs of ``slab``
    output slices, so a 512×512×300 CT never holds C full-size float volumes at once; and when the
    two grids are axis-aligned (always so after ``Orientation`` + ``Spacing`` of a non-sheared
    input), trilinear interpolation is done as three 1-D interpolations instead of a 3-D grid sample. ``show_progress``: a bar
    over the slabs — on a 512×512×300 CT this step takes 7-15 s on a loaded 2-core CPU, after the sliding window's bar has
    ended."""
    probs = torch.softmax(logits.float(), 0)
    out = np.zeros(tuple(int(s) for s in dst_shape), dtype=np.uint8)
    fg = argmax0(probs) > 0
    if not bool(fg.any()):
        return out
    idx = fg.nonzero()
    lo = (idx.min(0).values - margin).clamp(min=0).numpy()
    hi = np.minimum(idx.max(0).values.numpy() + margin, np.array(fg.shape) - 1)
    src_affine = np.asarray(src_affine, dtype=np.float64)
    dst_affine = np.asarray(dst_affine, dtype=np.float64)
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]).T
    dst_vox = (np.linalg.inv(dst_affine) @ src_affine @ corners)[:3]
    d_lo = np.clip(np.floor(dst_vox.min(1)) - 1, 0, np.array(dst_shape)).astype(int)
    d_hi = np.clip(np.ceil(dst_vox.max(1)) + 2, 0, np.array(dst_shape)).astype(int)
    if np.any(d_hi <= d_lo):
        return out
    vox_map = np.linalg.inv(src_affine) @ dst_affine  # input-grid voxel → network-grid voxel
    perm = axis_permutation(vox_map[:3, :3])
    slabs = range(int(d_lo[2]), int(d_hi[2]), slab)
    bar = progress(total=len(slabs), desc="resampling to the input grid", unit="slab", leave=False, disable=not show_progress)
    with bar:
        if perm is not None:
            separable_argmax(probs, vox_map, perm, d_lo, d_hi, out, slab, bar=bar)  # a disabled bar's update is a no-op
        else:
            _generic_argmax(probs, src_affine, dst_affine, d_lo, d_hi, slabs, slab, out, bar)
    return out


def _generic_argmax(probs: torch.Tensor, src_affine, dst_affine, d_lo, d_hi, slabs: range, slab: int, out: np.ndarray, bar=None) -> None:
    """Trilinear resampling (MONAI ``SpatialResample``) of ``probs`` onto the box ``d_lo:d_hi`` of the input grid, slab by
    slab, argmax into ``out``: for grids that rotate or shear against each other."""
    src = MetaTensor(probs, affine=torch.as_tensor(src_affine))
    resample = mt.SpatialResample(mode="bilinear", padding_mode="border")
    for z0 in slabs:
        z1 = min(z0 + slab, int(d_hi[2]))
        shift = np.eye(4)
        shift[:3, 3] = (d_lo[0], d_lo[1], z0)
        part = resample(src, dst_affine=torch.as_tensor(dst_affine @ shift), spatial_size=(int(d_hi[0] - d_lo[0]), int(d_hi[1] - d_lo[1]), z1 - z0))
        out[d_lo[0]:d_hi[0], d_lo[1]:d_hi[1], z0:z1] = part.argmax(0).numpy().astype(np.uint8)
        if bar is not None:
            bar.update(1)


def nonzero_box(image: torch.Tensor, margin: int = 2) -> tuple[slice, slice, slice] | None:
    """The bounding box of the non-zero voxels of a (1, X, Y, Z) preprocessed image, grown by
    ``margin`` voxels on each side (clamped to the image), as slices; None when the image is all zero.

    Both intensity transforms map background to exactly 0 (MRI percentile scaling clips below the
    0.5 % percentile, the CT window clips air), so outside this box the network sees the zeros a
    sliding window pads with anyway: nnU-Net crops to the non-zero region the same way."""
    nz = image[0] != 0
    if not bool(nz.any()):
        return None
    box = []
    for ax in range(3):
        hit = torch.nonzero(nz.any(dim=tuple(a for a in range(3) if a != ax))).flatten()
        lo, hi = int(hit[0]) - margin, int(hit[-1]) + 1 + margin
        box.append(slice(max(lo, 0), min(hi, nz.shape[ax])))
    return tuple(box)


def box_affine(affine, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The affine of the sub-grid ``box`` (slices) of a grid with ``affine``."""
    a = np.asarray(affine, dtype=np.float64).copy()
    a[:3, 3] = a[:3, :3] @ np.array([s.start for s in box], dtype=np.float64) + a[:3, 3]
    return a


def axis_permutation(m: np.ndarray, tol: float = 1e-6) -> tuple[int, int, int] | None:
    """For a 3×3 voxel map that scales/flips each output axis onto one input axis, the input axis of
    each output axis; None when the map rotates or shears (then the generic resampler is used)."""
    scale = np.abs(m).max()
    perm = tuple(int(np.argmax(np.abs(m[:, j]))) for j in range(3))
    if sorted(perm) != [0, 1, 2]:
        return None
    off = m.copy()
    for j, i in enumerate(perm):
        off[i, j] = 0.0
    return perm if np.abs(off).max() <= tol * scale else None


def interp_matrix(coords: np.ndarray, n: int) -> torch.Tensor:
    """(len(coords), n) linear-interpolation weights at fractional ``coords`` (clamped to the
    edges: border padding); two non-zeros a row, so ``W @ v`` interpolates ``v`` along that axis."""
    c = np.clip(coords, 0.0, n - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = np.zeros((len(c), n), dtype=np.float32)
    rows = np.arange(len(c))
    np.add.at(w, (rows, i0), (1.0 - (c - i0)).astype(np.float32))
    np.add.at(w, (rows, i1), (c - i0).astype(np.float32))
    return torch.from_numpy(w)


def argmax0(t: torch.Tensor, with_max: bool = False):
    """``t.argmax(0)`` as uint8 (first maximum wins, as argmax): C passes of elementwise ops, several
    times faster on CPU than a reduction over the outermost dimension. ``with_max``: also the
    maximum, ``(label, t.amax(0))``."""
    best, label = t[0], torch.zeros(t.shape[1:], dtype=torch.uint8)
    for c in range(1, t.shape[0]):
        label = torch.where(t[c] > best, torch.tensor(c, dtype=torch.uint8), label)
        best = torch.maximum(best, t[c])
    return (label, best) if with_max else label


def separable_argmax(probs: torch.Tensor, vox_map: np.ndarray, perm: tuple[int, int, int], d_lo, d_hi, out: np.ndarray, slab: int,
                     bar=None) -> None:
    """Trilinear resampling of ``probs`` (C, X, Y, Z on the network grid) onto the box
    ``d_lo:d_hi`` of the input grid, as one small matrix product per axis, argmax into ``out``; ``bar`` advances by one per slab."""
    t = probs.permute(0, *(i + 1 for i in perm))  # axis j + 1 now runs along output axis j
    n = t.shape[1:]
    coords = [np.clip(vox_map[perm[j], j] * np.arange(d_lo[j], d_hi[j]) + vox_map[perm[j], 3], 0.0, n[j] - 1) for j in range(3)]
    # only the network-grid rows the box interpolates from (the weight matrices are zero elsewhere)
    lo = [int(np.floor(x.min())) for x in coords[:2]]
    hi = [min(int(np.floor(x.max())) + 2, n[j]) for j, x in enumerate(coords[:2])]
    t = t[:, lo[0]:hi[0], lo[1]:hi[1]].contiguous()
    c, nx, ny, nz = t.shape
    wx, wy = interp_matrix(coords[0] - lo[0], nx), interp_matrix(coords[1] - lo[1], ny)
    for z0 in range(0, len(coords[2]), slab):
        cz = coords[2][z0:z0 + slab]
        zlo, zhi = int(np.floor(cz.min())), min(int(np.floor(cz.max())) + 2, nz)
        wz = interp_matrix(cz - zlo, zhi - zlo)
        part = t[..., zlo:zhi] @ wz.T                      # (C, X, Y, z)
        part = wy @ part                                   # (C, X, y, z)
        part = (wx @ part.reshape(c, nx, -1)).reshape(c, len(coords[0]), len(coords[1]), wz.shape[0])
        z = int(d_lo[2]) + z0
        out[d_lo[0]:d_hi[0], d_lo[1]:d_hi[1], z:z + wz.shape[0]] = argmax0(part).numpy()
        if bar is not None:
            bar.update(1)


def volumes_ml(mask: np.ndarray, spacing: tuple[float, ...], class_names: list[str]) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    return {name: round(float(counts[i]) * voxel_ml, 3) for i, name in enumerate(class_names) if i > 0}


@dataclass
class SegmentationResult:
    """The dashboard contract: image and mask in canonical (RAS) orientation, plus volumes and the
    out-of-distribution check (``ood_flag``, ``ood_reason``, ``mean_confidence``)."""

    image: np.ndarray
    mask: np.ndarray
    class_names: list[str]
    volumes_ml: dict[str, float]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    native_mask: np.ndarray | None = field(default=None, repr=False)  # on the input's own grid
    source: Volume | None = field(default=None, repr=False)
    ood: qc.QualityCheck | None = None  # the out-of-distribution guard: .flagged, .reasons, .mean_confidence

    @property
    def ood_flag(self) -> bool:
        return bool(self.ood and self.ood.flagged)

    @property
    def ood_reason(self) -> str:
        return self.ood.reason if self.ood else ""

    @property
    def mean_confidence(self) -> float | None:
        return self.ood.mean_confidence if self.ood else None

    def to_nifti_bytes(self) -> bytes:
        import nibabel as nib

        img = nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img.to_bytes()


@dataclass
class Prediction:
    """A mask on the input's grid and the network's mean foreground confidence."""

    mask: np.ndarray
    mean_confidence: float


def canonical(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arr`` and its affine reoriented to the closest canonical (RAS) orientation."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(arr, affine))
    return np.asanyarray(img.dataobj), img.affine


def mean_foreground_confidence(logits: torch.Tensor) -> float:
    """Mean top softmax probability over the voxels labelled foreground ((C, X, Y, Z) logits); 0.0
    when nothing is labelled foreground."""
    label, top = argmax0(torch.softmax(logits.float(), 0), with_max=True)
    fg = label > 0
    return float(top[fg].mean()) if bool(fg.any()) else 0.0


class Segmenter:
    """A trained 3D (or 2.5D) segmentation model with its preprocessing, loaded from a run dir
    (``task.json`` + ``config.json`` + ``best.safetensors``) or built in memory by training.

    ``lcc``: keep the largest connected component of each single-structure class; ``tta``: average
    with the left-right mirrored prediction (``domains.medical.postprocess``); ``crop``: run the
    sliding window only over the box of non-zero voxels (:func:`nonzero_box`, nnU-Net's crop); ``show_progress``:
    one progress bar per volume over the window batches of every pass, one over the slabs resampled back onto the input grid (the commands turn it on; ``SUITE_PROGRESS=0``
    turns it off again)."""

    def __init__(self, model: torch.nn.Module, pipe: PipelineConfig, class_names: list[str], device: torch.device | str = "cpu",
                 sw_batch_size: int = 4, overlap: float = 0.25, amp: bool = True, lcc: bool = False, tta: bool = False,
                 crop: bool = True, show_progress: bool = False):
        self.model = model.to(device).eval()
        self.pipe, self.class_names = pipe, list(class_names)
        self.device = torch.device(device)
        self.sw_batch_size, self.overlap, self.amp = sw_batch_size, overlap, amp
        self.lcc, self.tta, self.crop = lcc, tta, crop
        self.show_progress = show_progress
        self._pre = compose(image_steps(pipe))

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", lcc: bool = False, tta: bool = False, crop: bool = True,
                 show_progress: bool = False) -> "Segmenter":
        run_dir = Path(run_dir)
        meta = read_task_meta(run_dir)
        cfg = json.loads((run_dir / "config.json").read_text())
        model = model_from_run_meta(meta)
        load_weights(run_dir / "best.safetensors", model)
        return cls(model, PipelineConfig(**meta["pipeline"]), meta["class_names"], device=resolve_device(device),
                   sw_batch_size=cfg.get("sw_batch_size", 4), overlap=cfg.get("overlap", 0.25), amp=cfg.get("amp", True), lcc=lcc, tta=tta,
                   crop=crop, show_progress=show_progress)

    def preprocess(self, vol: Volume) -> MetaTensor:
        check_resampled_size(vol.shape, vol.spacing, self.pipe.spacing, vol.path)  # before any allocation on the network grid
        check_not_blank(vol.data, vol.path)
        check_modality(vol.modality, self.pipe.modality, vol.path)
        img = MetaTensor(torch.as_tensor(np.ascontiguousarray(vol.data, dtype=np.float32))[None], affine=torch.as_tensor(vol.affine, dtype=torch.float64))
        return self._pre({"image": img})["image"]

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 1, X, Y, Z) preprocessed image → (1, C, X, Y, Z) logits (mirror-averaged with ``tta``)."""
        passes = 2 if self.tta else 1
        per_pass = 1 if getattr(self.model, "whole_volume", False) else window_batches(image.shape[2:], self.pipe.patch, self.sw_batch_size,
                                                                                       self.overlap, batch=image.shape[0])
        desc = "sliding window" + (" (+ mirrored pass)" if self.tta else "")
        with progress(total=passes * per_pass, desc=desc, unit="batch", leave=False, disable=not self.show_progress) as bar:
            def run(x: torch.Tensor) -> torch.Tensor:
                return sliding_window_logits(self.model, x, self.pipe.patch, self.sw_batch_size, self.overlap, self.device, amp=self.amp,
                                             bar=None if bar.disable else bar)

            return mirror_tta_logits(run, image, self.class_names) if self.tta else run(image)

    def segment(self, vol: Volume) -> Prediction:
        """Labels on ``vol``'s own voxel grid (exactly its shape and affine) and the mean confidence.

        The sliding window of a 3D net runs only over the box of non-zero voxels (:func:`nonzero_box`);
        everything outside it is background (the network grid there holds only zeros)."""
        img = self.preprocess(vol)
        box = None if not self.crop or getattr(self.model, "whole_volume", False) else nonzero_box(img)
        x, affine = img.as_tensor(), img.affine
        if box is not None:
            x, affine = x[(slice(None), *box)], box_affine(affine, box)
        logits = self.logits(x[None])[0]
        mask = logits_to_native(logits, affine, vol.affine, vol.shape, show_progress=self.show_progress)
        if self.lcc:
            mask = keep_largest_components(mask, self.class_names)
        return Prediction(mask=mask, mean_confidence=mean_foreground_confidence(logits))

    def predict_volume(self, vol: Volume) -> np.ndarray:
        """Label mask on ``vol``'s own voxel grid (exactly its shape and affine)."""
        return self.segment(vol).mask

    def predict(self, path_or_nifti: Any) -> SegmentationResult:
        vol = self._as_volume(path_or_nifti)
        pred = self.segment(vol)
        native = pred.mask
        img_c, aff_c = canonical(vol.data, vol.affine)
        mask_c, _ = canonical(native, vol.affine)
        vols = volumes_ml(native, vol.spacing, self.class_names)
        check = qc.check(vols, pred.mean_confidence)
        return SegmentationResult(image=np.asarray(img_c), mask=np.asarray(mask_c).astype(np.uint8), class_names=self.class_names,
                                  volumes_ml=vols, affine=aff_c, spacing=vol.spacing, native_mask=native, source=vol, ood=check)

    @staticmethod
    def _as_volume(x: Any) -> Volume:
        if isinstance(x, Volume):
            return x
        if isinstance(x, (str, Path)):
            return load_volume(x)
        if hasattr(x, "affine") and hasattr(x, "dataobj"):  # a nibabel image
            data = check_image_array(np.asarray(x.dataobj), "<in-memory NIfTI>").astype(np.float32)
            # in millimetres, as load_volume reads the same file (a header in metres or microns was taken as mm)
            return Volume(data=data, affine=nifti_affine_mm(x), path="<in-memory NIfTI>", format="nifti", header=x.header)
        raise MedicalInputError(f"cannot segment an object of type {type(x).__name__}; pass a path, a nibabel image or a Volume")


def model_from_run_meta(meta: dict) -> torch.nn.Module:
    """The (untrained) network a run's ``task.json`` describes, built by the model registry."""
    from domains.medical.model import UnknownModelError

    try:
        return create_model(spec_from_task_meta(meta), **({"pretrained": False} if meta["model"].get("name") == "effnet2d" else {}))
    except UnknownModelError as e:
        raise MedicalInputError(str(e)) from None


def overlay_png(image: np.ndarray, mask: np.ndarray, title: str = "") -> bytes:
    """Three orthogonal mid-slices through the mask's centre, mask coloured over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fg = np.argwhere(mask > 0)
    c = fg.mean(0).astype(int) if len(fg) else np.array(image.shape) // 2
    lo, hi = np.percentile(image, [1, 99])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    cmap = plt.get_cmap("tab10")
    for ax, (sl_img, sl_mask, name) in zip(axes, [(image[c[0]], mask[c[0]], "sagittal"), (image[:, c[1]], mask[:, c[1]], "coronal"),
                                                  (image[:, :, c[2]], mask[:, :, c[2]], "axial")]):
        ax.imshow(np.rot90(sl_img), cmap="gray", vmin=lo, vmax=hi)
        m = np.ma.masked_where(np.rot90(sl_mask) == 0, np.rot90(sl_mask))
        ax.imshow(m, cmap=cmap, vmin=0, vmax=9, alpha=0.45, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()




def save_result(res: SegmentationResult, out_dir: str | Path, model_run: str | Path) -> dict:
    """Write ``<id>_mask.nii.gz`` (the input's grid; ``<id>_mask.hdr`` + ``.img`` for an Analyze 7.5 input:
    :func:`~domains.medical.io.save_mask_like`), ``<id>_volumes.json`` (mL, the OOD check) and
    ``<id>_overlay.png`` into ``out_dir``; ``<id>`` is the volume's output id (a hash for DICOM).
    Returns the volumes record."""
    from core.io import atomic_write_bytes, atomic_write_json
    from domains.medical.io import save_mask_like

    out_dir = Path(out_dir)
    vid = res.source.output_id
    save_mask_like(res.native_mask, res.source, out_dir / f"{vid}_mask.nii.gz")
    record = {"input": vid, "model_run": str(model_run), "volumes_ml": res.volumes_ml, "spacing_mm": res.spacing, "shape": res.source.shape,
              "ood_flag": res.ood_flag, "ood_reason": res.ood_reason,
              "mean_confidence": None if res.mean_confidence is None else round(float(res.mean_confidence), 4)}
    atomic_write_json(out_dir / f"{vid}_volumes.json", record)
    atomic_write_bytes(out_dir / f"{vid}_overlay.png", overlay_png(res.image, res.mask, title=vid))
    return record
