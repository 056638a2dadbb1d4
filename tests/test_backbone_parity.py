"""Our backbone against the reference implementations, on the same random weights (no network)."""

from __future__ import annotations

import warnings

import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.backbones import hf_to_openai, openai_to_hf
from clipseg_lab.backbones.loading import read_openai_state_dict
from tests.conftest import small_hf_clip

ATOL = 1e-5
PROMPTS = ["a photo of a cat", "the red circle on the left", "x"]


def _clip_pkg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
    return clip


def test_hf_dir_matches_transformers(hf_clip_dir):
    reference = small_hf_clip()  # the same seed and init as the saved directory
    ours = cl.load_backbone(hf_clip_dir, device="cpu")
    pixels = torch.randn(2, 3, 64, 64)
    layers = list(range(ours.num_layers))
    got = ours.encode_image(pixels, layers=layers)
    with torch.no_grad():
        ref = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
        ref_embed = reference.get_image_features(pixel_values=pixels).pooler_output
        ids = ours.tokenize(PROMPTS)
        ref_text = reference.get_text_features(input_ids=ids).pooler_output
    for i, act in zip(layers, got.activations):
        torch.testing.assert_close(act, ref.hidden_states[i + 1], atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pooled, ref_embed, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.encode_text(PROMPTS), ref_text, atol=ATOL, rtol=0)


def test_position_interpolation_matches_transformers(hf_clip_dir):
    """At 96 px (native 64) the interpolated position embeddings are transformers' (and CLIPSeg's) bicubic ones."""
    reference = small_hf_clip()
    ours = cl.load_backbone(hf_clip_dir, device="cpu")
    pixels = torch.randn(1, 3, 96, 96)
    got = ours.encode_image(pixels, layers=[1, 3])
    with torch.no_grad():
        ref = reference.vision_model(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
    assert got.grid == (6, 6) and got.activations[0].shape == (1, 37, 64)
    torch.testing.assert_close(got.activations[1], ref.hidden_states[4], atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pooled, reference.visual_projection(ref.pooler_output), atol=ATOL, rtol=0)


@pytest.mark.parametrize("fmt", ["state_dict", "jit"])
def test_openai_file_matches_clip_package(openai_clip_files, fmt):
    clip = _clip_pkg()
    path = openai_clip_files[fmt]
    reference, _ = clip.load(str(path), device="cpu", jit=False)
    ours = cl.load_backbone(path, device="cpu")
    pixels = torch.randn(2, 3, 64, 64)
    tokens = clip.tokenize(PROMPTS)
    torch.testing.assert_close(ours.tokenize(PROMPTS), tokens)
    with torch.no_grad():
        ref_image = reference.encode_image(pixels)
        ref_text = reference.encode_text(tokens)
    torch.testing.assert_close(ours.encode_image(pixels).pooled, ref_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.encode_text(PROMPTS), ref_text, atol=ATOL, rtol=0)
    assert ours.trained and ours.num_layers == 3 and ours.width == 128


def test_openai_and_hf_formats_agree(openai_clip_files, tmp_path):
    """One set of weights, converted to a Hugging Face directory, gives the same embeddings both ways."""
    from transformers import CLIPModel

    from clipseg_lab.backbones import openai_config

    state = read_openai_state_dict(openai_clip_files["state_dict"])
    model = CLIPModel(openai_config(state))
    model.load_state_dict(openai_to_hf(state), strict=False)
    model.save_pretrained(tmp_path)
    from_pt = cl.load_backbone(openai_clip_files["state_dict"], device="cpu")
    from_dir = cl.load_backbone(tmp_path, device="cpu")
    pixels = torch.randn(1, 3, 64, 64)
    a, b = from_pt.encode_image(pixels, layers=[0, 2]), from_dir.encode_image(pixels, layers=[0, 2])
    for x, y in zip(a.activations + [a.pooled], b.activations + [b.pooled]):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=0)
    torch.testing.assert_close(from_pt.encode_text(PROMPTS), from_dir.encode_text(PROMPTS), atol=ATOL, rtol=0)


def test_conversion_round_trips_exactly(openai_clip_files):
    state = read_openai_state_dict(openai_clip_files["state_dict"])
    back = hf_to_openai(openai_to_hf(state))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_encode_image_stops_early_without_pooled(tiny_backbone):
    pixels = tiny_backbone.preprocess(torch.zeros(3, 40, 30, dtype=torch.uint8))
    full = tiny_backbone.encode_image(pixels, layers=[3, 6, 9])
    early = tiny_backbone.encode_image(pixels, layers=[3, 6, 9], pooled=False)
    assert early.pooled is None and full.pooled.shape == (1, tiny_backbone.embed_dim)
    for x, y in zip(full.activations, early.activations):
        torch.testing.assert_close(x, y)
