"""The DP-SGD flags every private training command takes declare their ranges (core.privacy.DPConfig):
ε > 0 or 'inf', 0 < δ < 1, clipping norm > 0 — refused in one line before a run exists, not deep in Opacus."""

import math

import pytest

from core.config import ConfigError, config_from_dict
from core.privacy import DPConfig


@pytest.mark.parametrize("values, flags", [
    ({"epsilon": 0.0}, ["--epsilon 0.0"]),
    ({"epsilon": -1.0, "delta": 1.0}, ["--epsilon -1.0", "--delta 1.0"]),
    ({"delta": 0.0}, ["--delta 0.0"]),
    ({"max_grad_norm": 0.0}, ["--max-grad-norm 0.0"]),
    ({"epsilon": float("nan")}, ["--epsilon nan"]),
    ({"epsilon": float("-inf")}, ["--epsilon -inf"]),
])
def test_out_of_range_privacy_settings_are_one_line_naming_each_flag(values, flags):
    with pytest.raises(ConfigError) as e:
        config_from_dict(DPConfig, values)
    msg = str(e.value)
    assert "\n" not in msg
    for f in flags:
        assert f in msg, msg


def test_infinite_epsilon_is_the_documented_no_noise_setting():
    cfg = config_from_dict(DPConfig, {"epsilon": float("inf"), "delta": 1e-5, "max_grad_norm": 0.5})
    assert math.isinf(cfg.epsilon)
    q, noise, clip = cfg.plan(batch_size=8, n=100, steps=10)
    assert (q, noise) == (0.08, 0.0) and clip > 1e6
