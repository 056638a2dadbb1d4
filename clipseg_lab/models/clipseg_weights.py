"""The two formats CLIPSeg's weights are released in, and the mapping between them.

(a) Hugging Face: a `CLIPSegForImageSegmentation` directory or hub id (CIDAS/clipseg-rd64-refined, ...):
    `clip.*` (the CLIP) + `decoder.*`, config.json with extract_layers, reduce_dim, ...
(b) the original repository's decoder state dicts (rd64-uni.pth, rd64-uni-refined.pth, rd16-uni.pth), used
    together with OpenAI's CLIP ViT-B/16 they were trained on:
      film_mul / film_add, reduces.i, blocks.i.self_attn.in_proj_* (q, k, v stacked),
      blocks.i.self_attn.out_proj, blocks.i.linear1 / linear2, blocks.i.norm1 / norm2,
      trans_conv (or trans_conv.0 / .2 / .4 for the refined head), and an unused `reduce` layer.
    The layers read are not stored in the file: the released models read CLIP blocks 3, 6 and 9.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from clipseg_lab.backbones.clip_backbone import IMAGENET_NORMALIZATION, ClipBackbone, Normalization
from clipseg_lab.backbones.loading import (
    backbone_from_weights,
    clip_from_clipseg,
    default_device,
    default_dtype,
    load_backbone,
    read_hf_config,
    read_hf_state_dict,
)
from clipseg_lab.backbones.weights import rehearsal_note
from clipseg_lab.errors import WeightsFormatError
from clipseg_lab.models.base import TextPromptedModel
from clipseg_lab.models.clipseg import decoder_state_from_hf

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

RELEASED_LAYERS = (3, 6, 9)
_BLOCK = {  # original suffix inside blocks.i -> transformers suffix inside layers.i
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "self_attn.out_proj.bias": "self_attn.out_proj.bias",
    "linear1.weight": "mlp.fc1.weight", "linear1.bias": "mlp.fc1.bias",
    "linear2.weight": "mlp.fc2.weight", "linear2.bias": "mlp.fc2.bias",
    "norm1.weight": "layer_norm1.weight", "norm1.bias": "layer_norm1.bias",
    "norm2.weight": "layer_norm2.weight", "norm2.bias": "layer_norm2.bias",
}
UNUSED_ORIGINAL_KEYS = ("reduce.weight", "reduce.bias")  # built but never called in the original code


def original_to_hf_decoder(state: StateDict) -> StateDict:
    """Original CLIPSeg decoder keys -> transformers' `CLIPSegDecoder` keys (no `decoder.` prefix)."""
    out: StateDict = {}
    for key, value in state.items():
        if key in UNUSED_ORIGINAL_KEYS:
            continue
        if m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key):
            index, suffix = m.groups()
            if suffix in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
                kind = suffix.rsplit("_", 1)[1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"layers.{index}.self_attn.{name}.{kind}"] = part
            elif suffix in _BLOCK:
                out[f"layers.{index}.{_BLOCK[suffix]}"] = value
            else:
                raise WeightsFormatError(f"unexpected key in an original CLIPSeg decoder: {key!r}")
        elif key.startswith("trans_conv"):
            out["transposed_convolution" + key[len("trans_conv"):]] = value
        elif key.split(".")[0] in ("film_mul", "film_add", "reduces"):
            out[key] = value
        else:
            raise WeightsFormatError(f"unexpected key in an original CLIPSeg decoder: {key!r}")
    return out


def hf_to_original_decoder(state: StateDict) -> StateDict:
    """transformers' `CLIPSegDecoder` keys -> the original layout (the unused `reduce` layer is not made up)."""
    inverse = {v: k for k, v in _BLOCK.items()}
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"layers\.(\d+)\.(.+)", key):
            index, suffix = m.groups()
            if pm := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", suffix):
                qkv.setdefault(f"blocks.{index}.self_attn.in_proj_{pm.group(2)}", {})[pm.group(1)] = value
            elif suffix in inverse:
                out[f"blocks.{index}.{inverse[suffix]}"] = value
            else:
                raise WeightsFormatError(f"unexpected key in a CLIPSeg decoder: {key!r}")
        elif key.startswith("transposed_convolution"):
            out["trans_conv" + key[len("transposed_convolution"):]] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _preset_for(reduce_dim: int, refined: bool) -> str:
    """The preset a released decoder is an instance of (its exact sizes are passed as overrides)."""
    if refined:
        return "clipseg-rd64-refined"
    return {16: "clipseg-rd16", 64: "clipseg-rd64", 128: "clipseg-rd128"}.get(reduce_dim, "clipseg-rd64")


