"""Domain randomisation for the brain task from ONE labelled head (SynthSeg-style, Billot et al. 2023).

Only one labelled subject installs offline (Colin27: T1 with skull ``ch2``, skull-stripped ``ch2bet``,
AAL drawn on the same grid). A network trained on that one image in MNI space labels a real scan's
scalp as "brain" (issue 14). Here every training patch is a *new* head: either an image
**synthesised from a whole-head label map** with random per-label intensities, or the real T1
(with or without its skull) — and both are pushed through what scanners vary: position, size and
shape (affine + smooth elastic), acquisition resolution (thick slices along a random axis:
blur + downsample + linear upsample, as our own resampling to the network grid does), bias field,
gamma, noise, a cut field of view and left–right mirroring with the lateral labels swapped.

* :func:`build_generation_labels` — the whole-head *generation* label map (:data:`GENERATION_CLASSES`,
  14 labels): each of the 3 lobar structures split into CSF / grey / white matter by the T1 intensity
  (1-D k-means inside the brain), the deep grey nuclei as drawn, and three non-brain head tissues by
  intensity inside the head mask (dark: extra-cerebral CSF and cortical bone; mid: muscle, marrow;
  bright: scalp fat) — the tissue split gives the synthetic images internal contrast (a midline, a
  cerebellar boundary), which a one-intensity-per-structure map would not have. The network still
  predicts the 5 task classes (:data:`GENERATION_TO_LABEL`); the extra labels only drive synthesis.
* :class:`SynthSampler` — cached volumes on the network grid → batches ``{"image", "label"}`` of
  ``(B, 1, P, P, P)`` patches, generated in batched torch (one ``grid_sample`` for the deformation of
  the whole batch), with MONAI's intensity transforms (``RandBiasField``, ``RandAdjustContrast``,
  ``RandGaussianNoise``, ``GaussianSmooth``) per patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GENERATION_CLASSES", "GENERATION_TO_LABEL", "LATERAL_LABEL_PAIRS", "LATERAL_GENERATION_PAIRS", "SynthConfig",
           "SynthSampler", "build_generation_labels", "head_mask", "kmeans_1d", "swap_table", "simulate_thick_slices"]

GENERATION_CLASSES = [
    "background",
    "cerebrum_left_csf", "cerebrum_left_gm", "cerebrum_left_wm",
    "cerebrum_right_csf", "cerebrum_right_gm", "cerebrum_right_wm",
    "cerebellum_csf", "cerebellum_gm", "cerebellum_wm",
    "deep_grey_nuclei",
    "extracerebral_csf_bone", "head_soft_tissue", "scalp_fat",
]
# generation label -> task class (0 background, 1 cerebrum L, 2 cerebrum R, 3 cerebellum, 4 deep grey)
GENERATION_TO_LABEL = [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 0, 0, 0]
LATERAL_GENERATION_PAIRS = [(1, 4), (2, 5), (3, 6)]
LATERAL_LABEL_PAIRS = [(1, 2)]
NON_BRAIN = (11, 12, 13)


def kmeans_1d(x: np.ndarray, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """Sorted centres of a 1-D k-means (percentile start; a 200k subsample for speed)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size > 200_000:
        x = np.random.default_rng(seed).choice(x, 200_000, replace=False)
    c = np.percentile(x, np.linspace(15, 85, k))
    for _ in range(iters):
        a = np.abs(x[:, None] - c[None]).argmin(1)
        c = np.array([x[a == j].mean() if np.any(a == j) else c[j] for j in range(k)])
    return np.sort(c)


