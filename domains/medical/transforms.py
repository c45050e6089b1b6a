"""MONAI transform chains, modality-aware.

    pre  = preprocess(cfg)            # load (our reader) → RAS → spacing → CT window / MRI z-score → crop
    aug  = train_augment(cfg)         # foreground-balanced patches + spatial/intensity augmentation
    ds   = cached_patch_dataset(cases, cfg)   # CacheDataset of ``pre`` (done once) + ``aug`` per sample

* CT: intensities are Hounsfield units; a window (level/width, default level 400, width 1800 →
  −500..1300 HU, covering soft tissue and bone) is clipped and scaled to 0..1.
* MRI: robust percentile scaling (0.5–99.5 % → 0..1), so scanner gain does not matter and the
  background stays at 0.
* Orientation RAS, then resampling to ``spacing`` mm (labels nearest-neighbour).
* Patches: ``RandCropByLabelClassesd`` with equal ratios for every foreground class (and half that
  for background) — small structures are sampled as often as large ones.
* Augmentation: small affine (rotation, scale), intensity scale/shift, gamma. No left–right flip
  for tasks whose classes are lateralised (the brain task), since a flip would swap their labels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.utils import get_equivalent_dtype

from core.errors import UserInputError
from domains.medical.config import PipelineConfig
from domains.medical.io import load_volume
from domains.medical.validation import MedicalInputError, check_geometry_match, check_label_array

__all__ = ["LoadVolumed", "UserErrorCompose", "preprocess", "train_augment", "AUGMENT_RECIPES", "invert_inside_head", "cached_patch_dataset", "Repeat", "intensity_transform",
           "intensity_step", "image_steps", "compose"]


INDICES_KEY = "label_cls_indices"


class LoadVolumed(mt.MapTransform):
    """Read ``image`` (and ``label``) with :func:`domains.medical.io.load_volume` into channel-first
    MetaTensors carrying the affine; validates label values and image/label geometry."""

    def __init__(self, keys=("image", "label"), num_classes: int | None = None, allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        img = None
        for key in self.key_iterator(d):
            src = d[key]
            if isinstance(src, (MetaTensor, torch.Tensor, np.ndarray)):
                continue
            vol = load_volume(src)
            arr = vol.data
            if key == "label":
                arr = check_label_array(arr, src, self.num_classes).astype(np.float32)
                if img is not None:
                    check_geometry_match(img.shape, img.affine, vol.shape, vol.affine, img.path, src)
            else:
                img = vol
            d[key] = MetaTensor(torch.as_tensor(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(vol.affine, dtype=torch.float64),
                                meta={"filename_or_obj": str(src), "original_affine": vol.affine, "spatial_shape": np.array(vol.shape)})
        return d


Step = tuple[str, dict]  # (a monai.transforms dict-transform name, its keyword arguments)


def intensity_step(cfg: PipelineConfig, keys=("image",)) -> Step:
    """The modality's intensity transform as (name, kwargs): one spelling for our pipelines and the
    exported MONAI bundle config (``{"_target_": name, **kwargs}``)."""
    if cfg.modality.upper() == "CT":
        lo, hi = cfg.ct_level - cfg.ct_width / 2, cfg.ct_level + cfg.ct_width / 2
        return "ScaleIntensityRanged", {"keys": list(keys), "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0, "clip": True}
    if cfg.modality.upper() in ("MRI", "MR"):
        # percentile scaling keeps the (skull-stripped / air) background at 0, below every tissue;
        # a z-score over non-zero voxels would put the background at the mean brain intensity
        return "ScaleIntensityRangePercentilesd", {"keys": list(keys), "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True,
                                                   "channel_wise": True}
    raise MedicalInputError(f"unknown modality {cfg.modality!r}; expected CT or MRI")


def image_steps(cfg: PipelineConfig) -> list[Step]:
    """Inference preprocessing of a loaded image: RAS orientation, resampling to the training
    spacing, the modality's intensity transform."""
    return [("Orientationd", {"keys": ["image"], "axcodes": "RAS"}),
            ("Spacingd", {"keys": ["image"], "pixdim": [cfg.spacing] * 3, "mode": "bilinear"}),
            intensity_step(cfg)]


