"""Occlusion sensitivity of one structure's segmentation, on a patch around the selected slice (issue 17.3).

    from domains.medical.explain import structure_occlusion, occlusion_on_patch
    sal = structure_occlusion(segmenter, "case.nii.gz", "Hippocampus", slice_index=40)   # StructureSaliency
    sal.map          # float, on the canonical (RAS) input grid (the grid of Segmentation.image); NaN outside sal.box

What is measured: the structure's score is the network's mean softmax probability of that class over
the voxels it assigns to the class inside the explained patch (the region is fixed from the
un-occluded prediction). MONAI's ``monai.visualize.OcclusionSensitivity`` slides an occluding box
(filled with the patch's lowest intensity, i.e. background) over the patch and records the score each
time; the map is ``score - occluded score``: positive where hiding the image lowers the model's belief
in the structure. It runs on the network's grid (after the run's preprocessing), on one patch of the
run's patch size centred where the selected canonical slice crosses the structure, so it costs
(patch / box)^3 forward passes of one patch (seconds on CPU at the default box of patch/4), and is then
resampled (trilinear) to the canonical input grid for the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from torch import nn

from core.errors import UserInputError

__all__ = ["StructureSaliency", "occlusion_on_patch", "structure_occlusion", "StructureScore"]


class StructureScore(nn.Module):
    """Wraps a segmentation network into a (B, 1) score: the mean softmax probability of class
    ``c`` over the voxels of ``region`` (a fixed boolean mask of the patch)."""

    def __init__(self, net: nn.Module, c: int, region: torch.Tensor):
        super().__init__()
        self.net, self.c = net, c
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.net(x).float(), dim=1)[:, self.c]
        return ((p * self.region).flatten(1).sum(1) / self.region.sum().clamp_min(1.0))[:, None]


@torch.no_grad()
def occlusion_on_patch(net: nn.Module, x: torch.Tensor, c: int, mask_size: int | None = None, n_batch: int = 8,
                       fill: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """(sensitivity map shaped like the patch, score, region) for class ``c`` on the patch ``x``
    (1, 1, X, Y, Z) of the network grid. Raises :class:`UserInputError` when the network assigns no voxel
    of the patch to ``c``."""
    from monai.visualize import OcclusionSensitivity

    net.eval()
    region = net(x).argmax(1)[0] == c
    if not bool(region.any()):
        raise UserInputError(f"the model assigns no voxel of the explained patch to class {c}: nothing to explain there")
    score_net = StructureScore(net, c, region)
    score = float(score_net(x)[0, 0])
    ms = mask_size or max(2, min(x.shape[2:]) // 4)
    occ = OcclusionSensitivity(score_net, mask_size=ms, n_batch=n_batch, verbose=False, overlap=0.0,
                               mode=float(x.min()) if fill is None else float(fill), activate=False)
    occ_map, _ = occ(x)  # (1, 1, X, Y, Z): the score (one output) with the box around each voxel occluded
    sens = score - occ_map[0, 0].float().numpy()
    return sens, score, region.numpy()


@dataclass
class StructureSaliency:
    structure: str
    class_index: int
    map: np.ndarray          # canonical input grid; NaN outside ``box``
    box: tuple[slice, slice, slice]  # canonical voxels covered by the explained patch
    score: float             # the structure's mean probability over its predicted voxels in the patch
    method: str = "occlusion (monai.visualize.OcclusionSensitivity)"


def structure_occlusion(segmenter, source, structure: str, slice_index: int | None = None, axis: int = 2,
                        mask_size: int | None = None) -> StructureSaliency:
    """Occlusion sensitivity of ``structure`` for the volume ``source`` (a path or a Volume)
    on a patch around canonical slice ``slice_index`` along ``axis`` (default: the structure's centre)."""
    from scipy.ndimage import map_coordinates

    from domains.medical.io import Volume, load_volume
    from domains.medical.predict import canonical

    names = list(segmenter.class_names)
    if structure not in names or names.index(structure) == 0:
        raise UserInputError(f"unknown structure {structure!r}; this model segments {', '.join(names[1:])}")
    c = names.index(structure)
    vol = source if isinstance(source, Volume) else load_volume(source)
    img = segmenter.preprocess(vol)  # (1, X, Y, Z) network grid
    x_all = img.as_tensor()[None].float()
    net_aff = np.asarray(img.affine, dtype=np.float64)
    img_c, aff_c = canonical(np.asarray(vol.data), vol.affine)
    # the centre: where the selected canonical slice crosses the structure (the network's own prediction)
    full = segmenter.logits(x_all)[0].argmax(0).numpy() == c
    pts = np.argwhere(full)
    if not len(pts):
        raise UserInputError(f"the model does not find {structure} in this volume: nothing to explain")
    to_net = np.linalg.inv(net_aff) @ aff_c  # canonical voxel -> network voxel
    if slice_index is not None:
        if not 0 <= slice_index < img_c.shape[axis]:
            raise UserInputError(f"slice {slice_index} outside 0..{img_c.shape[axis] - 1}")
        to_can = np.linalg.inv(to_net)
        can_pts = (to_can[:3, :3] @ pts.T + to_can[:3, 3:]).T
        near = np.abs(can_pts[:, axis] - slice_index)
        pts = pts[near <= near.min() + 1]
    centre = np.round(pts.mean(0)).astype(int)
    P = int(segmenter.pipe.patch)
    shape = np.array(x_all.shape[2:])
    size = np.minimum(P, shape)
    lo = np.clip(centre - size // 2, 0, shape - size)
    sl = tuple(slice(int(a), int(a + s)) for a, s in zip(lo, size))
    sens, score, _ = occlusion_on_patch(segmenter.model, x_all[(slice(None), slice(None), *sl)], c, mask_size=mask_size)
    # resample the map to the canonical voxels whose network coordinates fall in the patch
    corners = np.array(np.meshgrid(*[[s.start, s.stop - 1] for s in sl], indexing="ij")).reshape(3, -1)
    to_can = np.linalg.inv(to_net)
    cc = to_can[:3, :3] @ corners + to_can[:3, 3:]
    blo = np.clip(np.floor(cc.min(1)).astype(int), 0, np.array(img_c.shape) - 1)
    bhi = np.clip(np.ceil(cc.max(1)).astype(int) + 1, 1, np.array(img_c.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(blo, bhi))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")).reshape(3, -1).astype(np.float64)
    netc = to_net[:3, :3] @ grid + to_net[:3, 3:] - lo[:, None]
    vals = map_coordinates(sens, netc, order=1, mode="nearest")
    inside = np.all((netc >= -0.5) & (netc <= (size - 0.5)[:, None]), axis=0)
    out = np.full(img_c.shape, np.nan, dtype=np.float32)
    out[box] = np.where(inside, vals, np.nan).reshape([s.stop - s.start for s in box])
    return StructureSaliency(structure=structure, class_index=c, map=out, box=box, score=score)
