"""Inference speed-ups keep the results: the sliding window over the box of non-zero voxels only
(``predict.nonzero_box``) labels exactly what the whole network grid labels, on the input's own grid."""

import numpy as np
import pytest
import torch

import domains.medical.predict as predict
from domains.medical.config import PipelineConfig
from domains.medical.io import Volume


def test_nonzero_box_is_the_grown_bounding_box():
    img = torch.zeros(1, 20, 30, 25)
    img[0, 5:9, 10:21, 0:3] = 1.0
    assert predict.nonzero_box(img, margin=2) == (slice(3, 11), slice(8, 23), slice(0, 5))
    assert predict.nonzero_box(torch.zeros(1, 4, 4, 4)) is None
    a = np.diag([3.0, 2.0, 1.5, 1.0])
    a[:3, 3] = (10.0, -4.0, 7.0)
    b = predict.box_affine(a, (slice(3, 11), slice(8, 23), slice(0, 5)))
    assert np.allclose(b[:3, 3], (10.0 + 9.0, -4.0 + 16.0, 7.0)) and np.allclose(b[:3, :3], a[:3, :3])


class _Pointwise(torch.nn.Module):
    """A voxel-wise net (a 1×1×1 convolution): its labels do not depend on how the windows tile, so
    the cropped and uncropped paths must agree voxel for voxel; zero input is background."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-10.0, 10.0, 20.0]).view(3, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([2.0, -3.0, -12.0]))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("oblique", [False, True])
def test_cropped_sliding_window_gives_the_full_grid_labels(oblique):
    rng = np.random.default_rng(0)
    data = np.zeros((70, 64, 58), dtype=np.float32)
    data[18:50, 12:47, 20:44] = rng.uniform(0.1, 1.0, size=(32, 35, 24))  # a "head" in empty background
    affine = np.diag([1.2, 1.0, 1.4, 1.0])
    affine[:3, 3] = (-40.0, -30.0, -35.0)
    if oblique:  # a rotated grid: the generic (MONAI) resampler path
        c, s = np.cos(0.2), np.sin(0.2)
        affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ affine[:3, :3]
    vol = Volume(data=data, affine=affine, path="<test>", format="nifti")
    seg = predict.Segmenter(_Pointwise(), PipelineConfig(modality="MRI", num_classes=3, spacing=3.0, patch=16), ["bg", "a", "b"], amp=False)
    box = predict.nonzero_box(seg.preprocess(vol))
    grid = seg.preprocess(vol).shape[1:]
    assert box is not None and any(s.stop - s.start < n for s, n in zip(box, grid))  # a real sub-box
    cropped = seg.segment(vol)
    assert seg.crop  # the default
    seg.crop = False  # --no-crop: the whole network grid
    full = seg.segment(vol)
    assert cropped.mask.shape == data.shape
    assert len(np.unique(full.mask)) == 3
    assert np.array_equal(cropped.mask, full.mask)
    assert cropped.mean_confidence == pytest.approx(full.mean_confidence, abs=1e-5)
