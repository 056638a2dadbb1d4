"""`load_model`: any segmentation weights a user has, by their format."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipseg_lab.backbones.clip_backbone import ClipBackbone
from clipseg_lab.backbones.loading import read_hf_config
from clipseg_lab.backbones.weights import resolve_weights
from clipseg_lab.errors import WeightsFormatError, WeightsNotFoundError
from clipseg_lab.models.base import TextPromptedModel
from clipseg_lab.models.checkpoint import load_checkpoint
from clipseg_lab.models.clipseg_weights import load_hf_clipseg, load_original_clipseg

FORMATS = ("a clipseg-lab checkpoint (.safetensors from save_model / clipseg-lab train)",
           "a Hugging Face CLIPSeg directory or hub id (e.g. CIDAS/clipseg-rd64-refined)",
           "an original CLIPSeg decoder state dict (rd64-uni.pth, rd64-uni-refined.pth, rd16-uni.pth)")


def load_model(path: str | os.PathLike, backbone: ClipBackbone | str | None = None,
               device: str | torch.device | None = None, *, allow_download: bool = True) -> TextPromptedModel:
    """A ready model from one of `FORMATS`, in eval mode, with its provenance filled in.

    `backbone`: for our checkpoints, overrides the stored backbone name; for original `.pth` decoders, the
    CLIP they run on (default ViT-B/16, the one they were trained with). A CLIPSeg directory brings its own.
    """
    text = str(path)
    path = Path(text).expanduser()
    if not path.exists():
        if path.suffix in (".safetensors", ".pth", ".pt", ".bin") or text.count("/") != 1:
            raise WeightsNotFoundError(f"{path}: no such model file. load_model reads " + "; ".join(FORMATS) + ".")
        path = resolve_weights(text, allow_download=allow_download).path  # a hub id, e.g. CIDAS/clipseg-rd64
    if path.is_file() and path.suffix == ".safetensors":
        return load_checkpoint(path, backbone=backbone, device=device)
    if path.is_file():
        return load_original_clipseg(path, backbone=backbone, device=device)
    if path.is_dir() and (path / "config.json").is_file():
        model_type = read_hf_config(path).get("model_type")
        if model_type == "clipseg":
            return load_hf_clipseg(path, device=device)
        raise WeightsFormatError(f"{path}: a Hugging Face directory of model_type {model_type!r}, not 'clipseg'. "
                                 "For a CLIP backbone use load_backbone; load_model reads " + "; ".join(FORMATS) + ".")
    raise WeightsFormatError(f"{path}: not a model. load_model reads " + "; ".join(FORMATS) + ".")
