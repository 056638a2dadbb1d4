"""The CLIP-enhanced UNet and its plain baseline."""

from __future__ import annotations

import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.models.clip_unet import ClipUNet, ClipUNetConfig

SMALL = dict(input_size=64, channels=(8, 16, 32), dropout=(0.05, 0.1, 0.05))


class _Width(torch.nn.Module):  # only the width matters for the fusion layer's size
    def __init__(self, width):
        super().__init__()
        self.width, self.name, self.trained, self.source, self.num_layers = width, f"w{width}", True, "-", 12


def test_fusion_adapts_to_the_backbone_width():
    counts = {w: ClipUNet(ClipUNetConfig(), _Width(w)).trainable_parameters() for w in (768, 1024)}
    assert counts[768] == cl.models.PRESETS["clip-unet"].vit_b16_parameters == 8_419_491
    assert counts[1024] - counts[768] == 256 * 512  # the 1x1 fusion conv's extra input channels
    assert ClipUNet(ClipUNetConfig(use_clip=False), None).trainable_parameters() == 7_763_107


def test_clip_unet_and_unet_segment_and_train(tiny_backbone, tmp_path):
    images = torch.randint(0, 255, (2, 3, 50, 70), dtype=torch.uint8)
    model = cl.build_model("clip-unet", backbone=tiny_backbone, **SMALL).train()
    logits = model.segment(images)
    assert logits.shape == (2, 3, 64, 64)
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, 64, 64, dtype=torch.long)).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.fusion[0].weight.grad is not None and model.fusion[0].weight.shape[1] == 32 + tiny_backbone.width
    with pytest.raises(ValueError, match="needs the CLIP tokens"):
        model(model.preprocess(images))
    plain = cl.build_model("unet", backbone=None, **SMALL)
    assert plain.segment(images).shape == (2, 3, 64, 64) and plain.provenance.backbone.startswith("none")
    for m, name in ((model.eval(), "clip_unet"), (plain, "unet")):
        path = cl.save_model(m, tmp_path / f"{name}.safetensors")
        loaded = cl.load_model(path)
        with torch.no_grad():
            torch.testing.assert_close(loaded.segment(images), m.segment(images))