class UserErrorCompose(mt.Compose):
    """MONAI's ``Compose``, except that a user error raised inside one of its transforms (a bad image or
    label file, a geometry mismatch: a :class:`core.errors.UserInputError`) comes out as itself, not
    wrapped in MONAI's ``RuntimeError("applying transform ...")`` — which the CLIs would show as a traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as e:
            cause = e.__cause__
            while cause is not None and not isinstance(cause, UserInputError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None


def compose(steps: Sequence[Step]) -> mt.Compose:
    return mt.Compose([getattr(mt, name)(**kwargs) for name, kwargs in steps])


def intensity_transform(cfg: PipelineConfig, keys=("image",)) -> mt.Transform:
    name, kwargs = intensity_step(cfg, keys)
    return getattr(mt, name)(**kwargs)


def preprocess(cfg: PipelineConfig, with_label: bool = True, crop: bool = True) -> mt.Compose:
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    steps: list[Any] = [
        LoadVolumed(keys=keys, num_classes=cfg.num_classes),
        mt.Orientationd(keys=keys, axcodes="RAS"),
        mt.Spacingd(keys=keys, pixdim=(cfg.spacing,) * 3, mode=modes),
        intensity_transform(cfg),
    ]
    if crop:
        steps.append(mt.CropForegroundd(keys=keys, source_key="label" if with_label else "image", margin=cfg.crop_margin + cfg.patch // 4,
                                        allow_smaller=True))
    steps.append(mt.EnsureTyped(keys=keys, dtype=[torch.float32, torch.float32] if with_label else [torch.float32], track_meta=True))
    return UserErrorCompose(steps)


AUGMENT_RECIPES = ("robust", "standard")  # the real-image recipes of :func:`train_augment` (``synth`` lives in synth.py)


def invert_inside_head(img: torch.Tensor, background: float = 0.0) -> torch.Tensor:
    """T1 → T2-type contrast on a 0..1 image: every voxel inside the head (above ``background`` +
    0.001) becomes ``1.02 − value`` (clipped to 0..1), so CSF turns bright and white matter dark;
    the background becomes 0. Used by :func:`train_augment`'s ``robust`` recipe through MONAI
    ``RandLambdad`` (cached patches have a background of exactly 0)."""
    inside = img > background + 1e-3
    return torch.where(inside, (1.02 - img).clamp(0.0, 1.0), torch.zeros_like(img))


# --- cheaper versions of MONAI transforms: the same random draws, the same values ------------------
# Each subclass keeps MONAI's constructor, random state and ``randomize`` calls (same RandomState
# objects, same calls in the same order, so seeded runs and ``--resume`` are unchanged) and only
# computes the result more cheaply, on plain tensors (the chain drops the metadata at its end:
# ``EnsureTyped(track_meta=False)``). Equality with the MONAI originals, value by value and RNG state
# by RNG state: ``tests/medical/test_fast_transforms.py``.


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _drawn(t: mt.RandomizableTransform, d: dict) -> bool:
    """The dict transform ``t``'s own draw (``randomize``: whether it applies this time, as MONAI's
    ``__call__`` draws it); when it does not, ``d``'s keys become plain tensors (MONAI: tensors)."""
    t.randomize(None)
    if not t._do_transform:
        for key in t.key_iterator(d):
            d[key] = _plain(d[key])
    return bool(t._do_transform)


