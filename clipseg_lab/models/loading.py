"""`load_model`: any segmentation weights a user has, by their format."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipseg_lab.backbones.clip_backbone import ClipBackbone
from clipseg_lab.backbones.loading import read_hf_config
from clipseg_lab.backbones.weights import ENV_WEIGHTS, resolve_weights
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
    root = os.environ.get(ENV_WEIGHTS)
    if not path.exists() and root and not path.is_absolute() and (Path(root).expanduser() / path).exists():
        path = Path(root).expanduser() / path  # e.g. rd64-uni.pth kept in $CLIPSEG_LAB_WEIGHTS
    if not path.exists():
        if path.suffix in (".safetensors", ".pth", ".pt", ".bin") or text.count("/") != 1:
            where = f" (nor in ${ENV_WEIGHTS}={root})" if root and not path.is_absolute() else ""
            raise WeightsNotFoundError(f"{path}: no such checkpoint file{where}. load_model reads "
                                       + "; ".join(FORMATS) + ".")
        # a hub id, e.g. CIDAS/clipseg-rd64-refined: $CLIPSEG_LAB_WEIGHTS, the HF cache, then the hub
        path = resolve_weights(text, allow_download=allow_download, what="checkpoint").path
    model = _load_by_format(path, text, backbone, device)
    model.checkpoint = str(path)  # the file or folder read (a hub id resolved to its snapshot), e.g. for resume
    return model


def _load_by_format(path: Path, text: str, backbone, device) -> TextPromptedModel:
    if path.is_file() and path.suffix == ".safetensors":
        return load_checkpoint(path, backbone=backbone, device=device)
    if path.is_file():
        return load_original_clipseg(path, backbone=backbone, device=device)
    if path.is_dir() and (path / "config.json").is_file():
        model_type = read_hf_config(path).get("model_type")
        if model_type == "clipseg":
            return load_hf_clipseg(path, device=device, name=text if not Path(text).expanduser().exists() else None)
        raise WeightsFormatError(f"{path}: a Hugging Face directory of model_type {model_type!r}, not 'clipseg'. "
                                 "For a CLIP backbone use load_backbone; load_model reads " + "; ".join(FORMATS) + ".")
    raise WeightsFormatError(f"{path}: not a model. load_model reads " + "; ".join(FORMATS) + ".")


# The released CLIPSeg decoder users get when they name no checkpoint (transformers' own default CLIPSeg).
DEFAULT_CHECKPOINT = "CIDAS/clipseg-rd64-refined"
RELEASED_BACKBONE = "ViT-B/16"  # the CLIP every released CLIPSeg decoder was trained on


def load_default_model(checkpoint: str | os.PathLike | None = None, backbone: ClipBackbone | str | None = None,
                       preset: str = "clipseg-rd64", device: str | torch.device | None = None, *,
                       allow_download: bool = True) -> TextPromptedModel:
    """The model a user means by "segment this": what `segment`, `Segmenter.load` and the explorer call.

    - a `checkpoint`: `load_model(checkpoint, backbone)`;
    - no checkpoint and backbone `tiny-random`: the untrained `preset` on it (smoke runs; labelled untrained);
    - no checkpoint otherwise: the released `DEFAULT_CHECKPOINT`, found like a backbone (explicit path,
      `$CLIPSEG_LAB_WEIGHTS`, the Hugging Face cache, the hub unless offline). It was trained on CLIP ViT-B/16:
      any other backbone is one clear error, never an untrained decoder on it.
    """
    from clipseg_lab.backbones.names import TINY_RANDOM, lookup
    from clipseg_lab.errors import ConfigError
    from clipseg_lab.models.registry import build_model

    if checkpoint is not None:
        model = load_model(checkpoint, backbone=backbone, device=device, allow_download=allow_download)
        if not isinstance(model, TextPromptedModel):
            raise ConfigError(f"{checkpoint}: holds {model.name}, a multi-class model that takes no text prompts; "
                              "segmenting by prompt needs a text-prompted decoder (e.g. clipseg-rd64). Score it with "
                              "`clipseg-lab evaluate --checkpoint ...` instead")
        return model
    name = backbone.name if isinstance(backbone, ClipBackbone) else backbone
    if isinstance(backbone, str):
        from clipseg_lab.backbones.loading import check_backbone_name

        check_backbone_name(backbone)  # a misspelling is named as one, with the closest known name
    if name == TINY_RANDOM:
        return build_model(preset, backbone=backbone, device=device)
    is_b16 = (lookup(str(name)) is not None and lookup(str(name)).alias == RELEASED_BACKBONE) or (
        isinstance(backbone, ClipBackbone)  # a ViT-B/16 loaded from a local folder or .pt: judged by its shape
        and (backbone.width, backbone.patch_size, backbone.num_layers, backbone.embed_dim) == (768, 16, 12, 512))
    if name is not None and not is_b16:
        raise ConfigError(f"backbone {name!r} without a checkpoint: the released CLIPSeg decoder "
                          f"({DEFAULT_CHECKPOINT}) was trained on CLIP {RELEASED_BACKBONE} only. Pass a checkpoint "
                          f"trained on {name} (--checkpoint), drop the backbone to use the released decoder, or ask "
                          "for the backbone 'tiny-random' for an untrained smoke model.")
    return load_model(DEFAULT_CHECKPOINT, device=device, allow_download=allow_download)
