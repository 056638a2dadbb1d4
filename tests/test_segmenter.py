"""The CLIPSeg decoder, the Segmenter and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import clipseg_lab as cl


@pytest.fixture(scope="module")
def model(tiny_backbone):
    return cl.build_model("clipseg-rd64", backbone=tiny_backbone)


def test_predict_shapes_and_threshold(model):
    seg = cl.Segmenter(model)
    seg.set_image(np.zeros((37, 53, 3), np.uint8))
    probs = seg.predict(["a cat", "a dog"])
    assert probs.shape == (2, 37, 53) and probs.dtype == torch.float32
    assert 0 <= probs.min() and probs.max() <= 1
    masks = seg.predict("a cat", threshold=0.5)
    assert masks.dtype == torch.bool and masks.shape == (1, 37, 53)


def test_batched_prompts_equal_one_at_a_time(model):
    """Broadcasting one image's features over K prompts gives what K separate calls give."""
    seg = cl.Segmenter(model, prompt_batch=2)
    seg.set_image(Image.new("RGB", (64, 48), (120, 30, 200)))
    prompts = ["a cat", "a dog", "grass", "a red ball", "sky"]
    together = seg.predict_logits(prompts)
    apart = torch.cat([seg.predict_logits([p]) for p in prompts])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=0)


def test_image_encoded_once(model, monkeypatch):
    calls = []
    original = model.backbone.encode_image
    monkeypatch.setattr(model.backbone, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    seg = cl.Segmenter(model)
    seg.set_image(np.zeros((32, 32), np.uint8))  # grayscale works too
    for prompts in (["a"], ["b", "c"], ["d"] * 7):
        seg.predict(prompts)
    assert len(calls) == 1


def test_bad_input(model, tmp_path):
    seg = cl.Segmenter(model)
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict(["a cat"])
    with pytest.raises(cl.ImageReadError, match="missing.jpg"):
        seg.set_image(tmp_path / "missing.jpg")
    seg.set_image(np.zeros((16, 16, 4), np.uint8))  # RGBA array
    with pytest.raises(cl.PromptError, match="empty prompt list"):
        seg.predict([])
    with pytest.raises(cl.UnknownNameError, match="clipseg-rd64"):
        cl.build_model("clipseg-rd65", backbone=model.backbone)
    with pytest.raises(ValueError, match="unknown option"):
        cl.build_model("clipseg-rd64", backbone=model.backbone, reduce_dims=3)
    with pytest.raises(ValueError, match="blocks 0..11"):
        cl.build_model("clipseg-rd64", backbone=model.backbone, extract_layers=(3, 6, 12))


def test_checkpoint_round_trip(model, tmp_path):
    path = cl.save_model(model, tmp_path / "rd64.safetensors", note="smoke")
    loaded = cl.load_model(path)
    assert loaded.provenance.decoder == "checkpoint rd64.safetensors" and loaded.provenance.extra == {"note": "smoke"}
    assert not loaded.provenance.backbone_trained  # tiny-random stays labelled
    pixels = model.preprocess(np.zeros((8, 8, 3), np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels, ["a cat"]), model(pixels, ["a cat"]))
    assert not list(tmp_path.glob(".*"))  # no temporary files left beside it


def test_checkpoint_errors(model, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(cl.WeightsNotFoundError, match="no such checkpoint file"):
        cl.load_model(tmp_path / "none.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(cl.WeightsFormatError, match="without clipseg-lab metadata"):
        cl.load_model(tmp_path / "plain.safetensors")
    path = cl.save_model(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["extra.weight"] = state.pop("reduces.0.weight")
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(cl.WeightsFormatError, match=r"missing keys \['reduces.0.weight'\].*extra.weight"):
        cl.load_model(tmp_path / "bad.safetensors")
