"""int8 for Linear models: one test for "this CPU has no int8 dot products" and one message whose figures are the
BENCHMARKS section it names; ``quantize_int8(method="weight_only")``; saving and loading an int8 model without pickle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import core.device
from core.checkpoint import CheckpointError, CheckpointMismatchError
from core.compress import (
    NO_INT8_DOT_PRODUCT,
    auto_int8_method,
    cpu_lacks_int8_dot_product,
    load_int8_weights,
    model_size_bytes,
    quantize_int8,
    save_int8_weights,
)
from core.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


def _mlp(width=256, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 6)).eval()


def _cpu(monkeypatch, dot, cuda=False):
    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: dot)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def _section_ratios(key: str) -> dict[str, list[float]]:
    """The "vs fp32 eager" column of BENCHMARKS.md's section ``key``, per variant."""
    text = (REPO / "BENCHMARKS.md").read_text()
    block = text[text.index(f"<!-- bench:{key}:start -->"):text.index(f"<!-- bench:{key}:end -->")]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    col, var = head.index("vs fp32 eager"), head.index("variant")
    out: dict[str, list[float]] = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if re.fullmatch(r"[\d.]+", cells[col]):
            out.setdefault(cells[var], []).append(float(cells[col]))
    return out


def test_the_no_int8_dot_product_figures_are_those_of_the_section_they_name():
    """The message quoted MiniLM 21x (another benchmark) in one place and 13-23x in another: now one message, and
    its ranges are the min and max of the rows of BENCHMARKS int8-cpu-no-amx (rerun the bench → update the message)."""
    assert "int8-cpu-no-amx" in NO_INT8_DOT_PRODUCT
    rows = _section_ratios("int8-cpu-no-amx")
    for quoted, variant in [(r"method='torchao'\) ran ([\d.]+)-([\d.]+)x", "torchao int8 dynamic"),
                            (r"method='weight_only'[^)]*\) ([\d.]+)-([\d.]+)x", "weight-only"),
                            (r"quantize_onnx_int8\) ([\d.]+)-([\d.]+)x", "ONNX Runtime int8")]:
        found = re.search(quoted, NO_INT8_DOT_PRODUCT)
        assert found, f"no range for {variant} in {NO_INT8_DOT_PRODUCT!r}"
        measured = [r for v, rs in rows.items() if variant in v for r in rs]
        assert len(measured) >= 4, (variant, rows)
        lo, hi = float(found[1]), float(found[2])
        assert lo == pytest.approx(min(measured), abs=0.051) and hi == pytest.approx(max(measured), abs=0.051), \
            f"{variant}: the message says {lo}-{hi}x, BENCHMARKS int8-cpu-no-amx has {min(measured)}-{max(measured)}x"


@pytest.mark.parametrize("dot", [True, False, None])
@pytest.mark.parametrize("cuda", [True, False])
def test_auto_fallback_and_the_torchao_warning_answer_the_same_question(monkeypatch, caplog, dot, cuda):
    """One predicate: "auto" keeps fp32 exactly where an explicit method='torchao' warns, and both say the same thing."""
    _cpu(monkeypatch, dot, cuda)
    lacks = cpu_lacks_int8_dot_product()
    assert lacks is (dot is False and not cuda)
    method, why = auto_int8_method(_mlp())
    assert (method == "fp32") is lacks
    caplog.set_level("WARNING", logger="suite")
    quantize_int8(_mlp(), (torch.randn(4, 32),), method="torchao", compile=False)
    warned = [r.getMessage() for r in _ours(caplog) if r.levelname == "WARNING"]
    assert bool(warned) is lacks
    if lacks:
        assert len(warned) == 1 and NO_INT8_DOT_PRODUCT in warned[0] and NO_INT8_DOT_PRODUCT in why


def _ours(caplog):
    return [r for r in caplog.records if r.name.startswith("suite")]  # not torchao's import-time notices


def _int8_linear_weights(model):
    out = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            out.append(getattr(m.weight, "qdata", None))
    return out


