"""Training speed-ups keep the results: ``training.prefetch`` (batches drawn on a background thread
while the step computes) yields the same batches in the same order and leaves the random states where
the plain loop leaves them."""

import threading

import numpy as np
import pytest
import torch

from domains.medical.training import prefetch


def _draws(rng: np.random.RandomState, n: int):
    for _ in range(n):
        yield {"image": torch.from_numpy(rng.normal(size=(2, 3)))}


def test_prefetch_gives_the_same_batches_and_random_states():
    plain_rng, pre_rng = np.random.RandomState(7), np.random.RandomState(7)
    plain = [b["image"] for b in _draws(plain_rng, 9)]
    fetched = [b["image"] for b in prefetch(_draws(pre_rng, 9), depth=3)]
    assert len(fetched) == 9 and all(torch.equal(a, b) for a, b in zip(plain, fetched))
    assert plain_rng.rand() == pre_rng.rand()  # every draw of the epoch done, nothing drawn ahead
    assert list(prefetch(iter([]))) == []


def test_prefetch_draws_the_loader_shuffle_on_the_calling_thread():
    """A DataLoader's shuffle seed comes from the global torch RNG at the first draw: it must be
    drawn by the caller, in the caller's order, so seeded runs stay reproducible."""
    from torch.utils.data import DataLoader

    def order(wrap) -> list[int]:
        torch.manual_seed(3)
        return [int(b) for b in wrap(DataLoader(list(range(20)), batch_size=1, shuffle=True))]

    assert order(prefetch) == order(lambda x: x)


def test_prefetch_raises_the_drawing_error_and_stops_when_closed():
    def bad():
        yield 1
        yield 2
        raise ValueError("broken volume")

    with pytest.raises(ValueError, match="broken volume"):
        list(prefetch(bad()))
    gen = prefetch(iter(range(10**6)), depth=2)
    assert next(gen) == 0 and next(gen) == 1
    gen.close()
    assert not any(t.name == "medical-prefetch" for t in threading.enumerate())


def test_train_layout_keeps_the_function_gradients_and_state_dict():
    """``to_train_layout`` (fp32 CPU: channels-last, instance norms as one-channel GroupNorms on a
    contiguous copy) is a speed change only: same outputs, same gradients, same state-dict keys, and
    nothing changes under bf16 autocast's contiguous layout."""
    import copy

    from monai.losses import DiceCELoss

    from domains.medical.model import build_model
    from domains.medical.training import InstanceNormAsGroupNorm, to_train_layout

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    plain = build_model("unet", 3, (8, 16, 32))
    fast = copy.deepcopy(plain)
    fmt = to_train_layout(fast, cpu, amp=False)
    assert fmt == torch.channels_last_3d
    assert sum(isinstance(m, InstanceNormAsGroupNorm) for m in fast.modules()) > 0
    assert not any(type(m) is torch.nn.InstanceNorm3d for m in fast.modules())
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 1, 32, 32, 32)
    y = torch.randint(0, 3, (2, 1, 32, 32, 32)).float()
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    la = loss(plain(x), y)
    lb = loss(fast(x.contiguous(memory_format=fmt)), y)
    la.backward()
    lb.backward()
    assert abs(float(la.detach()) - float(lb.detach())) < 1e-5
    # float32 sums in another order: on an Intel Xeon (AMX) the largest gradient difference was < 1e-4 of the largest
    # gradient; on an AMD EPYC (AVX2 kernels, session 10) 2.8e-4 with this seed. A wrong layout or norm is O(1).
    scale = max(float(p.grad.abs().max()) for p in plain.parameters())
    for (name, pa), pb in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-3 * scale), name
    bf16 = copy.deepcopy(plain)
    if to_train_layout(bf16, cpu, amp=True) == torch.contiguous_format:  # a CPU with bf16 units: layout untouched
        assert sum(type(m) is torch.nn.InstanceNorm3d for m in bf16.modules()) == sum(type(m) is torch.nn.InstanceNorm3d for m in plain.modules())
