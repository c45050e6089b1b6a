"""The fast axis-aligned path of ``logits_to_native`` gives the same labels as MONAI's generic
resampler (the path taken for rotated or sheared grids)."""

import numpy as np
import pytest
import torch

import domains.medical.infer as infer


def _case(perm, flip, seed=0):
    rng = np.random.default_rng(seed)
    n_src = (11, 9, 13)
    logits = torch.from_numpy(rng.normal(size=(4, *n_src)).astype(np.float32)) * 3
    logits[0, :2] += 8  # some certain background, so the foreground box is a real sub-box
    src_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    src_affine[:3, 3] = lo = np.array([-10.0, 4.0, 2.5])
    hi = lo + 3.0 * (np.array(n_src) - 1)
    # the input grid covers the same box with ~1 mm voxels, its axes permuted and flipped
    dst, shape = np.eye(4), []
    spacing = (1.1, 0.9, 1.3)
    for j, i in enumerate(perm):
        shape.append(int((hi[i] - lo[i]) // spacing[j]) + 1)
        dst[:, j] = 0.0
        dst[i, j] = -spacing[j] if flip[j] else spacing[j]
        dst[i, 3] = hi[i] if flip[j] else lo[i]
    return logits, src_affine, dst, tuple(shape)


@pytest.mark.parametrize("perm,flip", [((0, 1, 2), (0, 0, 0)), ((2, 0, 1), (1, 0, 1)), ((1, 2, 0), (0, 1, 0))])
def test_fast_path_matches_monai(perm, flip, monkeypatch):
    logits, src, dst, shape = _case(perm, flip)
    assert infer._axis_permutation((np.linalg.inv(src) @ dst)[:3, :3]) is not None
    fast = infer.logits_to_native(logits, src, dst, shape)
    monkeypatch.setattr(infer, "_axis_permutation", lambda m: None)
    generic = infer.logits_to_native(logits, src, dst, shape)
    assert (fast > 0).sum() > 100
    assert np.mean(fast == generic) > 0.9995


def test_rotated_grid_takes_the_generic_path():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    assert infer._axis_permutation(rot[:3, :3]) is None
    assert infer._axis_permutation(np.diag([2.0, -1.0, 0.5])) == (0, 1, 2)


def test_argmax0_is_argmax():
    t = torch.randn(5, 7, 8, 9)
    t[:, 0, 0, 0] = 1.0  # a tie: the first maximum wins, as in argmax
    assert torch.equal(infer._argmax0(t), t.argmax(0).to(torch.uint8))