class FastRandAffined(mt.RandAffined):
    """MONAI ``RandAffined`` (eager, torch ``grid_sample`` backend, a fixed ``spatial_size``) with the
    same draws and bit-identical values: the matrix drawn by MONAI's own ``RandAffineGrid`` times the
    identity grid as ``AffineGrid`` computes it (float32), resampled as ``monai.transforms.Resample``
    does (float64 ``grid_sample``, ``align_corners=False``) on plain tensors, the grid normalised once
    per call — without MONAI's MetaTensor conversions and transform-trace bookkeeping. The per-key ``RandAffine.randomize()``
    that MONAI's ``RandAffine.__call__`` makes (and whose draws it discards: the grid is already
    built) is kept, so the random states advance exactly as MONAI's do."""

    def __call__(self, data, lazy: bool | None = None):
        from monai.utils import ensure_tuple, fall_back_tuple

        lazy_ = self.lazy if lazy is None else lazy
        d = dict(data)
        first_key = self.first_key(d)
        if lazy_ or first_key == () or not isinstance(d[first_key], (torch.Tensor, np.ndarray)):
            return super().__call__(data, lazy)
        self.randomize(None)
        self.rand_affine.randomize()
        spatial_size = tuple(d[first_key].shape[1:])
        sp_size = fall_back_tuple(self.rand_affine.spatial_size, spatial_size)
        do_resampling = self._do_transform or (sp_size != ensure_tuple(spatial_size))
        if not do_resampling:
            for key in self.key_iterator(d):
                d[key] = _plain(d[key]).to(torch.float32)
            return d
        grid = self._identity(sp_size)
        if self._do_transform:
            # MONAI: rand_affine_grid(sp_size, grid=grid) — draws the parameters, builds the affine, then
            # (affine in the grid's float32) @ grid on MetaTensors; here the same draws and affine (its lazy
            # mode builds only the matrix), the same float32 matmul on plain tensors
            rag = self.rand_affine.rand_affine_grid
            rag(sp_size, grid=None, lazy=True)
            affine = _plain(rag.get_transformation_matrix()).to(dtype=grid.dtype)
            grid = (affine @ grid.view((grid.shape[0], -1))).view([-1] + list(grid.shape[1:]))
        norm: torch.Tensor | None = None
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            self.rand_affine.randomize()  # MONAI: RandAffine.__call__(..., randomize=True, grid) per key
            img = _plain(d[key]).to(torch.float64)
            if img.dim() != 4 or mode not in ("bilinear", "nearest") or padding_mode not in ("zeros", "border", "reflection"):
                raise ValueError(f"FastRandAffined: 3-D channel-first images with torch grid_sample modes only, got {tuple(img.shape)}, {mode}, {padding_mode}")
            if norm is None:  # Resample: grid axes reversed, channel last, float64, scaled by 2 / size
                norm = _plain(grid)[[2, 1, 0]].movedim(0, -1).to(torch.float64).unsqueeze(0).clone()
                for i, dim in enumerate(img.shape[3:0:-1]):
                    norm[0, ..., i] *= 2.0 / max(2, dim)
            d[key] = torch.nn.functional.grid_sample(img.unsqueeze(0), norm, mode=mode, padding_mode=padding_mode, align_corners=False)[0].to(torch.float32)
        self._do_transform = do_resampling
        return d

    def _identity(self, sp_size) -> torch.Tensor:
        """MONAI's identity grid (``RandAffine.get_identity_grid``) as ``AffineGrid`` uses it: a plain
        tensor in the grid dtype of ``RandAffineGrid`` (float32), kept once per spatial size."""
        cache = self.__dict__.setdefault("_fast_identity", {})
        key = tuple(int(s) for s in sp_size)
        if key not in cache:
            g = self.rand_affine.get_identity_grid(sp_size, lazy=False)
            dtype = get_equivalent_dtype(self.rand_affine.rand_affine_grid.dtype or g.dtype, torch.Tensor)
            cache[key] = _plain(g).to(dtype=dtype).clone()
        return cache[key]


class FastRandHistogramShiftd(mt.RandHistogramShiftd):
    """MONAI ``RandHistogramShiftd`` with the same draws and bit-identical values (MONAI's torch
    piecewise-linear interpolation, op for op) on plain tensors instead of MetaTensors."""

    def __call__(self, data):
        d = dict(data)
        if not _drawn(self, d):
            return d
        self.shifter.randomize(None)
        for key in self.key_iterator(d):
            img = _plain(d[key])
            lo, hi = img.min(), img.max()
            if lo == hi:  # MONAI warns and returns the image unchanged
                d[key] = self.shifter(d[key], randomize=False)
                continue
            xp = torch.as_tensor(self.shifter.reference_control_points, dtype=img.dtype) * (hi - lo) + lo
            fp = torch.as_tensor(self.shifter.floating_control_points, dtype=img.dtype) * (hi - lo) + lo
            m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
            b = fp[:-1] - (m * xp[:-1])
            flat = img.reshape(-1)
            idx = (torch.searchsorted(xp, flat) - 1).clamp_(0, len(m) - 1)
            out = (torch.take(m, idx) * flat + torch.take(b, idx)).reshape(img.shape)
            out = torch.where(img < xp[0], fp[0], out)
            d[key] = torch.where(img > xp[-1], fp[-1], out)
        return d


