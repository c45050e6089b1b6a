"""``bench/finance.py`` compares our pipeline with pytorch-forecasting's on the bundled panel. The panel's VIX stops
before its last year, which made the bench fail (TimeSeriesDataSet refuses NaN) — nothing ran it since. Both
pipelines must get the inputs PanelTensors feeds (a missing covariate is 0, its z-mean)."""

from __future__ import annotations

import numpy as np

from bench.finance import setup_panel
from domains.finance.features import TARGETS


def test_the_bench_panel_has_no_missing_model_inputs():
    z, spec = setup_panel(1)
    inputs = [c for c in spec.observed_reals if c not in TARGETS]
    assert inputs and set(inputs) <= set(z.columns)
    assert not z[inputs].isna().any().any()
    assert np.isfinite(z[inputs].to_numpy()).all()
