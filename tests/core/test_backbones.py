"""Backbone registry: packaged weights really load, local files load safely, offline hub fails fast."""

from __future__ import annotations

import time

import pytest
import torch

from core.backbones import BackboneError, WeightsUnavailableError, create_backbone, image_preprocess_config, list_backbones
from core.checkpoint import save_weights

IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("tf_efficientnet_lite0", pretrained=True).eval()


def _chelsea(model) -> torch.Tensor:
    from skimage import data

    cfg = image_preprocess_config(model)
    img = torch.tensor(data.chelsea()).permute(2, 0, 1).float().div(255)[None]
    img = torch.nn.functional.interpolate(img, size=cfg["input_size"][1:], mode="bilinear", antialias=True)
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    return (img - mean) / std


def test_packaged_imagenet_weights_classify_a_real_photo(lite0):
    with torch.no_grad():
        probs = lite0(_chelsea(lite0)).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in IMAGENET_CATS, f"chelsea the cat classified as ImageNet class {top}"
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5
    rand = create_backbone("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert float(rand(_chelsea(rand)).softmax(-1)[0][list(IMAGENET_CATS)].sum()) < 0.1


def test_head_replacement_and_input_channels_keep_pretrained_body(lite0):
    m = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=4, in_chans=1)
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    # body weights identical to the ImageNet ones; stem summed over RGB (timm's adaptation)
    torch.testing.assert_close(m.blocks[3][0].conv_pw.weight, lite0.blocks[3][0].conv_pw.weight)
    torch.testing.assert_close(m.conv_stem.weight[:, 0], lite0.conv_stem.weight.sum(1))
    feats = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=0)
    assert feats(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


def test_local_safetensors_and_pth_roundtrip(tmp_path):
    src = create_backbone("resnet18", pretrained=False, num_classes=5)
    st = save_weights(tmp_path / "r18.safetensors", src)
    pth = tmp_path / "r18.pth"
    torch.save(src.state_dict(), pth)
    for path in (st, pth):
        m = create_backbone("resnet18", pretrained=str(path), num_classes=5)
        torch.testing.assert_close(m.fc.weight, src.fc.weight)
    m7 = create_backbone("resnet18", pretrained=st, num_classes=7)  # new label set: head replaced, body kept
    assert m7.fc.out_features == 7
    torch.testing.assert_close(m7.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    headless = save_weights(tmp_path / "body.safetensors", create_backbone("resnet18", pretrained=False, num_classes=0))
    for nc in (0, 3):  # a features-only file serves a features model and a fresh head alike
        m = create_backbone("resnet18", pretrained=headless, num_classes=nc).eval()
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, nc or 512)


def test_pickled_or_wrong_files_are_refused_clearly(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"model": object()}, evil)
    with pytest.raises(BackboneError, match="evil.pth"):
        create_backbone("resnet18", pretrained=evil)
    other = save_weights(tmp_path / "lite.safetensors", create_backbone("tf_efficientnet_lite0", pretrained=False))
    with pytest.raises(BackboneError, match="do not fit"):
        create_backbone("resnet18", pretrained=other)
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.safetensors")
    with pytest.raises(BackboneError, match="unknown backbone"):
        create_backbone("not_a_net")


def test_offline_hub_request_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="pretrained=False"):
        create_backbone("resnet18", pretrained=True)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(WeightsUnavailableError):
        create_backbone("monai_unet", pretrained=True)


def test_monai_nets_build_3d():
    for name in ("monai_unet", "monai_segresnet"):
        net = create_backbone(name, pretrained=False, num_classes=3)
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    assert {"tf_efficientnet_lite0", "monai_unet", "minilm-l6-v2"} <= set(list_backbones())


def test_minilm_similarities_are_sensible(tmp_path):
    enc = create_backbone("minilm-l6-v2")
    e = enc.encode(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
                    "Toy Story (1995)", "an animated film about toys that come alive"])
    assert e.shape == (5, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # paraphrase >> unrelated
    assert sim[3, 4] > sim[3, 2]
    b = enc.eval().tokenize(["A man is eating food."])
    pooled = enc(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1)[0], e[0], atol=1e-5, rtol=1e-5)

    # a fine-tuned encoder saved as safetensors comes back through the same factory
    from core.finetune import head_names

    assert head_names(enc) == []
    with torch.no_grad():
        enc.encoder.embeddings.word_embeddings.weight[:50] += 0.5
    path = save_weights(tmp_path / "text.safetensors", enc)
    again = create_backbone("minilm-l6-v2", pretrained=path)
    torch.testing.assert_close(again.encode(["A man is eating food."]), enc.encode(["A man is eating food."]))


def test_minilm_matches_sentence_transformers():
    """The README's claim: our mean-pooled MiniLM gives sentence-transformers' own embeddings."""
    st = pytest.importorskip("sentence_transformers")
    from core.backbones import minilm_model_dir

    texts = ["A man is eating food.", "Toy Story (1995)", "an animated film about toys that come alive"]
    ref = torch.tensor(st.SentenceTransformer(str(minilm_model_dir()), device="cpu").encode(texts, normalize_embeddings=True))
    torch.testing.assert_close(create_backbone("minilm-l6-v2").encode(texts), ref, atol=1e-5, rtol=1e-5)
