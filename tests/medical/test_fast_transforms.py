"""Issue 14.6: ``transforms.FastRand*`` (cheaper versions of the MONAI augmentation transforms the
trainer uses) make the SAME random draws and give the SAME values as the MONAI originals — so seeded
runs, ``--resume`` and the trained default model are unchanged — and ``train_augment`` uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai import transforms as mt

from domains.medical import transforms as T
from domains.medical.config import PipelineConfig
from domains.medical.training import transform_rng_state

PAIRS = {  # name: (MONAI class, ours, keyword arguments as train_augment's robust recipe uses them)
    "affine": (mt.RandAffined, T.FastRandAffined, dict(keys=["image", "label"], prob=0.7, rotate_range=(0.35,) * 3, scale_range=(0.12,) * 3,
                                                      mode=("bilinear", "nearest"), padding_mode="zeros", spatial_size=(20, 24, 22), cache_grid=True)),
    "histogram": (mt.RandHistogramShiftd, T.FastRandHistogramShiftd, dict(keys="image", num_control_points=(4, 10), prob=0.4)),
    "contrast": (mt.RandAdjustContrastd, T.FastRandAdjustContrastd, dict(keys="image", gamma=(0.6, 1.6), prob=0.5)),
    "bias": (mt.RandBiasFieldd, T.FastRandBiasFieldd, dict(keys="image", degree=3, coeff_range=(0.0, 0.3), prob=0.3)),
}


def _patch(seed: int, shape=(20, 24, 22)) -> dict:
    """A "head" of random intensities on a 0 background, labels 0-4 at random inside it (MetaTensors, as after the crop)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, *shape)
    img[:, 3:-3, 2:-2, 4:-4] = 0.1 + 0.9 * torch.rand(1, shape[0] - 6, shape[1] - 4, shape[2] - 8, generator=g)
    lab = (torch.rand(1, *shape, generator=g) * 5).floor() * (img > 0)
    from monai.data import MetaTensor

    return {"image": MetaTensor(img), "label": MetaTensor(lab)}


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fast_transform_equals_monai_draw_by_draw(name):
    monai_cls, fast_cls, kw = PAIRS[name]
    ref, fast = monai_cls(**kw), fast_cls(**kw)
    ref.set_random_state(5)
    fast.set_random_state(5)
    applied = 0
    for i in range(24):
        shape = (20, 24, 22) if i % 3 else (18, 24, 25)  # affine: also a patch that must be resized to spatial_size
        a, b = ref(_patch(i, shape)), fast(_patch(i, shape))
        for k in ("image", "label"):
            x, y = _plain(a[k]), _plain(b[k])
            assert x.dtype == y.dtype and x.shape == y.shape, (k, x.dtype, y.dtype, x.shape, y.shape)
            if name == "bias":  # the field's sums in another order: equal to float32 rounding
                torch.testing.assert_close(y, x, rtol=2e-6, atol=1e-7)
            else:
                assert torch.equal(x, y), (name, i, k, float((x - y).abs().max()))
        applied += int(not torch.equal(_plain(b["image"]), _patch(i, shape)["image"].as_tensor()))
        assert transform_rng_state(ref) == transform_rng_state(fast), f"{name}: random states differ after draw {i}"
    assert 2 <= applied <= 23  # the transform was applied on some draws and skipped on others (its prob)


def test_fast_histogram_shift_of_a_constant_image_is_monais():
    monai_cls, fast_cls, kw = PAIRS["histogram"]
    ref, fast = monai_cls(**{**kw, "prob": 1.0}), fast_cls(**{**kw, "prob": 1.0})
    ref.set_random_state(1)
    fast.set_random_state(1)
    flat = {"image": torch.full((1, 8, 8, 8), 0.3)}
    with pytest.warns(UserWarning):
        a = ref(dict(flat))
    with pytest.warns(UserWarning):
        b = fast(dict(flat))
    assert torch.equal(_plain(a["image"]), _plain(b["image"]))
    assert transform_rng_state(ref) == transform_rng_state(fast)


@pytest.mark.parametrize("recipe", ["robust", "standard"])
def test_train_augment_chain_equals_the_monai_chain(recipe):
    cfg = PipelineConfig(patch=24, num_samples=2)
    ours, ref = T.train_augment(cfg, recipe=recipe), T.train_augment(cfg, recipe=recipe, fast=False)
    names = [type(t).__name__ for t in ours.transforms]
    assert "FastRandAffined" in names and "FastRandAdjustContrastd" in names
    if recipe == "robust":
        assert "FastRandHistogramShiftd" in names and "FastRandBiasFieldd" in names
    assert not any(n.startswith("Fast") for n in (type(t).__name__ for t in ref.transforms))
    ours.set_random_state(3)
    ref.set_random_state(3)
    assert json.loads(transform_rng_state(ours)) == json.loads(transform_rng_state(ref))
    for i in range(12):
        a, b = ref(_patch(i, (36, 40, 34))), ours(_patch(i, (36, 40, 34)))
        for pa, pb in zip(a, b):
            assert type(pb["image"]) is torch.Tensor and pb["image"].dtype == torch.float32
            torch.testing.assert_close(pb["image"], pa["image"], rtol=2e-6, atol=1e-7)
            assert torch.equal(pb["label"], pa["label"])
        assert transform_rng_state(ours) == transform_rng_state(ref), f"random states differ after draw {i}"


def test_legendre_field_is_monais_field():
    rb = mt.RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=1.0)
    rb.set_random_state(2)
    rb.randomize(img_size=(9, 14, 11))
    want = rb._generate_random_field((9, 14, 11), 3, rb._coeff)
    got = T._legendre_field((9, 14, 11), 3, rb._coeff).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_real_cached_patches_equal_the_monai_chain(brain_task):
    """The bench's and trainer's setting: Colin27 cached at 3 mm, 48³ patches, 4 per draw, robust recipe."""
    from domains.medical.data import read_msd_task

    task = read_msd_task(brain_task)
    cfg = PipelineConfig(modality="MRI", num_classes=task.num_classes)
    ours = T.cached_patch_dataset(task.training[:1], cfg, draws_per_epoch=8, recipe="robust")
    ref = T.cached_patch_dataset(task.training[:1], cfg, draws_per_epoch=8, recipe="robust", fast=False)
    ours.base.transform.set_random_state(9)
    ref.base.transform.set_random_state(9)
    for i in range(8):
        for pa, pb in zip(ref[i], ours[i]):
            assert pb["image"].shape == (1, 48, 48, 48)
            torch.testing.assert_close(pb["image"], pa["image"], rtol=2e-6, atol=1e-7)
            assert torch.equal(pb["label"], pa["label"])
    assert transform_rng_state(ours.base.transform) == transform_rng_state(ref.base.transform)
