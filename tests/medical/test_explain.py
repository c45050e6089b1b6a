"""Occlusion sensitivity of a structure (monai.visualize) on a network whose answer is known: a local
intensity detector that segments a bright cube."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import UserInputError
from domains.medical.explain import StructureScore, occlusion_on_patch, structure_occlusion


def _net() -> nn.Module:
    conv = nn.Conv3d(1, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1] = 10.0 / 27  # class 1 logit: 10 x the local mean intensity - 5
        conv.bias[1] = -5.0
    return conv.eval()


def _cube(n: int = 24) -> torch.Tensor:
    x = torch.zeros(1, 1, n, n, n)
    x[..., 8:14, 8:14, 8:14] = 1.0
    return x


def test_occluding_the_structure_changes_its_score_more_than_occluding_background():
    net, x = _net(), _cube()
    sens, score, region = occlusion_on_patch(net, x, 1, mask_size=6)
    assert sens.shape == x.shape[2:] and score > 0.9
    assert region[10, 10, 10] and not region[1, 1, 1]
    inside, far = sens[region].mean(), sens[18:, 18:, 18:].mean()
    assert inside > 0.05 and abs(far) < 1e-6 and inside > far
    # the direct check: hide the structure vs an equal block of background
    f = StructureScore(net, 1, torch.as_tensor(region))
    with torch.no_grad():
        hide_struct, hide_bg = x.clone(), x.clone()
        hide_struct[..., 8:14, 8:14, 8:14] = 0
        hide_bg[..., 16:22, 16:22, 16:22] = 0
        base = float(f(x))
        assert base - float(f(hide_struct)) > 0.5 > abs(base - float(f(hide_bg)))
    with pytest.raises(UserInputError, match="no voxel"):
        occlusion_on_patch(net, torch.zeros_like(x), 1)


def test_structure_occlusion_maps_back_to_the_canonical_input_grid(tmp_path):
    import nibabel as nib

    from domains.medical.config import PipelineConfig
    from domains.medical.predict import Segmenter

    data = np.zeros((24, 24, 24), np.float32)
    data[8:14, 8:14, 8:14] = 100.0
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    path = tmp_path / "cube.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(path))
    seg = Segmenter(_net(), PipelineConfig(modality="MRI", num_classes=2, spacing=3.0, patch=16, crop_margin=0), ["background", "cube"], amp=False)
    sal = structure_occlusion(seg, path, "cube", slice_index=11, mask_size=4)
    assert sal.map.shape == data.shape and sal.score > 0.5
    m = sal.map[sal.box]
    assert np.isfinite(m).all()
    inside = np.nanmean(sal.map[9:13, 9:13, 9:13])
    outside = sal.map[np.isfinite(sal.map) & (data == 0)]
    assert inside > outside.mean()
    with pytest.raises(UserInputError, match="unknown structure"):
        structure_occlusion(seg, path, "liver")


def test_api_structure_saliency_returns_the_map_for_the_selected_structure(tmp_path):
    import nibabel as nib

    from domains.medical import api
    from domains.medical.config import PipelineConfig
    from domains.medical.predict import Segmenter

    data = np.zeros((20, 20, 20), np.float32)
    data[6:12, 6:12, 6:12] = 50.0
    path = tmp_path / "cube.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), str(path))
    seg = Segmenter(_net(), PipelineConfig(modality="MRI", num_classes=2, spacing=3.0, patch=16, crop_margin=0), ["background", "cube"], amp=False)
    model = api.LoadedSegmenter(run_dir=tmp_path, class_names=["background", "cube"], segmenter=seg)
    sal = api.structure_saliency(model, path, "cube", slice_index=8, mask_size=4)
    assert isinstance(sal, api.StructureSaliency) and sal.structure == "cube" and sal.map.shape == data.shape
    assert np.nanmax(sal.map[:, :, 8]) > 0