class FastRandAdjustContrastd(mt.RandAdjustContrastd):
    """MONAI ``RandAdjustContrastd`` with the same draws and bit-identical values: ``AdjustContrast``'s
    gamma curve, op for op, on plain tensors instead of MetaTensors (MONAI's ``invert_image`` /
    ``retain_stats`` variants are left to MONAI)."""

    def __call__(self, data):
        adj = self.adjuster.adjust_contrast
        if adj.invert_image or adj.retain_stats:
            return super().__call__(data)
        d = dict(data)
        if not _drawn(self, d):
            return d
        self.adjuster.randomize(None)
        gamma = self.adjuster.gamma_value
        for key in self.key_iterator(d):
            img = _plain(d[key])
            img_min = img.min()
            img_range = img.max() - img_min
            d[key] = ((img - img_min) / float(img_range + 1e-7)) ** gamma * img_range + img_min
        return d


class FastRandBiasFieldd(mt.RandBiasFieldd):
    """MONAI ``RandBiasFieldd`` with the same draws: the same polynomial field (products of Legendre
    polynomials, degree ``degree``, MONAI's coefficient layout) built separably in float64 torch —
    three small per-axis tables contracted with the coefficient cube — instead of NumPy's ``leggrid3d``
    over the whole grid; ``image × exp(field)`` in float64 as MONAI computes it, then float32. Equal
    to MONAI's output to float32 rounding (summation order of the field differs)."""

    def __call__(self, data):
        d = dict(data)
        if not _drawn(self, d):
            return d
        first_key = self.first_key(d)
        if first_key == ():  # no key present: nothing to convert (as MONAI)
            return d
        rb = self.rand_bias_field
        rb.randomize(img_size=d[first_key].shape[1:])
        for key in self.key_iterator(d):
            img = _plain(d[key])
            if img.dim() != 4:
                d[key] = rb(d[key], randomize=False)
                continue
            field = _legendre_field(tuple(img.shape[1:]), rb.degree, rb._coeff)
            out = img.to(torch.float64) * torch.exp(field)[None]
            d[key] = out.to(get_equivalent_dtype(rb.dtype or img.dtype, torch.Tensor))
        return d


def _legendre_field(shape: tuple[int, int, int], degree: int, coeff: Sequence[float]) -> torch.Tensor:
    """MONAI ``RandBiasField._generate_random_field`` for a 3-D shape, separably: sum over
    i + j + k <= degree of c_ijk P_i(x) P_j(y) P_k(z) on float32 ``linspace(-1, 1)`` coordinates."""
    cube = np.zeros((degree + 1,) * 3)
    pts = [[i, j, k] for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]
    p = np.asarray(pts)
    cube[p[:, 0], p[:, 1], p[:, 2]] = coeff
    tabs = []
    for n in shape:
        x = torch.from_numpy(np.linspace(-1.0, 1.0, n, dtype=np.float32)).to(torch.float64)
        P = [torch.ones_like(x), x]
        for k in range(1, degree):
            P.append(((2 * k + 1) * x * P[k] - k * P[k - 1]) / (k + 1))
        tabs.append(torch.stack(P[: degree + 1]))  # [degree + 1, n]
    c = torch.from_numpy(cube)
    t = torch.tensordot(c, tabs[2], dims=([2], [0]))  # [i, j, z]
    t = torch.tensordot(t, tabs[1], dims=([1], [0]))  # [i, z, y]
    t = torch.tensordot(tabs[0], t, dims=([0], [0]))  # [x, z, y]
    return t.permute(0, 2, 1).contiguous()


