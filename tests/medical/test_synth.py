"""Domain randomisation (domains.medical.synth): the whole-head generation labels keep the task's
classes, the sampler's mirroring swaps the lateral labels, thick-slice simulation blurs only the
slice axis, and a restored sampler state draws the same batch again."""

from __future__ import annotations

import numpy as np
import torch

from domains.medical.synth import (GENERATION_TO_LABEL, SynthConfig, SynthSampler, build_generation_labels, simulate_thick_slices)


def _phantom(n: int = 40):
    """A head: an air background, a scalp shell of three intensities and a brain with two
    hemispheres (left at low x, RAS), each with CSF/GM/WM-like intensities, and a 'deep grey' blob."""
    x, y, z = np.meshgrid(*(np.arange(n) - n / 2 + 0.5,) * 3, indexing="ij")
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    t1 = np.zeros((n,) * 3, np.float32)
    lab = np.zeros((n,) * 3, np.uint8)
    head, brain = r < n * 0.45, r < n * 0.33
    t1[head] = np.where(r[head] > n * 0.42, 200.0, np.where(r[head] > n * 0.38, 90.0, 30.0))
    tissue = np.where(r < n * 0.15, 110.0, np.where(r < n * 0.28, 80.0, 40.0))
    t1[brain] = tissue[brain]
    lab[brain & (x < 0)] = 1
    lab[brain & (x >= 0)] = 2
    deep = (r < n * 0.08) & (x > 1)
    lab[deep] = 4
    return t1, lab


def test_generation_labels_keep_the_task_classes_and_split_the_head():
    t1, lab = _phantom()
    gen = build_generation_labels(t1, lab)
    mapped = np.asarray(GENERATION_TO_LABEL)[gen]
    assert np.array_equal(mapped, lab)  # every brain voxel keeps its class; the rest is background
    inside = lab > 0
    assert len(np.unique(gen[inside & (lab == 1)])) == 3  # CSF / GM / WM split inside a hemisphere
    nonbrain = gen[(lab == 0) & (t1 > 0)]
    assert set(np.unique(nonbrain)) == {11, 12, 13}  # three non-brain head tissues by intensity
    assert np.all(gen[t1 == 0] == 0)


def _sampler(**kw) -> SynthSampler:
    n = 40
    ramp = np.broadcast_to(np.linspace(0, 1, n)[:, None, None], (n, n, n)).astype(np.float32)
    gen = np.zeros((n, n, n), np.uint8)
    gen[4:20, 4:36, 4:36] = 2  # cerebrum_left_gm at low x
    gen[20:36, 4:36, 4:36] = 5  # cerebrum_right_gm at high x
    cfg = SynthConfig(**{"rotate_deg": 0.0, "scale": 0.0, "shear": 0.0, "elastic_vox": 0.0, "p_thick": 0.0, "p_bias": 0.0, "p_gamma": 0.0,
                         "p_noise": 0.0, "p_fov": 0.0, "p_synth": 0.0, "p_real_skull": 1.0, **kw})
    return SynthSampler(ramp, ramp, gen, patch=16, spacing=3.0, cfg=cfg, seed=0, class_ratios=(0.0, 1.0, 1.0, 0.0, 0.0))


def test_mirroring_swaps_the_lateral_labels():
    for p_flip, image_rises in ((0.0, True), (1.0, False)):
        b = _sampler(p_flip=p_flip).sample(6)
        img, lab = b["image"][:, 0], b["label"][:, 0].long()
        assert img.shape == (6, 16, 16, 16) and lab.shape == (6, 16, 16, 16)
        rises = (img[:, -1] - img[:, 0]).mean() > 0
        assert bool(rises) == image_rises  # the x-ramp runs the other way in mirrored patches
        for i in range(6):  # ... yet the left label stays on the low-x side: swapped with the anatomy
            xs1 = (lab[i] == 1).nonzero()[:, 0].float()
            xs2 = (lab[i] == 2).nonzero()[:, 0].float()
            if len(xs1) and len(xs2):
                assert xs1.mean() < xs2.mean()


def test_synthetic_images_are_scaled_like_inputs_and_labels_are_task_classes():
    s = _sampler(p_synth=1.0, p_noise=0.5, p_bias=0.5, p_gamma=0.5, p_thick=0.5, rotate_deg=10.0, elastic_vox=1.0)
    b = s.sample(4)
    assert set(torch.unique(b["label"]).tolist()) <= {0.0, 1.0, 2.0}
    assert float(b["image"].min()) > -0.5 and float(b["image"].max()) < 1.6
    assert b["image"].dtype == torch.float32


def test_thick_slices_blur_only_the_slice_axis():
    x = torch.zeros(1, 24, 24, 24)
    x[:, :, :, ::2] = 1.0  # stripes along z
    x[:, ::2, :, :] += 1.0  # stripes along x
    y = simulate_thick_slices(x, axis=2, factor=2.0)
    assert float((y[0, 5, 5, 1:-1] - y[0, 5, 5, 2:]).abs().max()) < 0.3  # z stripes smoothed away
    assert float((y[0, 2:-2:2, 5, 8] - y[0, 3:-1:2, 5, 8]).abs().min()) > 0.9  # x stripes intact
    assert simulate_thick_slices(x, axis=0, factor=1.0) is x


def test_restored_state_draws_the_same_batch():
    s = _sampler(p_synth=0.5, p_noise=0.5, p_bias=0.5, p_gamma=0.5, p_thick=0.5, rotate_deg=10.0, elastic_vox=1.0, p_flip=0.5)
    s.sample(2)
    state = s.get_state()
    a = s.sample(3)
    s.set_state(state)
    b = s.sample(3)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
