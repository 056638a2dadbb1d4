"""Weight resolution, clear errors for missing / wrong weights, tokenizer rules, tiny-random."""

from __future__ import annotations

import json

import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.backbones.weights import ENV_WEIGHTS, resolve_weights


def test_missing_weights_name_every_place_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(cl.WeightsNotFoundError) as err:
        cl.load_backbone("ViT-B/16", device="cpu")
    msg = str(err.value)
    for part in ("ViT-B/16", ENV_WEIGHTS, "openai/clip-vit-base-patch16", "ViT-B-16.pt", "Hugging Face cache",
                 "HF_HUB_OFFLINE", "tiny-random"):
        assert part in msg, part


def test_missing_weights_never_fall_back_to_random(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(cl.WeightsNotFoundError):
        cl.load_backbone("openai/clip-vit-large-patch14", device="cpu", allow_download=False)
    with pytest.raises(cl.WeightsNotFoundError, match="does not exist"):
        cl.load_backbone(tmp_path / "nowhere" / "ViT-B-16.pt", device="cpu")


def test_env_root_is_searched_by_alias(monkeypatch, tmp_path, hf_clip_dir, openai_clip_files):
    import shutil

    shutil.copytree(hf_clip_dir, tmp_path / "openai" / "clip-vit-base-patch32")
    shutil.copy(openai_clip_files["jit"], tmp_path / "ViT-L-14.pt")
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path))
    assert resolve_weights("ViT-B/32").path == tmp_path / "openai" / "clip-vit-base-patch32"
    found = resolve_weights("ViT-L/14", allow_download=False)
    assert found.kind == "openai_file" and found.path.name == "ViT-L-14.pt"
    backbone = cl.load_backbone("ViT-B/32", device="cpu")
    assert backbone.trained and backbone.name == "ViT-B/32"


def test_hf_cache_is_used(monkeypatch, tmp_path, hf_clip_dir):
    """A snapshot in the local Hugging Face cache is found by hub id without network."""
    import shutil

    snap = tmp_path / "models--openai--clip-vit-base-patch16" / "snapshots" / ("0" * 40)
    shutil.copytree(hf_clip_dir, snap)
    (tmp_path / "models--openai--clip-vit-base-patch16" / "refs").mkdir()
    (tmp_path / "models--openai--clip-vit-base-patch16" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    found = resolve_weights("ViT-B/16", allow_download=False)
    assert found.kind == "hf_dir" and found.path == snap


def test_unknown_backbone_lists_known_names():
    with pytest.raises(cl.UnknownNameError) as err:
        cl.load_backbone("ViT-B/99", device="cpu")
    assert "ViT-B/16" in str(err.value) and "tiny-random" in str(err.value)
    with pytest.raises(cl.UnknownNameError):
        cl.load_backbone("resnet50", device="cpu")


def test_weights_dir_of_the_wrong_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(cl.WeightsFormatError, match="expected a CLIP model directory"):
        cl.load_backbone(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    with pytest.raises(cl.WeightsFormatError, match="no weights"):
        cl.load_backbone(tmp_path, device="cpu")
    (tmp_path / "config.json").unlink()
    with pytest.raises(cl.WeightsFormatError, match="without config.json"):
        cl.load_backbone(tmp_path, device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(cl.WeightsFormatError, match="junk.pt"):
        cl.load_backbone(junk, device="cpu")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(cl.WeightsFormatError, match="not an OpenAI CLIP state dict"):
        cl.load_backbone(tmp_path / "other.pt", device="cpu")


def test_tiny_random_is_seeded_and_labelled():
    a = cl.load_backbone("tiny-random", device="cpu")
    b = cl.load_backbone("tiny-random", device="cpu")
    assert not a.trained and "untrained" in a.label
    assert (a.num_layers, a.patch_size, a.image_size) == (12, 16, 224)
    torch.testing.assert_close(a.encode_text(["a cat"]), b.encode_text(["a cat"]))
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.clip.training


def test_tokenizer_rules(tiny_backbone):
    ids = tiny_backbone.tokenize(["a cat"])
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and ids[0, 3] == 49407 and ids[0, 4:].eq(0).all()
    with pytest.warns(UserWarning, match="truncated"):
        long = tiny_backbone.tokenize(["cat " * 100])
    assert long[0, -1] == 49407
    with pytest.raises(cl.PromptError, match="empty prompt list"):
        tiny_backbone.encode_text([])
    with pytest.raises(cl.PromptError, match="prompt 1 is empty"):
        tiny_backbone.encode_text(["a cat", "  "])


def test_layer_out_of_range(tiny_backbone):
    with pytest.raises(ValueError, match="blocks 0..11"):
        tiny_backbone.encode_image(torch.zeros(1, 3, 224, 224), layers=[12])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_backbone.preprocess(torch.zeros(3, 8, 8, dtype=torch.uint8), size=100)
