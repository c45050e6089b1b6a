"""bench/finetune.py's int8 row measures the int8 method it names, whatever ``quantize_int8(method="auto")`` would pick
on the CPU running it (on an AVX2-only CPU "auto" keeps a Linear-only model fp32, which the row would then mislabel)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def test_int8_row_quantizes_with_the_method_it_is_labelled_with(monkeypatch, tmp_path):
    import bench.finetune as bf
    import core.device

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: False)  # the AMD EPYC of finetune-no-amx
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = []
    real = bf.quantize_int8

    def spy(model, *a, **k):
        q = real(model, *a, **k)
        seen.append([type(m.weight).__name__ for m in q.modules() if isinstance(m, nn.Linear)])
        return q

    monkeypatch.setattr(bf, "quantize_int8", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    b = bf.Budget(latency_repeats=1, compile_int8=False, onnx=False)
    rows = bf.int8_rows("T test", model, (x,), (x,), y, bf.balanced_accuracy, 0.5, 1.0, [(x,)], b, tmp_path)
    assert rows[0].variant.startswith("int8 torchao dynamic") and "failed" not in rows[0].note
    assert seen and all("Int8" in t for t in seen[0]), f"the row called 'torchao dynamic' ran {seen}"
    assert np.isfinite(rows[0].metric)
