"""infer and evaluate showed nothing while the sliding window ran (the longest part of segmenting a large scan:
~14 s of ~35 s for a 512×512×300 CT with --tta on a loaded 2-core machine). The Segmenter now shows one bar per volume
over the window batches of every pass (the mirrored --tta pass included): its total is the window grid
(``predict.window_batches``), it ends at exactly the number of model calls, it changes no logit, and
``SUITE_PROGRESS=0`` silences it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import domains.medical.predict as predict
from core.progress import progress as core_progress
from domains.medical.config import PipelineConfig
from domains.medical.io import Volume
from tests.progress_support import record_bars


class _CountingNet(torch.nn.Module):
    """A small 3×3×3 convolution (its output depends on how windows overlap) that counts its calls."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, classes, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


@pytest.fixture()
def bars(monkeypatch):
    """Every bar the predictor opens (kept after it closes, with its count)."""
    return record_bars(monkeypatch, predict)


@pytest.mark.parametrize("shape,patch,sw_batch,overlap", [
    ((20, 20, 20), 16, 4, 0.25),  # 2 windows per side
    ((10, 40, 16), 16, 3, 0.5),  # a side smaller than the patch (padded: one window), one equal to it
    ((33, 17, 50), 16, 1, 0.0),  # no overlap, the last window flush with the end
    ((12, 8, 8), 8, 5, 0.9),  # an interval that rounds to 0 voxels: MONAI steps by 1
])
def test_window_batches_is_the_number_of_model_calls(shape, patch, sw_batch, overlap, monkeypatch):
    monkeypatch.setenv("SUITE_PROGRESS", "1")
    net = _CountingNet()
    bar = core_progress(total=predict.window_batches(shape, patch, sw_batch, overlap), disable=False)
    with bar:
        predict.sliding_window_logits(net, torch.rand(1, 1, *shape), patch, sw_batch, overlap, torch.device("cpu"), amp=False, bar=bar)
    assert net.calls == bar.n == bar.total == predict.window_batches(shape, patch, sw_batch, overlap)


def _segmenter(net, tta: bool, show: bool) -> predict.Segmenter:
    return predict.Segmenter(net, PipelineConfig(modality="MRI", num_classes=3, spacing=3.0, patch=16), ["background", "a", "b"],
                             sw_batch_size=2, amp=False, tta=tta, show_progress=show)


def _volume() -> Volume:
    rng = np.random.default_rng(1)
    data = np.zeros((70, 64, 58), dtype=np.float32)
    data[10:60, 8:56, 6:50] = rng.uniform(0.1, 1.0, size=(50, 48, 44))
    return Volume(data=data, affine=np.diag([1.2, 1.0, 1.4, 1.0]), path="<test>", format="nifti")


@pytest.mark.parametrize("tta", [False, True])
def test_one_bar_counts_every_window_batch_of_every_pass_and_changes_no_logit(tta, bars, monkeypatch):
    monkeypatch.setenv("SUITE_PROGRESS", "1")
    img = _segmenter(_CountingNet(), tta, False).preprocess(_volume()).as_tensor()[None]
    quiet_net, shown_net = _CountingNet(), _CountingNet()
    quiet = _segmenter(quiet_net, tta, show=False).logits(img)
    shown = _segmenter(shown_net, tta, show=True).logits(img)
    assert torch.equal(quiet, shown)
    per_pass = predict.window_batches(img.shape[2:], 16, 2, 0.25)
    assert per_pass > 1
    assert len(bars) == 2 and bars[0].n == 0  # one bar per volume whatever the passes; the quiet one (disabled) never counts
    bar = bars[1]
    assert bar.total == bar.n == shown_net.calls == quiet_net.calls == (2 if tta else 1) * per_pass


def test_the_bar_shows_on_stderr_unless_suite_progress_is_0(bars, monkeypatch, capsys):
    vol = _volume()
    monkeypatch.setenv("SUITE_PROGRESS", "0")
    silenced = _segmenter(_CountingNet(), True, show=True).segment(vol)
    assert "sliding window" not in capsys.readouterr().err and bars[-1].n == 0
    monkeypatch.setenv("SUITE_PROGRESS", "1")
    shown = _segmenter(_CountingNet(), True, show=True).segment(vol)
    assert "sliding window (+ mirrored pass)" in capsys.readouterr().err
    assert np.array_equal(silenced.mask, shown.mask)
