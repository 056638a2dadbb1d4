"""clipseg-lab checkpoints: one `.safetensors` file holding the decoder weights, with the model name, its
config and the backbone it was trained on in the file's metadata. The backbone itself is not stored: it is
loaded by name when the checkpoint is read (so a checkpoint is a few MB, not a CLIP)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from clipseg_lab.backbones.clip_backbone import ClipBackbone, Normalization
from clipseg_lab.backbones.loading import load_backbone
from clipseg_lab.errors import WeightsFormatError
from clipseg_lab.files import atomic_path
from clipseg_lab.models.base import TextPromptedModel

FORMAT = "clipseg_lab.checkpoint/1"


def save_model(model: TextPromptedModel, path: str | os.PathLike, **info: Any) -> Path:
    """Write the decoder weights and everything needed to rebuild the model; `info` is stored too."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "model": model.name,
        "config": dataclasses.asdict(model.config),
        "input_size": model.input_size,
        "backbone": ({"name": model.backbone.name, "trained": model.backbone.trained} if model.backbone is not None
                     else None),
        "info": info,
    }
    if isinstance(model, TextPromptedModel):  # what training normalised with travels with the weights
        meta["preprocessing"] = model.normalization.as_dict()
        meta["visual_prompt_recipe"] = model.visual_prompt_recipe
    state = {k: v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"clipseg_lab": json.dumps(meta, default=str)})
    return path


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("clipseg_lab")
    except (SafetensorError, OSError) as exc:
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta is None:
        raise WeightsFormatError(f"{path}: a safetensors file without clipseg-lab metadata; expected a checkpoint "
                                 "written by clipseg_lab.save_model (or `clipseg-lab train`).")
    return json.loads(meta)


def load_checkpoint(path: Path, backbone: ClipBackbone | str | None = None,
                    device: str | torch.device | None = None) -> TextPromptedModel:
    """Rebuild a model from a clipseg-lab checkpoint; the backbone is loaded by its stored name unless given."""
    from clipseg_lab.models.registry import build_model

    meta = read_checkpoint_meta(path)
    if backbone is None and meta.get("backbone"):
        backbone = meta["backbone"]["name"]
    config = dict(meta["config"])
    input_size = config.pop("input_size", None) or meta.get("input_size")  # a ClipUNetConfig field, too
    model = build_model(meta["model"], backbone=backbone, device=device, input_size=input_size, **config)
    state = load_file(str(path))
    own = model.trainable_state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise WeightsFormatError(f"{path}: trained on backbone {meta['backbone']['name']!r}, whose sizes do not fit "
                                 f"{model.backbone.name} (checkpoint vs model: {', '.join(wrong[:3])}); load it with "
                                 "the backbone it was trained on")
    missing, unexpected = model.load_trainable_state_dict(state)
    if missing or unexpected:
        raise WeightsFormatError(f"{path}: weights do not fit {meta['model']}: missing keys {sorted(missing)}, "
                                 f"unexpected keys {sorted(unexpected)}")
    # a run's best/last file is named after its run folder: every run has a "best.safetensors"
    shown = f"{path.parents[1].name}/{path.name}" if path.stem in ("best", "last") and len(path.parents) > 1 else path.name
    if isinstance(model, TextPromptedModel):
        if "preprocessing" in meta:
            model.normalization = Normalization.from_dict(meta["preprocessing"], f"checkpoint {path.name}")
        else:  # written before checkpoints recorded it: trained with its backbone's own statistics
            model.normalization = model.backbone.normalization
        model.visual_prompt_recipe = meta.get("visual_prompt_recipe", "clipseg-lab")
    model.provenance.decoder = f"checkpoint {shown}"
    model.provenance.extra = meta.get("info", {})
    return model