def head_mask(t1: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """The head (everything that is not air): intensity above 40 % of the Otsu threshold, closed,
    holes filled, largest component (+ the brain mask when given)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    m = t1 > 0.4 * threshold_otsu(t1)
    if brain is not None:
        m |= brain
    m = ndimage.binary_closing(m, iterations=2)
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(m)


def build_generation_labels(head_t1: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whole-head generation labels (uint8, :data:`GENERATION_CLASSES`) from the T1 **with** skull and
    the task's 4-class label map on the same grid (0 outside the brain mask)."""
    t1 = np.asarray(head_t1, dtype=np.float32)
    labels = np.asarray(labels)
    brain = labels > 0
    out = np.zeros(labels.shape, dtype=np.uint8)
    lobar = np.isin(labels, (1, 2, 3))
    cut = np.convolve(kmeans_1d(t1[lobar], 3), [0.5, 0.5], mode="valid")  # CSF | GM | WM thresholds
    tissue = np.digitize(t1, cut)
    for s in (1, 2, 3):
        m = labels == s
        out[m] = 1 + 3 * (s - 1) + tissue[m]
    out[labels == 4] = 10
    nb = head_mask(t1, brain) & ~brain
    cut2 = np.convolve(kmeans_1d(t1[nb], 3), [0.5, 0.5], mode="valid")
    out[nb] = 11 + np.digitize(t1[nb], cut2)
    return out


def swap_table(n: int, pairs) -> torch.Tensor:
    t = torch.arange(n)
    for a, b in pairs:
        t[a], t[b] = b, a
    return t


def simulate_thick_slices(x: torch.Tensor, axis: int, factor: float, sigma_per_factor: float = 0.42) -> torch.Tensor:
    """(C, X, Y, Z) image → the same grid as if acquired with slices ``factor`` voxels thick along
    ``axis``: Gaussian slice profile (FWHM ≈ thickness), sampled every ``factor`` voxels, linearly
    interpolated back (what ``Spacingd`` does to a thick-slice scan at inference)."""
    if factor <= 1.05:
        return x
    from monai.transforms import GaussianSmooth

    sig = [0.0, 0.0, 0.0]
    sig[axis] = sigma_per_factor * factor
    y = GaussianSmooth(sigma=sig)(x)
    y = torch.as_tensor(y)
    size = list(x.shape[1:])
    low = list(size)
    low[axis] = max(2, int(round(size[axis] / factor)))
    y = F.interpolate(y[None], size=low, mode="trilinear", align_corners=True)
    return F.interpolate(y, size=size, mode="trilinear", align_corners=True)[0]


@dataclass
class SynthConfig:
    """Probabilities and ranges of the randomisation. Defaults: a first trial with half the draws synthetic
    and stronger geometry (15°, ±15 %, 1.5 voxel elastic) had not learnt the deep grey nuclei after 400
    steps (Dice 0 on MNI152, an ad-hoc dev run); these milder defaults are the single setting trained after that."""

    p_synth: float = 0.3  # synthetic image from the label map; otherwise the real T1
    p_real_skull: float = 0.4  # of the real draws: with skull (ch2) vs skull-stripped (ch2bet)
    p_strip_synth: float = 0.35  # synthetic head drawn skull-stripped (non-brain + air at 0)
    rotate_deg: float = 12.0
    scale: float = 0.12
    shear: float = 0.03
    elastic_vox: float = 1.0  # std of the smooth displacement at the control points (network voxels)
    elastic_grid: int = 5
    p_flip: float = 0.5
    p_thick: float = 0.5
    max_thickness_mm: float = 6.0
    p_bias: float = 0.5
    bias_coeff: float = 0.06
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.3
    noise_std: float = 0.04
    p_fov: float = 0.1
    max_blur_vox: float = 0.8  # partial-volume blur of synthetic images


class SynthSampler:
    """Random training batches from one cached head on the network grid.

    ``head``/``brain``: (X, Y, Z) float images scaled like the inference input (percentile 0..1; the
    T1 with skull and the skull-stripped T1); ``gen``: (X, Y, Z) generation labels; ``spacing`` the
    grid's mm (for slice thickness). ``sample(B)`` → ``{"image": (B,1,P,P,P), "label": (B,1,P,P,P)}``
    float tensors with task classes (0..4)."""

    def __init__(self, head: np.ndarray, brain: np.ndarray, gen: np.ndarray, patch: int, spacing: float, cfg: SynthConfig | None = None,
                 seed: int | None = None, class_ratios: tuple[float, ...] = (0.5, 1.0, 1.0, 1.0, 1.0)):
        self.cfg = cfg or SynthConfig()
        self.patch, self.spacing = int(patch), float(spacing)
        self.shape = tuple(int(s) for s in gen.shape)
        self.images = torch.as_tensor(np.stack([head, brain]), dtype=torch.float32)[None]  # (1, 2, X, Y, Z)
        gen_t = torch.as_tensor(np.asarray(gen), dtype=torch.long)
        self.gen = gen_t.float()[None, None]
        self.n_gen = len(GENERATION_CLASSES)
        self.to_label = torch.tensor(GENERATION_TO_LABEL, dtype=torch.long)
        self.gen_swap = swap_table(self.n_gen, LATERAL_GENERATION_PAIRS)
        lab = self.to_label[gen_t].numpy().ravel()
        self.indices = [np.flatnonzero(lab == c) for c in range(len(class_ratios))]
        r = np.array([w if len(ix) else 0.0 for w, ix in zip(class_ratios, self.indices)])
        self.ratios = r / r.sum()
        counts = np.bincount(gen_t.numpy().ravel(), minlength=self.n_gen).astype(np.float64)
        self.fractions = torch.as_tensor(counts / counts.sum())
        self.rng = np.random.default_rng(seed)
        self.gen_torch = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        p = self.patch
        ax = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
        self.q = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)  # (P³, 3) patch offsets
        from monai import transforms as mt

        c = self.cfg
        self._bias = mt.RandBiasField(degree=3, coeff_range=(-c.bias_coeff, c.bias_coeff), prob=c.p_bias)
        self._gamma = mt.RandAdjustContrast(prob=c.p_gamma, gamma=c.gamma)
        self._noise = mt.RandGaussianNoise(prob=c.p_noise, std=c.noise_std)
        for t in (self._bias, self._gamma, self._noise):
            t.set_random_state(int(self.rng.integers(2**31)))

    # -- geometry -----------------------------------------------------------------------------
    def _matrix(self, flip: bool) -> torch.Tensor:
        c, rng = self.cfg, self.rng
        a = np.deg2rad(rng.uniform(-c.rotate_deg, c.rotate_deg, 3))
        rx = np.array([[1, 0, 0], [0, math.cos(a[0]), -math.sin(a[0])], [0, math.sin(a[0]), math.cos(a[0])]])
        ry = np.array([[math.cos(a[1]), 0, math.sin(a[1])], [0, 1, 0], [-math.sin(a[1]), 0, math.cos(a[1])]])
        rz = np.array([[math.cos(a[2]), -math.sin(a[2]), 0], [math.sin(a[2]), math.cos(a[2]), 0], [0, 0, 1]])
        sh = np.eye(3) + np.triu(rng.uniform(-c.shear, c.shear, (3, 3)), 1)
        m = rx @ ry @ rz @ sh @ np.diag(rng.uniform(1 - c.scale, 1 + c.scale, 3))
        if flip:
            m[:, 0] *= -1  # patch x runs the other way: a mirrored head
        return torch.as_tensor(m, dtype=torch.float32)

    def _grids(self, b: int) -> tuple[torch.Tensor, list[bool]]:
        """(B, P, P, P, 3) normalised sampling grids (grid_sample's (z, y, x) order) and flip flags."""
        p, c = self.patch, self.cfg
        grids, flips = [], []
        shape = torch.tensor(self.shape, dtype=torch.float32)
        for _ in range(b):
            cls = int(self.rng.choice(len(self.ratios), p=self.ratios))
            flat = int(self.indices[cls][self.rng.integers(len(self.indices[cls]))])
            centre = torch.tensor(np.unravel_index(flat, self.shape), dtype=torch.float32)
            flip = bool(self.rng.random() < c.p_flip)
            flips.append(flip)
            pts = self.q @ self._matrix(flip).T + centre
            if c.elastic_vox > 0:
                g = c.elastic_grid
                ctrl = torch.randn((1, 3, g, g, g), generator=self.gen_torch) * c.elastic_vox
                disp = F.interpolate(ctrl, size=(p, p, p), mode="trilinear", align_corners=True)[0]
                pts = pts + disp.reshape(3, -1).T
            norm = 2 * pts / (shape - 1) - 1
            grids.append(norm.flip(-1).reshape(p, p, p, 3))
        return torch.stack(grids), flips

    # -- intensities ----------------------------------------------------------------------------
    def _synthesise(self, gen: torch.Tensor) -> torch.Tensor:
        """(P, P, P) generation labels → (1, P, P, P) image with random per-label Gaussians, scaled
        as the inference input would be (whole-head 0.5–99.5 % percentiles, approximated from the
        label fractions of the full head)."""
        c, n = self.cfg, self.n_gen
        mu = torch.rand(n, generator=self.gen_torch)
        sd = torch.rand(n, generator=self.gen_torch) * 0.08
        if self.rng.random() < 0.7:  # air is dark in most MR contrasts
            mu[0] = float(self.rng.uniform(0, 0.1))
        if self.rng.random() < c.p_strip_synth:  # skull-stripped look
            mu[[0, *NON_BRAIN]] = 0.0
            sd[[0, *NON_BRAIN]] = 0.0
        img = mu[gen] + sd[gen] * torch.randn(gen.shape, generator=self.gen_torch)
        order = torch.argsort(mu, descending=True)
        cum = torch.cumsum(self.fractions[order], 0)
        hi_label = order[int(torch.searchsorted(cum, torch.tensor(0.005, dtype=cum.dtype)))]
        hi = float(mu[hi_label] + 2 * sd[hi_label])
        lo = float(mu[order[-1]])  # the darkest tissue (usually air) — the 0.5 % percentile
        img = img[None]
        blur = float(self.rng.uniform(0, c.max_blur_vox))
        if blur > 0.1:
            from monai.transforms import GaussianSmooth

            img = torch.as_tensor(GaussianSmooth(sigma=blur)(img))
        return ((img - lo) / max(hi - lo, 1e-3)).clamp(0, 1)

    def sample(self, b: int) -> dict[str, torch.Tensor]:
        c = self.cfg
        grids, flips = self._grids(b)
        imgs = F.grid_sample(self.images.expand(b, -1, -1, -1, -1), grids, mode="bilinear", padding_mode="zeros", align_corners=True)
        gens = F.grid_sample(self.gen.expand(b, -1, -1, -1, -1), grids, mode="nearest", padding_mode="zeros", align_corners=True)
        gens = gens[:, 0].round().long()
        out_img, out_lab = [], []
        for i in range(b):
            g = self.gen_swap[gens[i]] if flips[i] else gens[i]
            if self.rng.random() < c.p_synth:
                x = self._synthesise(g)
            else:
                x = imgs[i, 0 if self.rng.random() < c.p_real_skull else 1][None]
            lab = self.to_label[g].float()[None]
            if self.rng.random() < c.p_thick:
                thick = float(self.rng.uniform(self.spacing, c.max_thickness_mm))
                x = simulate_thick_slices(x, int(self.rng.integers(3)), thick / self.spacing)
            x = torch.as_tensor(self._bias(x))
            x = torch.as_tensor(self._gamma(x))
            x = torch.as_tensor(self._noise(x))
            if self.rng.random() < c.p_fov:  # the scan ends at a plane through the patch
                axis, cut = int(self.rng.integers(3)), int(self.rng.integers(self.patch // 4, 3 * self.patch // 4))
                sl = [slice(None)] * 4
                sl[axis + 1] = slice(cut, None) if self.rng.random() < 0.5 else slice(0, cut)
                x[tuple(sl)] = 0
                lab[tuple(sl)] = 0
            out_img.append(x.float())
            out_lab.append(lab)
        return {"image": torch.stack(out_img), "label": torch.stack(out_lab)}

    def get_state(self) -> str:
        """The sampler's random state (JSON) — saved in checkpoints so a resumed run draws on."""
        import json

        monai_states = [t.R.get_state() for t in (self._bias, self._gamma, self._noise)]
        return json.dumps({"rng": self.rng.bit_generator.state, "torch": self.gen_torch.get_state().tolist(),
                           "monai": [[st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])] for st in monai_states]})

    def set_state(self, state: str) -> None:
        import json

        d = json.loads(state)
        self.rng.bit_generator.state = d["rng"]
        self.gen_torch.set_state(torch.tensor(d["torch"], dtype=torch.uint8))
        for t, st in zip((self._bias, self._gamma, self._noise), d["monai"]):
            t.R.set_state((st[0], np.asarray(st[1], dtype=np.uint32), st[2], st[3], st[4]))

    def batches(self, batch_size: int, steps: int):
        """``steps`` batches: the training loop's iterable (no DataLoader: generation is batched)."""
        for _ in range(steps):
            yield self.sample(batch_size)


