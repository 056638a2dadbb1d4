"""The rehearsal's weights: real on-disk forms, written by the reference implementations, read by our loaders.

`build_weights(scale="tiny")` writes the same files with the same code as the real-scale rehearsal, at small widths.
Real-scale layouts are checked without allocating weights (meta tensors).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.backbones.clip_backbone import IMAGENET_MEAN, IMAGENET_STD
from clipseg_lab.files import file_sha256
from clipseg_lab.rehearsal import weights as rw

HUB_IDS = tuple(rw.HUB_REPOS)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal_weights")
    start = time.perf_counter()
    info = rw.build_weights(root, scale="tiny", seed=0)
    print(f"tiny rehearsal weights written in {time.perf_counter() - start:.1f} s")
    return info


@pytest.fixture()
def env(world, monkeypatch):
    """The rehearsal's environment; huggingface_hub read HF_HOME at import, so its cache constant is patched too."""
    from huggingface_hub import constants

    for key, value in world["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(world["env"]["HF_HOME"]) / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return world


def _snapshot(world, hub_id: str) -> Path:
    return world["items"][hub_id]["path"]


def test_hub_cache_layout(world):
    root = world["root"]
    assert world["env"] == {"HF_HOME": str(root / "hf_home"), "HF_HUB_OFFLINE": "1",
                            "CLIPSEG_LAB_WEIGHTS": str(root / "weights")}
    for hub_id in HUB_IDS:
        repo = root / "hf_home" / "hub" / f"models--{hub_id.replace('/', '--')}"
        revision = (repo / "refs" / "main").read_text()
        assert re.fullmatch(r"[0-9a-f]{40}", revision)
        snapshot = repo / "snapshots" / revision
        assert snapshot == _snapshot(world, hub_id)
        names = {p.name for p in snapshot.iterdir()}
        weights_file = rw.HUB_REPOS[hub_id].weights_file
        assert names == {"config.json", "preprocessor_config.json", weights_file, "vocab.json", "merges.txt",
                         "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
        for path in snapshot.iterdir():  # relative symlinks into blobs/, named by the content's hash
            assert path.is_symlink()
            target = os.readlink(path)
            assert target.startswith("../../blobs/") and path.resolve().parent == repo / "blobs"
            if path.name == weights_file:  # as the hub names them: LFS files by sha256, small ones by git's sha1
                assert Path(target).name == file_sha256(path)
            elif path.name == "config.json":
                assert Path(target).name == rw._git_sha1(path)
        assert not list(repo.glob(".build-*"))
        item = world["items"][hub_id]
        assert item["kind"] == "hf_hub_repo" and item["bytes"] > 0
    # the weight files the published main revisions have, with their legacy position_ids buffers
    b16 = _snapshot(world, "openai/clip-vit-base-patch16")
    state = torch.load(b16 / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert state["text_model.embeddings.position_ids"].shape == (1, 77)
    assert state["vision_model.embeddings.position_ids"].shape == (1, 197)
    from safetensors.torch import load_file

    l14 = load_file(str(_snapshot(world, "openai/clip-vit-large-patch14") / "model.safetensors"))
    assert l14["vision_model.embeddings.position_ids"].shape == (1, 257)
    assert len({k.split(".")[3] for k in l14 if k.startswith("vision_model.encoder.layers.")}) == 24
    cidas = _snapshot(world, rw.CLIPSEG_ID)
    pre = json.loads((cidas / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == list(IMAGENET_MEAN) and pre["image_std"] == list(IMAGENET_STD)
    assert pre["size"] == {"height": 352, "width": 352} and pre["resample"] == 2
    assert abs(pre["rescale_factor"] - 1 / 255) < 1e-12
    config = json.loads((cidas / "config.json").read_text())
    assert config["extract_layers"] == [3, 6, 9] and config["reduce_dim"] == 64
    assert config["use_complex_transposed_convolution"] is True and config["conditional_layer"] == 0


def test_reference_reads_the_cache(env):
    """transformers itself, offline, finds and reads every repository by hub id (as a user's code would)."""
    from transformers import CLIPModel, CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = CLIPModel.from_pretrained("openai/clip-vit-base-patch16")
        assert clip.config.vision_config.patch_size == 16
        tokenizer = CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")
        assert tokenizer("a photo of a cat")["input_ids"] == cl.backbones.tokenizer.tokenize(
            "a photo of a cat")[0, :7].tolist()
        processor = CLIPSegProcessor.from_pretrained(rw.CLIPSEG_ID)
        assert list(processor.image_processor.image_mean) == list(IMAGENET_MEAN)
        model = CLIPSegForImageSegmentation.from_pretrained(rw.CLIPSEG_ID).eval()
        assert model.config.extract_layers == [3, 6, 9]
    # logits at the released models' range, not in the thousands (where every probability is 0 or 1)
    image = (torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    inputs = processor(text=["a cat", "a dog"], images=[image] * 2, padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (352, 352)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, 352, 352) and 0.5 < float(logits.std()) < 30
    assert float((logits[0] - logits[1]).abs().max()) > 1e-2  # the prompt matters (see weights._calibrated)


def test_backbones_resolve_where_the_readme_says(env, monkeypatch):
    # $CLIPSEG_LAB_WEIGHTS comes before the Hugging Face cache: there, ViT-B/16 is OpenAI's ViT-B-16.pt
    weights = Path(env["env"]["CLIPSEG_LAB_WEIGHTS"])
    bb = cl.load_backbone("ViT-B/16", device="cpu")
    assert Path(bb.source) == weights / "ViT-B-16.pt"
    # ViT-L/14 has no file there: the hub cache's snapshot
    large = cl.load_backbone("ViT-L/14", device="cpu")
    assert Path(large.source) == _snapshot(env, "openai/clip-vit-large-patch14")
    assert large.num_layers == 24
    del large
    # without $CLIPSEG_LAB_WEIGHTS, ViT-B/16 is the hub cache's snapshot (its pytorch_model.bin)
    monkeypatch.delenv("CLIPSEG_LAB_WEIGHTS")
    bb = cl.load_backbone("ViT-B/16", device="cpu")
    assert Path(bb.source) == _snapshot(env, "openai/clip-vit-base-patch16")
    assert bb.patch_size == 16 and bb.num_layers == 12 and bb.trained


def test_released_clipseg_from_the_cache(env):
    model = cl.load_model(rw.CLIPSEG_ID, device="cpu")
    assert Path(model.checkpoint) == _snapshot(env, rw.CLIPSEG_ID)
    assert model.normalization.mean == IMAGENET_MEAN and model.normalization.std == IMAGENET_STD
    assert model.input_size in (352, (352, 352))
    seg = cl.Segmenter(model)
    seg.set_image(torch.zeros(3, 64, 80).numpy().transpose(1, 2, 0).astype("uint8"))
    probs = seg.predict(["a cat"])
    assert probs.shape == (1, 64, 80) and torch.isfinite(torch.as_tensor(probs)).all()


def test_openai_jit_archive(env):
    path = Path(env["env"]["CLIPSEG_LAB_WEIGHTS"]) / "ViT-B-16.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip

        archive = torch.jit.load(str(path), map_location="cpu")
        state = archive.state_dict()
        assert state["visual.conv1.weight"].dtype == torch.float16  # released in half precision
        assert int(state["input_resolution"]) == 224 and int(state["vocab_size"]) == 49408
        reference, _ = clip.load(str(path), device="cpu", jit=False)
    ours = cl.load_backbone(path, device="cpu")
    assert ours.num_layers == 12 and ours.patch_size == 16 and ours.embed_dim == rw.OPENAI_SIZES["tiny"]["embed_dim"]
    tokens = clip.tokenize(["a photo of a cat"])
    with torch.no_grad():
        expected = reference.encode_text(tokens).float()
        got = ours.encode_text(["a photo of a cat"]).float()
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_original_decoder_on_the_openai_backbone(env):
    weights = Path(env["env"]["CLIPSEG_LAB_WEIGHTS"])
    state = torch.load(weights / "rd64-uni.pth", map_location="cpu", weights_only=True)
    spec = rw.OPENAI_SIZES["tiny"]
    assert {k: tuple(v.shape) for k, v in state.items()} == rw.original_decoder_shapes(
        cond_dim=spec["embed_dim"], width=spec["vision_width"])
    assert "reduce.weight" in state  # the unused layer the released files carry
    backbone = cl.load_backbone(weights / "ViT-B-16.pt", device="cpu")
    model = cl.load_model(weights / "rd64-uni.pth", backbone=backbone, device="cpu")
    assert model.normalization.mean == IMAGENET_MEAN
    assert torch.equal(model.decoder.state_dict()["reduces.1.weight"], state["reduces.1.weight"])


def test_sam_checkpoints(env):
    from clipseg_lab.zeroshot.sam import load_sam

    weights = Path(env["env"]["CLIPSEG_LAB_WEIGHTS"])
    for name in ("sam_vit_b_01ec64.pth", "sam_vit_h_4b8939.pth"):
        item = env["items"][name]
        assert item["kind"] == "sam_checkpoint" and item["model_type"] == "vit_b"  # tiny: ViT-B under both names
        sam = load_sam(weights / name, model_type="vit_b", device="cpu")
        assert sam.model_type == "vit_b" and sam.trained
        del sam
    assert load_sam("vit_b", device="cpu").source == str(weights / "sam_vit_b_01ec64.pth")


def test_rerun_keeps_what_is_there(world):
    start = time.perf_counter()
    again = rw.build_weights(world["root"], scale="tiny", seed=0)
    assert time.perf_counter() - start < 5
    assert all(item["skipped"] for item in again["items"].values())
    assert {k: v["bytes"] for k, v in again["items"].items()} == {k: v["bytes"] for k, v in world["items"].items()}
    # a file gone (or cut short) is written again, and only that one, with the same seeded content
    decoder = world["root"] / "weights" / "rd64-uni.pth"
    before = decoder.read_bytes()
    decoder.unlink()
    third = rw.build_weights(world["root"], scale="tiny", seed=0)
    assert [name for name, item in third["items"].items() if not item["skipped"]] == ["rd64-uni.pth"]
    assert decoder.read_bytes() == before


def test_real_decoder_table_matches_our_presets():
    """rd64-uni / rd64-uni-refined at the released sizes, through original_to_hf_decoder, fit our presets on
    ViT-B/16 (width 768, embedding 512, patch 16) key for key and shape for shape; meta tensors, no memory."""
    from clipseg_lab.models.clipseg import ClipSegConfig, ClipSegDecoder, decoder_state_from_hf
    from clipseg_lab.models.clipseg_weights import UNUSED_ORIGINAL_KEYS, original_to_hf_decoder
    from clipseg_lab.models.registry import get_preset

    for preset, refined in (("clipseg-rd64", False), ("clipseg-rd64-refined", True)):
        shapes = rw.original_decoder_shapes(complex_trans_conv=refined)
        assert set(UNUSED_ORIGINAL_KEYS) <= set(shapes)
        original = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        ours = decoder_state_from_hf(original_to_hf_decoder(original))
        with torch.device("meta"):
            decoder = ClipSegDecoder(ClipSegConfig(**get_preset(preset).config), backbone_width=768, cond_dim=512,
                                     patch_size=16)
        expected = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in ours.items()} == expected, preset
        # the paper's count for rd64 includes the unused reduce layer: 1,122,369 here, transformers' 1,073,153
        assert sum(math_prod(s) for s in shapes.values()) - sum(math_prod(shapes[k]) for k in UNUSED_ORIGINAL_KEYS) \
            == get_preset(preset).vit_b16_parameters


def math_prod(shape) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def test_real_configs_have_the_published_sizes():
    from transformers import CLIPModel, CLIPSegForImageSegmentation

    counts = {}
    for hub_id in ("openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14"):
        with torch.device("meta"):
            model = CLIPModel(rw.clip_config(hub_id, "real"))
        counts[hub_id] = sum(p.numel() for p in model.parameters())
    assert round(counts["openai/clip-vit-base-patch16"] / 1e6, 1) == 149.6
    assert round(counts["openai/clip-vit-large-patch14"] / 1e6, 1) == 427.6
    with torch.device("meta"):
        clipseg = CLIPSegForImageSegmentation(rw.clipseg_config("real"))
    decoder = sum(p.numel() for p in clipseg.decoder.parameters())
    assert decoder == cl.models.registry.get_preset("clipseg-rd64-refined").vit_b16_parameters
    assert sum(p.numel() for p in clipseg.clip.parameters()) == counts["openai/clip-vit-base-patch16"]
    vision = rw.clipseg_config("real").vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (768, 12, 16, 224)
    spec = rw.OPENAI_SIZES["real"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clip.model import CLIP
    with torch.device("meta"):
        openai = CLIP(**spec)
    assert sum(p.numel() for p in openai.parameters()) == counts["openai/clip-vit-base-patch16"]
