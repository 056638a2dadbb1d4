"""`load_backbone`: a frozen CLIP from a name, a Hugging Face directory, an OpenAI `.pt`, or `tiny-random`."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from clipseg_lab.backbones.clip_backbone import CLIP_MEAN, CLIP_STD, ClipBackbone
from clipseg_lab.backbones.convert import openai_config, openai_to_hf
from clipseg_lab.backbones.names import TINY_RANDOM, known_names, looks_like_path, lookup, unknown_backbone_message
from clipseg_lab.backbones.weights import ResolvedWeights, rehearsal_note, resolve_weights
from clipseg_lab.errors import UnknownNameError, WeightsFormatError

log = logging.getLogger(__name__)

TINY_RANDOM_SEED = 0


def tiny_random_config() -> CLIPConfig:
    """ViT-B/16's layout (12 blocks, patch 16, 224 px, the real 49,408-token vocabulary), 64 wide."""
    return CLIPConfig(
        projection_dim=64,
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=12, num_attention_heads=4,
                           image_size=224, patch_size=16, hidden_act="quick_gelu"),
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=12,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407),
    )


def default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:  # half precision on accelerators, full precision on the CPU
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_backbone(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                  dtype: torch.dtype | str | None = None, *, allow_download: bool = True) -> ClipBackbone:
    """A frozen CLIP ViT ready for `encode_text` / `encode_image`.

    `name_or_path`: an alias ("ViT-B/16", "ViT-L/14@336px", ...), a hub id ("openai/clip-vit-base-patch16"),
    a local Hugging Face CLIP directory, an OpenAI CLIP `.pt` (JIT archive or state dict), or "tiny-random"
    (a small seeded CLIP with random weights, for tests; marked `trained=False`).
    Weights are looked for as `resolve_weights` describes; missing weights raise `WeightsNotFoundError`.
    Default device: CUDA when present; default dtype: float16 on CUDA, float32 on the CPU.
    """
    device = default_device(device)
    dtype = default_dtype(dtype, device)
    text = str(name_or_path)
    if text == TINY_RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_RANDOM_SEED)
            model = CLIPModel(tiny_random_config())
        backbone = ClipBackbone(model, name=TINY_RANDOM, source=f"random init, seed {TINY_RANDOM_SEED}", trained=False)
        return backbone.to(device=device, dtype=dtype)

    check_backbone_name(text)
    resolved = resolve_weights(text, allow_download=allow_download)
    if resolved.kind == "hf_dir":
        model, mean, std = _load_hf_dir(resolved.path, dtype)
    else:
        model, mean, std = _load_openai_file(resolved.path), CLIP_MEAN, CLIP_STD
    backbone = backbone_from_weights(model, resolved.name, resolved.path, mean, std)
    log.info("loaded backbone %s from %s", resolved.name, resolved.path)
    return backbone.to(device=device, dtype=dtype)


def backbone_from_weights(model: CLIPModel, name: str, path: Path, mean=CLIP_MEAN, std=CLIP_STD) -> ClipBackbone:
    """A `ClipBackbone` of the weights read from `path`: trained, unless the rehearsal wrote them (its marker)."""
    note = rehearsal_note(path)
    backbone = ClipBackbone(model, name=name, source=str(path), trained=note is None, mean=mean, std=std)
    backbone.untrained_note = note or ""
    return backbone


def check_backbone_name(name: str) -> None:
    """Raise `UnknownNameError` (with the closest known name) for a backbone name that can be nothing else:
    not a path that exists, not a known alias, and not shaped like a hub id."""
    text = str(name)
    if text == TINY_RANDOM or Path(text).expanduser().exists() or lookup(text) is not None:
        return
    if _is_unknown_name(text):
        raise UnknownNameError(unknown_backbone_message(text))


def _is_unknown_name(text: str) -> bool:
    """A bare word or an OpenAI-style name that matched no alias (hub ids 'org/name' are looked up)."""
    if looks_like_path(text):
        return False
    return text.count("/") != 1 or text.upper().startswith(("VIT-", "RN"))


def read_hf_config(path: Path) -> dict:
    config_file = path / "config.json"
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsFormatError(f"{config_file}: unreadable config ({exc})") from exc


def read_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All weights of a Hugging Face model directory (safetensors, sharded or not; else pytorch_model.bin)."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise WeightsFormatError(f"{path}: config.json but no weights (model.safetensors or pytorch_model.bin).")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)) if f.suffix == ".safetensors"
                     else torch.load(f, map_location="cpu", weights_only=True))
    return state


def clip_from_clipseg(config: dict, state: dict[str, torch.Tensor], source: str) -> CLIPModel:
    """The CLIP inside a Hugging Face CLIPSeg model (its `clip.*` weights, same names as CLIPModel's)."""
    clip_config = CLIPConfig(text_config=config.get("text_config") or {}, vision_config=config.get("vision_config") or {},
                             projection_dim=config.get("projection_dim", 512))
    clip_state = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
    return _clip_model(clip_config, clip_state, f"{source}: the CLIP weights of this CLIPSeg model")


def _clip_model(config: CLIPConfig, state: dict[str, torch.Tensor], what: str) -> CLIPModel:
    """A CLIPModel of `config` holding exactly `state` (float32), or an error naming the keys that do not fit."""
    model = CLIPModel(config)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    # position_ids is a buffer, not a weight: files saved by transformers 4.2x (the hub's CLIP and CLIPSeg
    # repositories) still carry it, newer ones do not
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise WeightsFormatError(f"{what} do not fit CLIPModel (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


def _load_hf_dir(path: Path, dtype: torch.dtype) -> tuple[CLIPModel, tuple, tuple]:
    config = read_hf_config(path)
    model_type = config.get("model_type")
    if model_type == "clip":
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise WeightsFormatError(f"{path}: config.json but no weights (model.safetensors or pytorch_model.bin).")
        model = CLIPModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    elif model_type == "clipseg":  # a CLIPSeg model carries its CLIP: use that one
        model = clip_from_clipseg(config, read_hf_state_dict(path), str(path))
    else:
        raise WeightsFormatError(
            f"{path}: config.json has model_type {model_type!r}; expected a CLIP model directory "
            "(model_type 'clip', as CLIPModel.save_pretrained writes it, e.g. openai/clip-vit-base-patch16) "
            "or a CLIPSeg one (model_type 'clipseg', e.g. CIDAS/clipseg-rd64-refined).")
    mean, std = CLIP_MEAN, CLIP_STD
    pre = path / "preprocessor_config.json"
    # a CLIPSeg directory's preprocessor config is its decoder's (ImageNet statistics): its CLIP, read as a
    # backbone, keeps CLIP's own (the model loaders give the decoder the directory's, models.clipseg_weights)
    if pre.is_file() and model_type == "clip":
        cfg = json.loads(pre.read_text())
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return model, mean, std


def read_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an OpenAI CLIP file: a TorchScript archive (the release) or a plain state dict."""
    is_jit = False
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            is_jit = any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    try:
        if is_jit:
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsFormatError(f"{path}: could not be read as an OpenAI CLIP checkpoint ({exc}). Expected a "
                                 "ViT-*.pt file as `clip.load` downloads it, or a saved CLIP state dict.") from exc
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise WeightsFormatError(f"{path}: holds a {type(state_dict).__name__}, not a CLIP state dict.")
    return state_dict


def _load_openai_file(path: Path) -> CLIPModel:
    state_dict = read_openai_state_dict(path)
    config = openai_config(state_dict, source=str(path))
    return _clip_model(config, openai_to_hf(state_dict), f"{path}: the converted weights")
