"""Transfer learning and PEFT: what trains, what stays fixed, and that merges / adapters are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.backbones import create_backbone
from core.finetune import (
    AdapterError,
    GradualUnfreezer,
    apply_bitfit,
    apply_lora,
    discriminative_param_groups,
    freeze,
    layer_groups,
    load_adapter,
    lora_target_modules,
    merge_lora,
    replace_head,
    save_adapter,
    trainable_parameter_report,
    unfreeze,
)


def _lite0(seed=0, **kw):
    torch.manual_seed(seed)
    return create_backbone("tf_efficientnet_lite0", pretrained=False, num_classes=3, **kw)


def _train_step(model, x, y, lr=0.05):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss.detach())


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    after = model.state_dict()
    return {k for k in before if k in after and before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])}


X = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 1])


def test_lora_on_timm_trains_only_adapters_and_head_and_counts_match():
    m = _lite0()
    targets = lora_target_modules(m)
    assert targets and "classifier" not in targets
    assert all(m.get_submodule(t).groups == 1 for t in targets if isinstance(m.get_submodule(t), nn.Conv2d))
    expected_lora = 0
    for t in targets:
        layer = m.get_submodule(t)
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            expected_lora += 4 * (layer.in_channels * k + layer.out_channels)
        else:
            expected_lora += 4 * (layer.in_features + layer.out_features)
    apply_lora(m, r=4, alpha=8)
    rep = trainable_parameter_report(m)
    assert rep["by_kind"]["lora"] == expected_lora
    assert rep["by_kind"]["head"] == 1280 * 3 + 3
    assert rep["trainable"] == expected_lora + 1280 * 3 + 3
    assert rep["fraction"] < 0.05
    before = _snapshot(m)
    _train_step(m, X, Y)
    changed = _changed(before, m)
    assert any("lora_" in k for k in changed) and "classifier.weight" in changed
    bad = [k for k in changed if "lora_" not in k and not k.startswith("classifier")]
    assert not bad, f"frozen tensors changed (BN stats must stay fixed too): {bad[:5]}"


def test_lora_merge_is_equivalent_and_restores_the_plain_architecture():
    base = _lite0()
    base_keys = set(base.state_dict())
    apply_lora(base, r=4)
    with torch.no_grad():
        for n, p in base.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    base.eval()
    y_lora = base(X)
    merge_lora(base)
    assert set(base.state_dict()) == base_keys
    assert not any("lora" in n for n, _ in base.named_modules())
    torch.testing.assert_close(base(X), y_lora, atol=1e-4, rtol=1e-4)


def test_adapter_roundtrip_into_a_fresh_model_is_exact_and_small(tmp_path):
    m = _lite0(seed=0)
    apply_lora(m, r=4)
    for _ in range(2):
        _train_step(m, X, Y)
    m.eval()
    ref = m(X)
    path = save_adapter(m, tmp_path / "a.safetensors", metadata={"task": "unit"})
    fresh = _lite0(seed=0)  # same base weights, no LoRA yet
    load_adapter(fresh, path)
    fresh.eval()
    torch.testing.assert_close(fresh(X), ref)
    full = trainable_parameter_report(m)["base_total"] * 4
    assert path.stat().st_size < 0.06 * full
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(AdapterError, match="does not fit"):
        load_adapter(other, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(AdapterError):
        load_adapter(_lite0(), tmp_path / "junk.safetensors")


def test_lora_on_conv3d_unet_and_mlp_tower():
    unet = create_backbone("monai_unet", pretrained=False, num_classes=2, channels=(8, 16, 32), strides=(2, 2))
    targets = lora_target_modules(unet)
    assert targets and all(isinstance(unet.get_submodule(t), nn.Conv3d) for t in targets)
    apply_lora(unet, r=2)
    x = torch.randn(1, 1, 16, 16, 16)
    before = _snapshot(unet)
    loss = unet(x).square().mean()
    loss.backward()
    torch.optim.SGD([p for p in unet.parameters() if p.requires_grad], lr=0.1).step()
    changed = _changed(before, unet)
    assert changed and all("lora_" in k for k in changed)

    tower = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    apply_lora(tower, r=4)
    rep = trainable_parameter_report(tower)
    assert rep["by_kind"]["lora"] == 4 * (16 + 64) + 4 * (64 + 64) and rep["by_kind"]["head"] == 64 * 8 + 8
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(tower)


def test_bitfit_trains_biases_and_head_only():
    m = _lite0()
    apply_bitfit(m)
    rep = trainable_parameter_report(m)
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names and all(n.endswith("bias") or n.startswith("classifier") for n in names)
    assert rep["fraction"] < 0.01 and rep["by_kind"]["bias"] > 0
    before = _snapshot(m)
    _train_step(m, X, Y)
    changed = _changed(before, m)
    assert changed and all(k.endswith("bias") or k.startswith("classifier") for k in changed)


def test_freeze_by_pattern_keeps_frozen_batchnorm_in_eval():
    m = _lite0()
    frozen = freeze(m, ["conv_stem", "bn1", "blocks.[0-3].*"])
    assert frozen and all(n.startswith(("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3")) for n in frozen)
    before = _snapshot(m)
    m.train()
    _train_step(m, X, Y)
    changed = _changed(before, m)
    assert not any(k.startswith(("bn1.", "blocks.0.", "blocks.3.")) for k in changed), "frozen BN running stats moved"
    assert "blocks.5.0.bn1.running_mean" in changed, "trainable BN must keep updating its statistics"
    unfreeze(m, "blocks.3")
    m.train()
    assert m.blocks[3][0].bn1.training
    before = _snapshot(m)
    _train_step(m, X, Y)
    assert "blocks.3.0.bn1.running_mean" in _changed(before, m)
    with pytest.raises(ValueError, match="no parameter"):
        freeze(m, "does_not_exist")


def test_gradual_unfreezing_and_discriminative_lrs():
    m = _lite0()
    groups = layer_groups(m)
    assert len(groups) >= 5 and any("classifier.weight" in g for g in groups[-1:])
    unf = GradualUnfreezer(m, every=1)
    counts = []
    for epoch in range(4):
        unf.step(epoch)
        counts.append(sum(p.requires_grad for p in m.parameters()))
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert {n for n, p in m.named_parameters() if p.requires_grad} == set(sum(groups[-4:], []))

    pg = discriminative_param_groups(m, lr=1e-3, decay=0.5, weight_decay=0.01)
    ids = [id(p) for g in pg for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    by_depth = {}
    for g in pg:
        by_depth[g["depth"]] = g["lr"]
        if any(p.ndim <= 1 for p in g["params"]):
            assert g["weight_decay"] == 0.0
    lrs = [by_depth[d] for d in sorted(by_depth)]
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 * 0.5 ** (len(groups) - 1))
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    torch.optim.AdamW(pg)  # accepted by a real optimizer


def test_replace_head_for_new_label_sets():
    m = replace_head(_lite0(), 7)
    assert m(X).shape == (4, 7)
    tower = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    replace_head(tower, 2)
    assert tower(torch.randn(3, 16)).shape == (3, 2)


@pytest.mark.slow
def test_lora_on_temporal_fusion_transformer():
    import numpy as np
    import pandas as pd
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

    df = pd.DataFrame({"t": np.tile(np.arange(60), 2), "g": np.repeat(["a", "b"], 60), "y": np.random.default_rng(0).normal(size=120).astype("float32")})
    ds = TimeSeriesDataSet(df, time_idx="t", target="y", group_ids=["g"], max_encoder_length=10, max_prediction_length=3, time_varying_unknown_reals=["y"])
    tft = TemporalFusionTransformer.from_dataset(ds, hidden_size=8, attention_head_size=1, hidden_continuous_size=4)
    apply_lora(tft, r=2)
    x, _ = next(iter(ds.to_dataloader(batch_size=4)))
    assert tft(x)["prediction"].shape[0] == 4
    assert trainable_parameter_report(tft)["by_kind"]["lora"] > 0


def test_head_detection_does_not_mistake_a_body_layer_for_a_head():
    from core.finetune import head_names

    assert head_names(_lite0()) == ["classifier"]
    assert head_names(create_backbone("tf_efficientnet_lite0", pretrained=False, num_classes=0)) == []
    tower = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert head_names(tower) == ["2"]


def test_declared_heads_win_over_the_last_linear_guess():
    """A model with several outputs names its heads (``suite_heads``): LoRA leaves them whole and trainable,
    adapts the rest, and a declared name the model lacks is an error, not a silent guess."""
    from core.finetune import head_names

    tower = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 1))
    tower.suite_heads = ["2", "3"]
    assert head_names(tower) == ["2", "3"]
    apply_lora(tower, r=2)
    params = dict(tower.named_parameters())
    assert all(params[n].requires_grad for n in ("2.weight", "2.bias", "3.weight", "3.bias"))
    assert not any(n.startswith(("2.", "3.")) and "lora_" in n for n in params)
    assert params["0.base_layer.weight"].requires_grad is False and any(n.startswith("0.lora_") for n in params)
    tower2 = nn.Sequential(nn.Linear(4, 2))
    tower2.suite_heads = ["head"]
    with pytest.raises(ValueError, match="suite_heads names modules it does not have"):
        head_names(tower2)