def _cosine(a, b):
    return float(nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_weight_only_stores_every_linear_weight_in_int8_and_tracks_fp32(monkeypatch, caplog):
    _cpu(monkeypatch, False)  # the AVX2-only EPYC: weight-only needs no int8 dot products, so no warning
    caplog.set_level("WARNING", logger="suite")
    m = _mlp()
    x = torch.randn(64, 32)
    q = quantize_int8(m, (x,), method="weight_only", compile=False)
    qdata = _int8_linear_weights(q)
    assert len(qdata) == 3 and all(d is not None and d.dtype == torch.int8 for d in qdata), [type(w) for w in qdata]
    assert [tuple(d.shape) for d in qdata] == [tuple(mm.weight.shape) for mm in m.modules() if isinstance(mm, nn.Linear)]
    assert _int8_linear_weights(m) == [None] * 3, "the caller's model stays fp32"
    with torch.no_grad():
        ref, out = m(x), q(x)
    assert _cosine(out, ref) > 0.99 and not torch.equal(out, ref)  # quantized, and close
    assert not _ours(caplog)
    with pytest.raises(ValueError, match="weight_only"):
        quantize_int8(nn.Sequential(nn.Conv1d(2, 2, 1)), (torch.randn(1, 2, 4),), method="weight_only", compile=False)


def test_an_int8_model_saves_as_safetensors_and_loads_without_unpickling(monkeypatch, tmp_path):
    m = _mlp()
    x = torch.randn(16, 32)
    q = quantize_int8(m, (x,), method="weight_only")  # compiled wrapper: saved through it, nothing is compiled here
    path = save_int8_weights(q, tmp_path / "m.int8.safetensors")
    assert model_size_bytes(path) < 0.3 * model_size_bytes(m), "int8 weights: about a quarter of the fp32 file"

    def no_pickle(*a, **k):
        raise AssertionError("an int8 weights file must not be unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr("pickle.loads", no_pickle)
    monkeypatch.setattr("pickle.load", no_pickle)
    fresh = _mlp(seed=7)  # the architecture; its own weights are replaced
    loaded = load_int8_weights(path, fresh, compile=False)
    assert all(d is not None and d.dtype == torch.int8 for d in _int8_linear_weights(loaded))
    assert _int8_linear_weights(fresh) == [None] * 3, "the architecture passed in is not modified"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), q._orig_mod(x), rtol=0, atol=0)
    # a bare nn.Linear (names without a dot, which torchao's layout splits at the last dot) round-trips too
    lin = quantize_int8(nn.Linear(32, 4), (x,), method="weight_only", compile=False)
    again = load_int8_weights(save_int8_weights(lin, tmp_path / "lin.safetensors"), nn.Linear(32, 4), compile=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), lin(x), rtol=0, atol=0)
    # the dynamic-int8 model of method='torchao' saves and loads the same way
    qd = quantize_int8(m, (x,), method="torchao", compile=False)
    back = load_int8_weights(save_int8_weights(qd, tmp_path / "d.safetensors"), _mlp(seed=3), compile=False)
    with torch.no_grad():
        torch.testing.assert_close(back(x), qd(x), rtol=0, atol=0)