def load_head(head: str, brain: str, generation_labels: str, spacing: float, intensity) -> dict[str, np.ndarray]:
    """The three volumes of the synthesis task on the network grid (RAS, ``spacing`` mm, labels
    nearest-neighbour); ``intensity``: the inference intensity transform (a MONAI dict transform on
    keys ``head`` and ``brain``, e.g. ``transforms.intensity_transform(pipe, keys=("head", "brain"))``)
    — the cache a :class:`SynthSampler` draws from."""
    from monai import transforms as mt

    keys = ["head", "brain", "gen"]
    tf = mt.Compose([mt.LoadImaged(keys=keys, image_only=True), mt.EnsureChannelFirstd(keys=keys), mt.Orientationd(keys=keys, axcodes="RAS"),
                     mt.Spacingd(keys=keys, pixdim=(spacing,) * 3, mode=["bilinear", "bilinear", "nearest"]), intensity])
    d = tf({"head": str(head), "brain": str(brain), "gen": str(generation_labels)})
    return {"head": np.asarray(d["head"][0], dtype=np.float32), "brain": np.asarray(d["brain"][0], dtype=np.float32),
            "gen": np.asarray(d["gen"][0]).round().astype(np.uint8), "affine": np.asarray(d["gen"].affine, dtype=np.float64)}
