"""The evaluation records are strict JSON: an undefined Dice/HD95 (a class absent from both mask and
label, a class only one of them has) was written as ``NaN``/``Infinity``, which jq, JavaScript and most
JSON tools refuse for the whole file. Now it is ``null`` with its reason once in ``undefined``."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from core.io import atomic_write_json, finite_or_none
from domains.medical.io import Volume
from domains.medical.metrics import (ABSENT_FROM_BOTH, MISSED, NOT_IN_LABEL, dice_per_class, evaluate_heldout, evaluate_volumes,
                                     hd95_per_class, print_evaluation)

NAMES = ["background", "hit", "missed", "extra", "absent"]


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


class MaskSegmenter:
    """A segmenter whose mask is given per case (the metrics, not the network, are under test)."""

    class_names = NAMES

    def __init__(self, masks: dict[str, np.ndarray]):
        self.masks = masks

    def predict_volume(self, vol: Volume) -> np.ndarray:
        return self.masks[vol.path]


def _case(name: str, spacing=2.0) -> tuple[Volume, np.ndarray, np.ndarray]:
    label = np.zeros((12, 12, 12), np.uint8)
    label[2:7, 2:7, 2:7] = 1
    label[8:11, 8:11, 8:11] = 2      # in the label only: the mask misses it
    mask = np.zeros_like(label)
    mask[3:7, 2:7, 2:7] = 1          # overlaps class 1
    mask[0:2, 9:12, 0:3] = 3         # in the mask only
    vol = Volume(data=np.zeros(label.shape, np.float32), affine=np.diag([spacing] * 3 + [1.0]), path=name, format="nifti")
    return vol, label, mask


def test_an_evaluation_with_undefined_metrics_is_strict_json_with_the_reasons(tmp_path):
    cases = [_case("a"), _case("b", spacing=1.0)]
    cases[1][1][cases[1][1] == 2] = 0  # in case b the label has no class 2 either: absent from both there
    seg = MaskSegmenter({v.path: m for v, _, m in cases})
    res = evaluate_volumes(seg, [(v.path, v, lab) for v, lab, _ in cases])
    atomic_write_json(tmp_path / "evaluation.json", res, strict=True)
    ev = strict_loads((tmp_path / "evaluation.json").read_text())

    a, b = ev["cases"]
    dice_a = dice_per_class(cases[0][2], cases[0][1], NAMES)
    hd_a = hd95_per_class(cases[0][2], cases[0][1], NAMES, (2.0,) * 3)
    assert a["dice"]["hit"] == pytest.approx(dice_a["hit"]) and 0 < a["dice"]["hit"] < 1
    assert a["hd95_mm"]["hit"] == pytest.approx(hd_a["hit"]) and math.isfinite(hd_a["hit"])
    assert a["dice"]["missed"] == 0.0 and a["dice"]["extra"] == 0.0  # a Dice of 0 is defined
    assert a["dice"]["absent"] is None and a["hd95_mm"]["absent"] is None
    assert a["hd95_mm"]["missed"] is None and a["hd95_mm"]["extra"] is None
    assert a["undefined"] == {"dice": {"absent": ABSENT_FROM_BOTH},
                              "hd95_mm": {"missed": MISSED, "extra": NOT_IN_LABEL, "absent": ABSENT_FROM_BOTH}}
    assert b["dice"]["missed"] is None and b["undefined"]["dice"]["missed"] == ABSENT_FROM_BOTH

    # over cases: the mean of the defined ones; a class absent everywhere, or an HD95 infinite anywhere, is null
    dice_b = dice_per_class(cases[1][2], cases[1][1], NAMES)
    assert ev["dice"]["hit"] == pytest.approx((dice_a["hit"] + dice_b["hit"]) / 2)
    assert ev["dice"]["missed"] == 0.0  # defined in case a only
    assert ev["dice"]["absent"] is None and ev["undefined"]["dice"] == {"absent": f"{ABSENT_FROM_BOTH} in every case"}
    assert ev["hd95_mm"]["missed"] is None and ev["undefined"]["hd95_mm"]["missed"] == f"infinite in a: {MISSED}"
    assert ev["hd95_mm"]["extra"] is None and ev["undefined"]["hd95_mm"]["extra"] == f"infinite in a: {NOT_IN_LABEL}; b: {NOT_IN_LABEL}"
    assert ev["mean_dice"] == pytest.approx(np.mean([ev["dice"][n] for n in ("hit", "missed", "extra")]))
    assert "mean_dice" not in ev["undefined"]


def test_held_out_evaluation_and_its_table_handle_undefined_values(tmp_path, capsys, monkeypatch):
    """Training's held-out evaluation writes test_evaluation.json the same way; the run summary gets None, the table n/a."""
    import domains.medical.metrics as metrics

    vol, label, mask = _case("only")
    label[:], mask[:] = 0, 0  # no class in either: no Dice at all
    monkeypatch.setattr(metrics, "labelled_cases", lambda cases, n: [(vol.path, vol, label)])
    run = SimpleNamespace(path=lambda name: tmp_path / name)
    summary = evaluate_heldout(MaskSegmenter({"only": mask}), [{"image": "x", "label": "y"}], run)
    ev = strict_loads((tmp_path / "test_evaluation.json").read_text())
    assert ev["mean_dice"] is None and "no class has a Dice" in ev["undefined"]["mean_dice"]
    assert summary["test_mean_dice"] is None and summary["test_hd95/missed"] is None and summary["test_dice/missed"] is None
    print_evaluation(ev, NAMES)
    out = capsys.readouterr().out
    assert "mean foreground              n/a" in out and f"n/a hd95_mm missed: {ABSENT_FROM_BOTH} in every case" in out


def test_strict_json_writes_every_non_finite_float_as_null(tmp_path):
    obj = {"x": float("nan"), "y": [np.float32("inf"), -math.inf, 1.5], "z": np.array([np.nan, 2.0]), "n": np.int64(3), "ok": True}
    atomic_write_json(tmp_path / "a.json", obj, strict=True)
    assert strict_loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [None, None, 1.5], "z": [None, 2.0], "n": 3, "ok": True}
    assert finite_or_none({"k": (1, float("nan"))}) == {"k": [1, None]}
    atomic_write_json(tmp_path / "b.json", obj)  # the default is unchanged
    with pytest.raises(ValueError, match="not strict JSON: NaN"):
        strict_loads((tmp_path / "b.json").read_text())
