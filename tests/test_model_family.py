"""Every preset builds, decodes many prompts at once exactly as one at a time, and trains only its decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.models.registry import FAMILIES, PRESETS, SEMANTIC_FAMILIES

NAMES = [n for n in cl.list_models() if PRESETS[n].family not in SEMANTIC_FAMILIES]  # the prompt models


def test_registry_lists_the_agreed_presets():
    for name in ("clipseg-rd16", "clipseg-rd64", "clipseg-rd64-refined", "clipseg-rd128", "model0", "model1",
                 "model2", "conv-unet-decoder", "transformer-decoder"):
        assert name in NAMES
    ablation = [n for n in NAMES if "3-7-9" in n]
    assert ablation and "ablation" in ablation[0] and "NOT the released" in PRESETS[ablation[0]].source
    rows = {r["model"]: r for r in cl.models.describe_models()}
    assert rows["model0"]["film"] == "all" and rows["model0"]["layers"] == (2, 4, 6, 8, 10)
    assert rows["model1"]["film"] == "first" and rows["model1"]["reduce_dim"] == 64
    assert rows["model2"]["layers"] == (8, 9, 10, 11) and rows["model2"]["reduce_dim"] == 128


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_on_vit_b16(name):
    preset = PRESETS[name]
    config_cls, decoder_cls = FAMILIES[preset.family]
    decoder = decoder_cls(config_cls(**preset.config), backbone_width=768, cond_dim=512, patch_size=16)
    assert sum(p.numel() for p in decoder.parameters() if p.requires_grad) == preset.vit_b16_parameters


def test_released_counts_are_transformers_counts():
    assert PRESETS["clipseg-rd64"].vit_b16_parameters == 1_073_153
    assert PRESETS["clipseg-rd64-refined"].vit_b16_parameters == 1_127_009


@pytest.mark.parametrize("name", NAMES)
def test_batched_prompts_equal_single_prompts(name, tiny_backbone):
    model = cl.build_model(name, backbone=tiny_backbone)
    pixels = model.preprocess(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    prompts = ["a cat", "the blue square", "grass"]
    with torch.no_grad():
        together = model(pixels, prompts)
        apart = torch.cat([model(pixels, [p]) for p in prompts])
    assert together.shape == (3, model.input_size, model.input_size)
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1]), "the prompt must change the output"


@pytest.mark.parametrize("name", ["clipseg-rd64", "model0", "conv-unet-decoder", "transformer-decoder"])
def test_only_the_decoder_trains(name, tiny_backbone):
    model = cl.build_model(name, backbone=tiny_backbone).train()
    pixels = model.preprocess([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)])
    logits = model(pixels, ["a cat", "a dog"])  # one prompt per image
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    assert not model.backbone.clip.training


def test_checkpoint_on_a_backbone_of_another_width(tiny_backbone, openai_clip_files, tmp_path):
    path = cl.save_model(cl.build_model("clipseg-rd64", backbone=tiny_backbone), tmp_path / "m.safetensors")
    other = cl.load_backbone(openai_clip_files["state_dict"], device="cpu")  # width 128, only 3 blocks
    with pytest.raises(ValueError, match="blocks 0..2"):
        cl.load_model(path, backbone=other)
    with pytest.raises(ValueError, match="reads CLIP block 11"):
        cl.build_model("transformer-decoder", backbone=other)
    model = cl.build_model("clipseg-rd64", backbone=other, extract_layers=(0, 1, 2))
    path = cl.save_model(model, tmp_path / "w128.safetensors")
    with pytest.raises(cl.WeightsFormatError, match="whose sizes do not fit"):
        cl.load_model(path, backbone=tiny_backbone)
