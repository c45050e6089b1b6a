"""Fast paths give the results of the straightforward ones: the axis-aligned path of
``logits_to_native`` the labels of MONAI's generic resampler (the path taken for rotated or sheared
grids), and the channels-last fp32 training step the contiguous one's."""

import numpy as np
import pytest
import torch

import domains.medical.predict as predict


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
    assert predict.axis_permutation((np.linalg.inv(src) @ dst)[:3, :3]) is not None
    fast = predict.logits_to_native(logits, src, dst, shape)
    monkeypatch.setattr(predict, "axis_permutation", lambda m: None)
    generic = predict.logits_to_native(logits, src, dst, shape)
    assert (fast > 0).sum() > 100
    assert np.mean(fast == generic) > 0.9995


def test_rotated_grid_takes_the_generic_path():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    assert predict.axis_permutation(rot[:3, :3]) is None
    assert predict.axis_permutation(np.diag([2.0, -1.0, 0.5])) == (0, 1, 2)


def test_argmax0_is_argmax():
    t = torch.randn(5, 7, 8, 9)
    t[:, 0, 0, 0] = 1.0  # a tie: the first maximum wins, as in argmax
    assert torch.equal(predict.argmax0(t), t.argmax(0).to(torch.uint8))


def test_channels_last_training_step_matches_contiguous():
    """The fp32 CPU trainer's channels-last layout changes speed, not the step's result."""
    import copy

    from monai.losses import DiceCELoss

    from domains.medical.model import build_model
    from domains.medical.training import train_memory_format, train_step

    cpu = torch.device("cpu")
    assert train_memory_format(cpu, amp=False) == torch.channels_last_3d
    torch.manual_seed(0)
    a = build_model("unet", 3, (8, 16, 32))
    b = copy.deepcopy(a).to(memory_format=torch.channels_last_3d)
    batch = {"image": torch.randn(2, 1, 32, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32, 32)).float()}
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    la = train_step(a, batch, loss, torch.optim.SGD(a.parameters(), lr=0.1), cpu, amp=False)
    lb = train_step(b, batch, loss, torch.optim.SGD(b.parameters(), lr=0.1), cpu, amp=False, memory_format=torch.channels_last_3d)
    assert abs(la - lb) < 1e-4
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name
