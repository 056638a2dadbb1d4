"""Every released CLIPSeg weight format, against transformers' CLIPSeg on the same random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.backbones.tokenizer import tokenize
from clipseg_lab.models.clipseg import decoder_state_to_hf
from clipseg_lab.models.clipseg_weights import hf_to_original_decoder, original_to_hf_decoder
from clipseg_lab.models.visual_prompt import blend_visual_prompt, interpolate_conditionals
from tests.conftest import small_hf_clipseg

PROMPTS = ["a cat", "the red circle", "a dog on the left"]
ATOL = 1e-4


def _reference_logits(reference, prompts, pixels, cond_pixels=None):
    with torch.no_grad():
        if cond_pixels is not None:
            return reference(pixel_values=pixels.repeat(len(cond_pixels), 1, 1, 1),
                             conditional_pixel_values=cond_pixels).logits
        return reference(input_ids=tokenize(prompts), pixel_values=pixels.repeat(len(prompts), 1, 1, 1)).logits


@pytest.mark.parametrize("kind", ["plain", "refined"])
def test_hf_clipseg_dir_matches_transformers(hf_clipseg_dirs, kind):
    reference = small_hf_clipseg(refined=kind == "refined")
    model = cl.load_model(hf_clipseg_dirs[kind], device="cpu")
    assert model.name == ("clipseg-rd64-refined" if kind == "refined" else "clipseg-rd16")
    assert model.config.extract_layers == (1, 2, 3) and "released CLIPSeg weights" in model.provenance.decoder
    hf_keys = {k[len("decoder."):] for k in reference.state_dict() if k.startswith("decoder.")}
    assert decoder_state_to_hf(model.decoder.state_dict()).keys() == hf_keys
    pixels = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        got = model(pixels, PROMPTS)
    expected = _reference_logits(reference, PROMPTS, pixels)
    assert (got - expected).abs().max() <= ATOL


@pytest.mark.parametrize("kind", ["plain", "refined"])
def test_visual_prompts_match_transformers(hf_clipseg_dirs, kind):
    """CLIPSeg's image-conditioned path: the prompt image's projected CLIP embedding conditions the decoder."""
    reference = small_hf_clipseg(refined=kind == "refined")
    model = cl.load_model(hf_clipseg_dirs[kind], device="cpu")
    pixels, cond_pixels = torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cond = model.backbone.encode_image(cond_pixels, pooled=True).pooled
        got = model(pixels, cond)
    assert (got - _reference_logits(reference, None, pixels, cond_pixels)).abs().max() <= ATOL


def test_original_pth_matches_hf(hf_clipseg_dirs, tmp_path):
    """The same decoder saved in the original layout (with its unused `reduce` layer) loads to the same logits."""
    reference = small_hf_clipseg()
    decoder = {k[len("decoder."):]: v for k, v in reference.state_dict().items() if k.startswith("decoder.")}
    original = hf_to_original_decoder(decoder)
    original["reduce.weight"], original["reduce.bias"] = torch.randn(16, 64), torch.randn(16)
    assert "blocks.0.self_attn.in_proj_weight" in original and "trans_conv.weight" in original
    torch.save(original, tmp_path / "rd16-uni.pth")
    backbone = cl.load_backbone(hf_clipseg_dirs["plain"], device="cpu")  # the CLIP it was trained with
    with pytest.raises(ValueError, match="reads CLIP block 6"):  # the released layers need a 12-block CLIP
        cl.load_model(tmp_path / "rd16-uni.pth", backbone=backbone)
    model = cl.models.clipseg_weights.load_original_clipseg(tmp_path / "rd16-uni.pth", backbone=backbone,
                                                            extract_layers=(1, 2, 3), num_heads=2)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model(pixels, PROMPTS)
    assert (got - _reference_logits(reference, PROMPTS, pixels)).abs().max() <= ATOL


@pytest.mark.parametrize("refined", [False, True])
def test_hf_original_round_trip_is_exact(refined):
    decoder = {k[len("decoder."):]: v for k, v in small_hf_clipseg(refined=refined).state_dict().items()
               if k.startswith("decoder.")}
    back = original_to_hf_decoder(hf_to_original_decoder(decoder))
    assert back.keys() == decoder.keys()
    assert all(torch.equal(back[k], decoder[k]) for k in decoder)


def test_released_layers_are_the_default_for_original_files(hf_clipseg_dirs, tmp_path):
    decoder = {k[len("decoder."):]: v for k, v in small_hf_clipseg().state_dict().items() if k.startswith("decoder.")}
    torch.save(hf_to_original_decoder(decoder), tmp_path / "d.pth")
    backbone = cl.load_backbone("tiny-random", device="cpu")
    with pytest.raises(cl.WeightsFormatError, match="width 64 and embedding size 32"):
        cl.load_model(tmp_path / "d.pth", backbone=backbone)  # tiny-random's embedding is 64 wide


def test_weight_format_errors(hf_clip_dir, tmp_path):
    with pytest.raises(cl.WeightsFormatError, match="not 'clipseg'"):
        cl.load_model(hf_clip_dir)
    torch.save({"some.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(cl.WeightsFormatError, match="not an original CLIPSeg decoder"):
        cl.load_model(tmp_path / "x.pth", backbone="tiny-random")
    with pytest.raises(cl.WeightsNotFoundError, match="load_model reads"):
        cl.load_model(tmp_path / "missing.pth")


def test_visual_prompt_blending_modes():
    image = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 30:50] = 1
    high = blend_visual_prompt(image, mask, "highlight")
    assert high[:, 15, 40].tolist() == [200] * 3 and high[:, 0, 0].tolist() == [20] * 3
    crop = blend_visual_prompt(image, mask, "crop")
    assert crop.shape[-2] == crop.shape[-1] == 24  # 20 px wide object, 10 % margin on each side
    with pytest.raises(ValueError, match=r"mask is \(10, 10\) but its image is \(40, 60\)"):
        blend_visual_prompt(image, np.ones((10, 10)), "highlight")
    with pytest.raises(ValueError, match="empty"):
        blend_visual_prompt(image, np.zeros((40, 60)), "crop")
    with pytest.raises(ValueError, match="unknown visual prompt mode"):
        blend_visual_prompt(image, mask, "sparkle")


def test_visual_and_text_prompts_in_the_segmenter(tiny_backbone):
    model = cl.build_model("clipseg-rd64", backbone=tiny_backbone)
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[8:30, 8:30] = 255
    visual = model.visual_prompt_embeddings([image], [mask])
    text = model.prompt_embeddings(["a square"])
    seg = cl.Segmenter(model)
    seg.set_image(image)
    half = seg.predict(interpolate_conditionals(text, visual, 0.5))
    assert half.shape == (1, 48, 48)
    torch.testing.assert_close(seg.predict(interpolate_conditionals(text, visual, 0.0)), seg.predict(["a square"]))