def test_wrong_int8_files_are_refused_in_one_line_naming_the_file(tmp_path):
    from core.checkpoint import save_weights

    m = _mlp()
    q = quantize_int8(m, (torch.randn(4, 32),), method="weight_only", compile=False)
    good = save_int8_weights(q, tmp_path / "good.safetensors")
    with pytest.raises(ValueError, match="no torchao int8 weights"):
        save_int8_weights(m, tmp_path / "fp32.safetensors")

    fp32 = save_weights(tmp_path / "fp32.safetensors", m)
    with pytest.raises(CheckpointError, match="fp32.safetensors.*not an int8 file") as e:
        load_int8_weights(fp32, m, compile=False)
    assert isinstance(e.value, UserInputError) and "\n" not in str(e.value)

    with pytest.raises(CheckpointMismatchError, match="good.safetensors.*shape") as e:
        load_int8_weights(good, _mlp(width=128), compile=False)
    assert "\n" not in str(e.value)

    # a description that names a class outside torchao's allow-list is refused, not constructed
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    meta["model.0.weight"] = meta["model.0.weight"].replace('"Int8Tensor"', '"os.system"')
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match="bad.safetensors.*description is damaged") as e:
        load_int8_weights(bad, m, compile=False)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="missing.safetensors.*does not exist"):
        load_int8_weights(tmp_path / "missing.safetensors", m, compile=False)
    # a torch .pt file (a pickle inside a zip) is refused without torch.load, as is an empty file
    torch.save(m.state_dict(), tmp_path / "m.pt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("m.pt", "empty.safetensors"):
        with pytest.raises(CheckpointError, match=f"{name}.*as safetensors") as e:
            load_int8_weights(tmp_path / name, m, compile=False)
        assert "\n" not in str(e.value)


def test_an_int8_description_naming_a_torch_function_or_an_enum_attribute_is_refused(tmp_path):
    """torchao rebuilds a "torch.dtype" entry as getattr(torch, name) and an enum entry as getattr(enum, name): a file
    naming torch.save as the activation granularity, or MappingType's '__class__', loaded (what it named stored inside
    the model, which failed later at its first call with a raw error); torch.load as the weight's dtype was refused by
    torchao's constructor without naming it. Now one line naming the entry, before anything is rebuilt."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    m = _mlp(width=16)
    q = quantize_int8(m, (torch.randn(4, 32),), method="torchao", compile=False)  # its description holds a dtype, a granularity, an enum
    good = save_int8_weights(q, tmp_path / "good.safetensors")
    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    weight = json.loads(meta["model.0.weight"])
    act = weight["_data"]["act_quant_kwargs"]["_data"]
    assert weight["_data"]["dtype"] == {"_type": "torch.dtype", "_data": "float32"} and act["mapping_type"]["_type"] == "MappingType"
    for name, where, value in [("granularity", act, {"_type": "torch.dtype", "_data": "save"}),  # these two loaded
                               ("mapping_type", act, {"_type": "MappingType", "_data": "__class__"}),
                               ("dtype", weight["_data"], {"_type": "torch.dtype", "_data": "load"})]:  # torchao's own error, not naming it
        original = where[name]
        where[name] = value
        bad = tmp_path / f"bad-{name}.safetensors"
        save_file(load_file(str(good)), str(bad), metadata={**meta, "model.0.weight": json.dumps(weight)})
        where[name] = original
        with pytest.raises(CheckpointError, match=f"bad-{name}.safetensors.*description is damaged.*{value['_data']}") as e:
            load_int8_weights(bad, m, compile=False)
        assert "\n" not in str(e.value)
    load_int8_weights(good, m, compile=False)  # the description as written loads


@pytest.mark.slow
def test_weight_only_minilm_on_real_titles_keeps_its_embeddings(tmp_path, monkeypatch):
    """The model behind the measured 0.81x: MiniLM-L6 on 32 MovieLens-100K titles — int8 weights, cosine > 0.99 per
    title against fp32, and the same embeddings after a save and load."""
    import pandas as pd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from core.backbones import create_backbone

    items = pd.read_parquet(REPO / "datasets/data/ml-100k/items.parquet").head(32)
    enc = create_backbone("minilm-l6-v2").eval()
    tok = enc.tokenizer([f"{t} ({y})" for t, y in zip(items["title"], items["year"])], padding="max_length", truncation=True,
                        max_length=16, return_tensors="pt")
    x = (tok["input_ids"], tok["attention_mask"])
    q = quantize_int8(enc, x, method="weight_only", compile=False)
    linear = _int8_linear_weights(q)
    assert len(linear) >= 36 and all(d is not None and d.dtype == torch.int8 for d in linear)
    with torch.no_grad():
        ref, out = enc(*x), q(*x)
    cos = nn.functional.cosine_similarity(out, ref, dim=1)
    assert float(cos.min()) > 0.99, cos
    path = save_int8_weights(q, tmp_path / "minilm.int8.safetensors")
    assert model_size_bytes(path) < 0.7 * model_size_bytes(enc)  # the 11.7 M-entry word embedding stays fp32
    back = load_int8_weights(path, create_backbone("minilm-l6-v2", pretrained=False).eval(), compile=False)
    with torch.no_grad():
        torch.testing.assert_close(back(*x), out, rtol=0, atol=0)
