"""Named model presets: `list_models()`, `build_model(name, backbone=...)`.

Each preset says where it comes from and how many trainable parameters it has on a ViT-B/16 backbone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from clipseg_lab.backbones.clip_backbone import ClipBackbone
from clipseg_lab.backbones.loading import load_backbone
from clipseg_lab.errors import UnknownNameError
from clipseg_lab.models.base import TextPromptedModel
from clipseg_lab.models.clipseg import ClipSegConfig, ClipSegDecoder


@dataclass(frozen=True)
class ModelPreset:
    name: str
    family: str  # which decoder class builds it
    config: dict[str, Any]
    source: str  # where the design and numbers come from
    input_size: int = 352
    vit_b16_parameters: int | None = None  # trainable parameters on ViT-B/16, asserted in the tests


def _build_clipseg(config: ClipSegConfig, backbone: ClipBackbone) -> ClipSegDecoder:
    return ClipSegDecoder(config, backbone_width=backbone.width, cond_dim=backbone.embed_dim,
                          patch_size=backbone.patch_size)


FAMILIES: dict[str, tuple[type, Callable[..., torch.nn.Module]]] = {
    "clipseg": (ClipSegConfig, _build_clipseg),
}

PRESETS: dict[str, ModelPreset] = {p.name: p for p in [
    ModelPreset("clipseg-rd64", "clipseg", dict(extract_layers=(3, 6, 9), reduce_dim=64),
                "CLIPSeg rd64-uni (released weights; transformers' CIDAS/clipseg-rd64)", 352, 1_073_153),
]}


def list_models() -> list[str]:
    """Every preset name `build_model` accepts."""
    return sorted(PRESETS)


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise UnknownNameError(f"unknown model {name!r}. Known models: {', '.join(list_models())}")
    return PRESETS[name]


def build_model(name: str, backbone: ClipBackbone | str = "ViT-B/16", *, seed: int = 0,
                device: str | torch.device | None = None, **overrides: Any) -> TextPromptedModel:
    """A preset on a frozen backbone, with a freshly (seeded) initialised decoder, in eval mode.

    `overrides` replace fields of the preset's config, e.g. `reduce_dim=16`. A backbone given by name is
    loaded with `load_backbone` (real weights, or a clear error when they are missing).
    """
    preset = get_preset(name)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=device)
    config_cls, build = FAMILIES[preset.family]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    config = config_cls(**{**preset.config, **overrides})
    for layer in getattr(config, "extract_layers", ()):
        if not 0 <= layer < backbone.num_layers:
            raise ValueError(f"{name} reads CLIP block {layer}, but {backbone.name} has blocks "
                             f"0..{backbone.num_layers - 1}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = build(config, backbone)
    model = TextPromptedModel(backbone, decoder, name=name, config=config, input_size=preset.input_size)
    model.provenance.decoder = f"untrained (random init, seed {seed})"
    return model.to(backbone.device).eval()  # like from_pretrained: a trainer calls .train()