def train_augment(cfg: PipelineConfig, cached_indices: bool = False, recipe: str = "standard", fast: bool = True) -> mt.Compose:
    """Patch sampling + augmentation of the real image.

    ``standard``: rotation ±8.6° (p 0.5), scale ±10 %, intensity scale/shift, gamma 0.8–1.25.
    ``robust`` (issue 14): rotation ±20° about every axis (p 0.7: oblique and tilted acquisitions),
    scale ±12 %; for MRI a T2-type inversion of the contrast inside the head (p 0.3,
    :func:`invert_inside_head`; not for CT, whose Hounsfield units do not change with the scanner);
    a random monotone intensity curve (MONAI ``RandHistogramShiftd``, p 0.4); gamma 0.6–1.6 (p 0.5);
    a smooth multiplicative bias field (``RandBiasFieldd``, p 0.3); Gaussian noise (p 0.15); the
    standard scale/shift. ``fast`` (default): the affine, histogram-shift, gamma and bias-field steps
    are the ``FastRand*`` subclasses (MONAI's draws and values, computed more cheaply); ``False``:
    MONAI's own classes (the reference the tests and ``bench/medical.py --part prep`` compare with)."""
    # RandAffined: the patch-sized identity grid is built once (cache_grid), not per draw — the same output
    if recipe not in AUGMENT_RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; expected one of {AUGMENT_RECIPES}")
    keys = ["image", "label"]
    p = (cfg.patch,) * 3
    affine, hist_shift, contrast, bias = ((FastRandAffined, FastRandHistogramShiftd, FastRandAdjustContrastd, FastRandBiasFieldd) if fast else
                                          (mt.RandAffined, mt.RandHistogramShiftd, mt.RandAdjustContrastd, mt.RandBiasFieldd))
    ratios = [0.5] + [1.0] * (cfg.num_classes - 1)
    steps: list[Any] = [
        mt.SpatialPadd(keys=keys, spatial_size=p),
        mt.RandCropByLabelClassesd(keys=keys, label_key="label", spatial_size=p, num_classes=cfg.num_classes, ratios=ratios,
                                   num_samples=cfg.num_samples, allow_smaller=False, indices_key=INDICES_KEY if cached_indices else None),
    ]
    if recipe == "standard":
        steps += [
            affine(keys=keys, prob=0.5, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1), mode=("bilinear", "nearest"),
                   padding_mode="zeros", spatial_size=p, cache_grid=True),
            mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            contrast(keys="image", gamma=(0.8, 1.25), prob=0.3),
        ]
    else:
        if cfg.modality.upper() in ("MRI", "MR"):
            # before the affine: its zero padding and the skull-stripped background stay background
            steps.append(mt.RandLambdad(keys="image", func=invert_inside_head, prob=0.3, track_meta=False))
        steps += [
            affine(keys=keys, prob=0.7, rotate_range=(0.35, 0.35, 0.35), scale_range=(0.12, 0.12, 0.12), mode=("bilinear", "nearest"),
                   padding_mode="zeros", spatial_size=p, cache_grid=True),
            hist_shift(keys="image", num_control_points=(4, 10), prob=0.4),
            contrast(keys="image", gamma=(0.6, 1.6), prob=0.5),
            bias(keys="image", degree=3, coeff_range=(0.0, 0.3), prob=0.3),
            mt.RandGaussianNoised(keys="image", std=0.02, prob=0.15),
            mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    if cfg.allow_flip:
        steps.insert(2, mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=0))
    steps.append(mt.DeleteItemsd(keys=INDICES_KEY))
    steps.append(mt.EnsureTyped(keys=keys, track_meta=False))
    return mt.Compose(steps)


class Repeat(torch.utils.data.Dataset):
    """Index ``i`` → ``base[i % len(base)]``: many random patch draws per cached volume per epoch."""

    def __init__(self, base: torch.utils.data.Dataset, length: int):
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def cached_patch_dataset(cases: Sequence[dict], cfg: PipelineConfig, draws_per_epoch: int, preprocessed: bool = False,
                         recipe: str = "standard", fast: bool = True) -> torch.utils.data.Dataset:
    """Deterministic preprocessing cached once (``CacheDataset``); random patches drawn per item
    with :func:`train_augment`'s ``recipe`` (and ``fast``). ``preprocessed``: the cases are already outputs of
    :func:`preprocess` (not file paths)."""
    from monai.data import CacheDataset

    # the per-class voxel indices are computed once and cached too, so each patch draw is O(1)
    index = mt.ClassesToIndicesd(keys="label", num_classes=cfg.num_classes, indices_postfix="_cls_indices")
    pre = [] if preprocessed else list(preprocess(cfg).transforms)
    full = mt.Compose([*pre, index, *train_augment(cfg, cached_indices=True, recipe=recipe, fast=fast).transforms])
    cache = CacheDataset(list(cases), transform=full, cache_rate=1.0, num_workers=0, progress=False)
    return Repeat(cache, max(draws_per_epoch, len(cases)))
