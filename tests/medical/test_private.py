"""DP-SGD of the 3D UNet (domains.medical.private): exact per-patch gradients through Opacus's hooks,
ε from the accountant within the target, ε = ∞ is the same code without noise, BatchNorm refused."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from domains.medical.model import build_model
from domains.medical.private import PatchSet, PrivateConfig, dp_model, train_private_model


def _tiny():
    torch.manual_seed(0)
    model = build_model("unet", 3, channels=(4, 8))
    g = torch.Generator().manual_seed(1)
    data = PatchSet(torch.randn(8, 1, 8, 8, 8, generator=g), torch.randint(0, 3, (8, 1, 8, 8, 8), generator=g))
    return model, data


def _loss():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


@pytest.mark.slow  # minutes under load on the shared 2 cores (Opacus's functorch fallback for the transposed convs)
def test_per_patch_gradients_equal_one_backward_per_patch():
    model, data = _tiny()
    plain = copy.deepcopy(model)  # the reference runs without Opacus's hooks
    gsm = dp_model(model)
    _loss()(gsm(data.images[:4]), data.labels[:4]).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    for i in (0, 3):
        ref = torch.autograd.grad(_loss()(plain(data.images[i:i + 1]), data.labels[i:i + 1]), [p for p in plain.parameters() if p.requires_grad])
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.grad_sample[i], r, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_private_run_spends_at_most_the_target_and_inf_is_the_same_code_without_noise():
    model, data = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PrivateConfig(steps=3, batch_size=4, patches=len(data), epsilon=8.0, delta=1e-3, track=False)
    trained, m = train_private_model(cfg, data, model)
    assert m["noise_multiplier"] > 0 and 7.5 <= m["epsilon"] <= 8.0 + 1e-6
    assert m["sample_rate"] == pytest.approx(0.5) and m["clipped_fraction"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the initial model is left alone
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())
    _, inf = train_private_model(PrivateConfig(steps=2, batch_size=4, epsilon=math.inf, track=False), data, model)
    assert inf["noise_multiplier"] == 0 and math.isinf(inf["epsilon"]) and inf["clipped_fraction"] == 0


def test_batchnorm_is_refused():
    with pytest.raises(ValueError, match="not DP-compatible"):
        dp_model(nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2)))


def test_trainable_sets_select_the_last_block_or_everything():
    from domains.medical.private import select_trainable

    model, _ = _tiny()
    n_last = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.2."))
    last = copy.deepcopy(model)
    assert select_trainable(last, "last") == n_last < sum(p.numel() for p in model.parameters())
    assert {n for n, p in last.named_parameters() if p.requires_grad} == {n for n, _ in model.named_parameters() if n.startswith("model.2.")}
    assert select_trainable(copy.deepcopy(model), "all") == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="unknown trainable"):
        select_trainable(model, "encoder")


@pytest.mark.slow  # Opacus's functorch fallback for the transposed conv of the last block: ~1.5 min under load
def test_dp_fine_tuning_of_the_last_block_leaves_every_other_parameter_alone():
    model, data = _tiny()
    n_last = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.2."))
    # ε = ∞: the same code path (Opacus hooks on the trained subset, DPOptimizer) without the accountant's noise search
    cfg = PrivateConfig(steps=2, batch_size=4, patches=len(data), epsilon=math.inf, trainable="last", track=False)
    trained, m = train_private_model(cfg, data, model)
    assert m["trainable"] == "last" and m["trainable_params"] == n_last
    before, after = dict(model.named_parameters()), dict(trained.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("model.2."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.2."))
    assert all(p.requires_grad for p in trained.parameters())  # a plain model again


@pytest.mark.slow  # draws synthetic whole-head patches from the bundled task's label map
def test_public_pretraining_trains_on_synthetic_patches_only():
    from domains.medical.private import pipeline, pretrain_public, public_sampler
    from domains.medical.training import load_training_task

    cfg = PrivateConfig(init="public", public_steps=3, batch_size=2, channels=(4, 8, 16, 32), patch=16, track=False)
    task = load_training_task(cfg.task)
    pipe = pipeline(cfg, task)
    assert public_sampler(task, pipe).cfg.p_synth == 1.0  # never a real image
    torch.manual_seed(cfg.seed)
    untouched = build_model("unet", task.num_classes, channels=cfg.channels)
    model, info = pretrain_public(cfg, task, pipe)
    assert info["public_steps"] == 3 and math.isfinite(info["public_final_loss"]) and info["public_data"]
    assert any(not torch.equal(a, b) for a, b in zip(untouched.state_dict().values(), model.state_dict().values()))
    assert not model.training