def _model_from_hf_decoder(decoder_state: StateDict, backbone: ClipBackbone, *, extract_layers, num_heads: int,
                           source: str, device, input_size: int | None = None) -> TextPromptedModel:
    """A released decoder on `backbone`, with the released models' preprocessing (ImageNet statistics, the
    original visual-prompt recipe); a Hugging Face directory's own preprocessor config replaces the former."""
    from clipseg_lab.models.registry import build_model

    refined = "transposed_convolution.0.weight" in decoder_state
    reduce_dim, cond_dim = decoder_state["film_mul.weight"].shape
    if cond_dim != backbone.embed_dim or decoder_state["reduces.0.weight"].shape[1] != backbone.width:
        raise WeightsFormatError(
            f"{source}: this decoder was trained on a CLIP of width {decoder_state['reduces.0.weight'].shape[1]} and "
            f"embedding size {cond_dim}; the backbone {backbone.name} has {backbone.width} / {backbone.embed_dim}. "
            "The released CLIPSeg weights need CLIP ViT-B/16.")
    try:
        model = build_model(_preset_for(reduce_dim, refined), backbone=backbone, device=device,
                            extract_layers=tuple(extract_layers), reduce_dim=reduce_dim, num_heads=num_heads,
                            intermediate_size=decoder_state["layers.0.mlp.fc1.weight"].shape[0],
                            complex_trans_conv=refined, film="first", input_size=input_size)
        missing, unexpected = model.decoder.load_state_dict(decoder_state_from_hf(decoder_state), strict=False)
    except (ValueError, RuntimeError) as exc:  # layers the backbone lacks, tensors of other shapes
        raise WeightsFormatError(f"{source}: this decoder does not fit the backbone {backbone.name} "
                                 f"({str(exc).splitlines()[0]}). "
                                 "The released CLIPSeg weights need CLIP ViT-B/16.") from exc
    if missing or unexpected:
        raise WeightsFormatError(f"{source}: decoder weights do not fit: missing keys {sorted(missing)}, "
                                 f"unexpected keys {sorted(unexpected)}")
    note = rehearsal_note(source)
    model.provenance.decoder = (f"untrained ({note}) in the released CLIPSeg layout ({Path(source).name})" if note
                                else f"released CLIPSeg weights ({Path(source).name})")
    model.normalization = IMAGENET_NORMALIZATION
    model.visual_prompt_recipe = "clipseg-original"
    return model.eval()


def read_preprocessor_config(path: Path) -> tuple[Normalization, int | None]:
    """A Hugging Face CLIPSeg directory's `preprocessor_config.json`: its normalisation and square input size.

    Without the file, the released models' own (ImageNet statistics, 352 px) with a warning: every published
    CLIPSeg repository ships one, and transformers' `CLIPSegProcessor` cannot run without it.
    """
    file = path / "preprocessor_config.json"
    if not file.is_file():
        log.warning("%s: no preprocessor_config.json; normalising with ImageNet statistics as the released CLIPSeg "
                    "models do", path)
        return IMAGENET_NORMALIZATION, None
    try:
        cfg = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsFormatError(f"{file}: unreadable preprocessor config ({exc})") from exc
    if not cfg.get("do_rescale", True) or abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise WeightsFormatError(f"{file}: only images rescaled by 1/255 are supported (do_rescale, rescale_factor)")
    if cfg.get("resample", 2) != 2:  # PIL's BILINEAR
        log.warning("%s: resample %s; clipseg-lab resizes bilinearly", file, cfg["resample"])
    if cfg.get("do_normalize", True):
        try:
            norm = Normalization(tuple(cfg["image_mean"]), tuple(cfg["image_std"]), f"{file.name} of {path.name}")
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsFormatError(f"{file}: image_mean / image_std must be three numbers each ({exc})") from exc
    else:
        norm = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), f"{file.name} of {path.name} (do_normalize false)")
    size = cfg.get("size")
    if isinstance(size, dict):
        size = size.get("height") if size.get("height") == size.get("width") else size.get("shortest_edge")
    return norm, (int(size) if size else None)


def load_hf_clipseg(path: Path, device=None, dtype=None, name: str | None = None) -> TextPromptedModel:
    """A Hugging Face CLIPSeg directory: its own CLIP as the backbone, its decoder as ours.

    The backbone is named by what reads it again (`name`: the hub id asked for, else the directory's absolute
    path; `load_backbone` takes a CLIPSeg model's own CLIP), so checkpoints trained on it load by name."""
    config = read_hf_config(path)
    if config.get("conditional_layer", 0) != 0:
        raise WeightsFormatError(f"{path}: conditional_layer {config['conditional_layer']} is not supported "
                                 "(released CLIPSeg models condition at layer 0)")
    state = read_hf_state_dict(path)
    clip = clip_from_clipseg(config, state, str(path))
    backbone = backbone_from_weights(clip, name or str(Path(path).resolve()), path)
    device = default_device(device)
    backbone = backbone.to(device=device, dtype=default_dtype(dtype, device))
    decoder_state = {k[len("decoder."):]: v.float() for k, v in state.items() if k.startswith("decoder.")}
    normalization, size = read_preprocessor_config(path)
    model = _model_from_hf_decoder(decoder_state, backbone,
                                   extract_layers=config.get("extract_layers", RELEASED_LAYERS),
                                   num_heads=config.get("decoder_num_attention_heads", 4), source=str(path),
                                   device=device, input_size=size)
    model.normalization = normalization
    return model


def load_original_clipseg(path: Path, backbone: ClipBackbone | str | None = None, device=None,
                          extract_layers=RELEASED_LAYERS, num_heads: int = 4) -> TextPromptedModel:
    """An original decoder `.pth` on the CLIP it was trained on (default ViT-B/16, found as load_backbone does)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsFormatError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    if not isinstance(state, dict) or "film_mul.weight" not in state:
        raise WeightsFormatError(f"{path}: not an original CLIPSeg decoder state dict (no 'film_mul.weight'); "
                                 "expected rd64-uni.pth, rd64-uni-refined.pth or rd16-uni.pth")
    state = {k: v for k, v in state.items() if not k.startswith("clip_model.")}  # some files carry CLIP too
    if not isinstance(backbone, ClipBackbone):
        backbone = load_backbone(backbone or "ViT-B/16", device=device)
    return _model_from_hf_decoder(original_to_hf_decoder(state), backbone, extract_layers=extract_layers,
                                  num_heads=num_heads, source=str(path), device=device)
