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
