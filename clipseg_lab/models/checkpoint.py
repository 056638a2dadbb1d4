"""clipseg-lab checkpoints: one `.safetensors` file holding the decoder weights, with the model name, its
config and the backbone it was trained on in the file's metadata. The backbone itself is not stored: it is
loaded by name when the checkpoint is read (so a checkpoint is a few MB, not a CLIP)."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from clipseg_lab.backbones.clip_backbone import ClipBackbone, Normalization
from clipseg_lab.backbones.loading import load_backbone
from clipseg_lab.errors import UnknownNameError, WeightsFormatError
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
        # bytes written by Python: safetensors' own save_file creates its file mode 0600, unreadable to collaborators
        tmp.write_bytes(save(state, metadata={"clipseg_lab": json.dumps(meta, default=str)}))
    return path


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's clipseg-lab metadata, checked for its shape (JSON, `model` a name, `config` a mapping, ...):
    anything else is one `WeightsFormatError` naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("clipseg_lab")
    except (SafetensorError, OSError) as exc:
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta is None:
        raise WeightsFormatError(f"{path}: a safetensors file without clipseg-lab metadata; expected a checkpoint "
                                 "written by clipseg_lab.save_model (or `clipseg-lab train`).")
    try:
        meta = json.loads(meta)
    except ValueError as exc:  # json.JSONDecodeError
        raise WeightsFormatError(f"{path}: its clipseg-lab metadata is not JSON ({exc})") from exc
    except RecursionError as exc:
        raise WeightsFormatError(f"{path}: its clipseg-lab metadata is nested too deeply to be a checkpoint's") from exc
    _check_meta(path, meta)
    return meta


_META_TYPES: dict[str, tuple[type, ...]] = {  # key: the JSON types it may have (None where optional)
    "format": (str,), "input_size": (int, type(None)), "backbone": (dict, type(None)), "info": (dict,),
    "preprocessing": (dict,), "visual_prompt_recipe": (str,),
}


def _check_meta(path: Path, meta: Any) -> None:
    how = "expected the metadata clipseg_lab.save_model writes"
    if not isinstance(meta, dict):
        raise WeightsFormatError(f"{path}: its clipseg-lab metadata is a JSON {type(meta).__name__}, not an object; "
                                 f"{how}")
    absent = [k for k in ("model", "config") if k not in meta]
    if absent:
        raise WeightsFormatError(f"{path}: its clipseg-lab metadata lacks {' and '.join(map(repr, absent))}; {how} "
                                 "(the model preset and its config)")
    if not isinstance(meta["model"], str):
        raise WeightsFormatError(f"{path}: metadata 'model' is {meta['model']!r:.80}, not a model name")
    if not isinstance(meta["config"], dict):
        raise WeightsFormatError(f"{path}: metadata 'config' is a {type(meta['config']).__name__}, not an object")
    for key, allowed in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], allowed) or isinstance(meta[key], bool)):
            raise WeightsFormatError(f"{path}: metadata {key!r} is {meta[key]!r:.80}; {how}")
    if meta.get("format", FORMAT) != FORMAT:
        raise WeightsFormatError(f"{path}: checkpoint format {meta['format']!r:.80}; this clipseg-lab reads {FORMAT!r}")
    if meta.get("backbone") is not None and not isinstance(meta["backbone"].get("name"), str):
        raise WeightsFormatError(f"{path}: metadata 'backbone' has no name: {meta['backbone']!r:.80}")
    if isinstance(meta.get("input_size"), int) and meta["input_size"] <= 0:
        raise WeightsFormatError(f"{path}: metadata input_size {meta['input_size']} is not a positive size")


def _fits_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a config field of type `hint` (tuples are JSON lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits_type(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits_type(v, a) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        return any(_fits_type(value, a) for a in args)
    return True  # a type this check does not know: the config class's own checks judge it


def _hint_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_config(path: Path, model: str, config: dict[str, Any], config_cls: type) -> None:
    """The metadata's config against the preset's config dataclass: known keys, values of the right types."""
    hints = typing.get_type_hints(config_cls)
    unknown = sorted(set(config) - set(hints))
    if unknown:
        raise WeightsFormatError(f"{path}: metadata config key(s) {', '.join(map(repr, unknown))} are not options "
                                 f"of {model} ({config_cls.__name__}: {', '.join(hints)})")
    for key, value in config.items():
        if not _fits_type(value, hints[key]):
            raise WeightsFormatError(f"{path}: metadata config {key} is {value!r:.80} ({type(value).__name__}); "
                                     f"{model} expects {_hint_text(hints[key])}")


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, read from its header (no tensor is loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from exc


def _count_limits(config: dict[str, Any], tensors: int) -> list[str]:
    """Config values that set how many modules are built (layers, levels): each module stores at least one tensor,
    so none may exceed the file's tensor count (a meta-device build of a million layers would still take minutes)."""
    too_many = [f"{k} has {len(v)} entries" for k, v in config.items()
                if isinstance(v, (list, tuple)) and len(v) > tensors]
    too_many += [f"{k} {v}" for k, v in config.items() if k == "num_layers" and isinstance(v, int) and v > tensors]
    return too_many


def _expected_shapes(preset, config, backbone: ClipBackbone | None) -> dict[str, tuple[int, ...]]:
    """The shapes of the trainable state dict `build_model` would make, computed on the meta device (no memory)."""
    from clipseg_lab.models.clip_unet import ClipUNet
    from clipseg_lab.models.registry import FAMILIES, SEMANTIC_FAMILIES

    with torch.device("meta"):
        if preset.family in SEMANTIC_FAMILIES:
            state = ClipUNet(config, backbone if config.use_clip else None, name=preset.name).trainable_state_dict()
        else:
            decoder = FAMILIES[preset.family][1](config, backbone_width=backbone.width, cond_dim=backbone.embed_dim,
                                                 patch_size=backbone.patch_size)
            state = decoder.state_dict()
    return {k: tuple(v.shape) for k, v in state.items()}


def _differences(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> list[str]:
    wrong = [f"{k} stored {list(stored[k])} vs expected {list(v)}" for k, v in expected.items()
             if k in stored and stored[k] != v]
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    return wrong + ([f"missing keys {missing[:8]}"] if missing else []) \
        + ([f"unexpected keys {unexpected[:8]}"] if unexpected else [])


_CONFIG_ERRORS = (ValueError, TypeError, ZeroDivisionError, OverflowError)  # what a config's __post_init__ raises


def _build_config(path: Path, preset, fields: dict[str, Any]):
    from clipseg_lab.models.registry import FAMILIES

    try:
        return FAMILIES[preset.family][0](**{**preset.config, **fields})
    except _CONFIG_ERRORS as exc:
        raise WeightsFormatError(f"{path}: metadata config does not make a {preset.name} ({exc})") from exc


def _shapes_or_none(preset, config, backbone) -> dict[str, tuple[int, ...]] | None:
    try:
        return _expected_shapes(preset, config, backbone)
    except (*_CONFIG_ERRORS, RuntimeError):  # sizes no module can have (negative, too large for an int64)
        return None


def _explain_misfit(path: Path, meta: dict[str, Any], preset, fields: dict[str, Any], backbone,
                    stored: dict[str, tuple[int, ...]], problems: list[str], given_backbone: str | None) -> str:
    """One message: what does not fit, and what the tensors do fit (another value of a config key, another preset,
    the backbone the checkpoint was trained on)."""
    from clipseg_lab.models.registry import PRESETS

    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    trained_on = (meta.get("backbone") or {}).get("name")
    if given_backbone is not None and trained_on is not None and given_backbone != trained_on:
        return (f"{path}: trained on backbone {trained_on!r}, whose sizes do not fit {backbone.name} (checkpoint vs "
                f"model: {shown}); load it with the backbone it was trained on")
    defaults = dataclasses.asdict(_build_config(path, preset, {}))
    changed = {k: v for k, v in fields.items() if k in defaults and _plain(v) != _plain(defaults[k])}
    hints = []
    for key, value in changed.items():  # the key whose stored value the tensors contradict
        trial = _build_config_or_none(preset, {**fields, key: defaults[key]})
        if trial is not None and _shapes_or_none(preset, trial, backbone) == stored:
            hints.append(f"metadata config {key}={_plain(value)!r:.40} does not fit the tensors, which fit "
                         f"{key}={_plain(defaults[key])!r}")
    fitting = []
    for other in PRESETS.values():
        if other.family != preset.family or other.name == preset.name:
            continue
        trial = _build_config_or_none(other, {k: v for k, v in fields.items() if k in ("input_size", "num_classes")})
        if trial is not None and _shapes_or_none(other, trial, backbone) == stored:
            fitting.append(other.name)
    if fitting:
        hints.append(f"the metadata names {meta['model']}, but the tensors are those of {' / '.join(fitting)}")
    described = f" with {', '.join(f'{k}={_plain(v)!r:.40}' for k, v in changed.items())}" if changed else ""
    return (f"{path}: the stored tensors do not fit the model its metadata describes ({meta['model']}{described} on "
            f"{backbone.name if backbone is not None else 'no backbone'}): {shown}"
            + (f". {'; '.join(hints)}" if hints else "") + ". Refused before building the model.")


def _build_config_or_none(preset, fields: dict[str, Any]):
    from clipseg_lab.models.registry import FAMILIES

    try:
        return FAMILIES[preset.family][0](**{**preset.config, **fields})
    except _CONFIG_ERRORS:
        return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_checkpoint(path: Path, backbone: ClipBackbone | str | None = None,
                    device: str | torch.device | None = None) -> TextPromptedModel:
    """Rebuild a model from a clipseg-lab checkpoint; the backbone is loaded by its stored name unless given.

    The file is validated before any decoder is built: its metadata against the preset's config (known keys, right
    types), then the stored tensors' shapes (read from the header) against those the metadata's model would have
    (computed on the meta device). Whatever does not fit is one `WeightsFormatError` naming the key, the stored
    shape and the expected one, so a file cannot make the loader allocate what its tensors do not hold."""
    from clipseg_lab.models.registry import FAMILIES, PRESETS, SEMANTIC_FAMILIES, build_model

    meta = read_checkpoint_meta(path)
    if meta["model"] not in PRESETS:
        from clipseg_lab.models.registry import get_preset

        try:
            get_preset(meta["model"])
        except UnknownNameError as exc:
            raise WeightsFormatError(f"{path}: its metadata names the model {meta['model']!r:.80}, which this "
                                     f"clipseg-lab does not know ({exc})") from exc
    preset = PRESETS[meta["model"]]
    config_cls = FAMILIES[preset.family][0]
    fields = dict(meta["config"])
    _check_config(path, meta["model"], fields, config_cls)
    input_size = fields.pop("input_size", None) or meta.get("input_size")  # a ClipUNetConfig field, too
    stored = stored_shapes(path)
    too_many = _count_limits(fields, len(stored))
    if too_many:
        raise WeightsFormatError(f"{path}: metadata config {', '.join(too_many)}, more than the {len(stored)} tensors "
                                 "the file holds could fill; refused before building the model")
    semantic = preset.family in SEMANTIC_FAMILIES
    config = _build_config(path, preset, {**fields, **({"input_size": input_size} if semantic and input_size else {})})

    given = backbone.name if isinstance(backbone, ClipBackbone) else backbone
    if backbone is None and meta.get("backbone"):
        backbone = meta["backbone"]["name"]
    needs_backbone = not semantic or config.use_clip
    if not needs_backbone:
        backbone = None
    elif not isinstance(backbone, ClipBackbone):
        backbone = load_backbone(backbone or "ViT-B/16", device=device)
    if not semantic:  # the layers read must exist (named first: it is what a smaller backbone gets wrong)
        for layer in config.extract_layers:
            if not 0 <= layer < backbone.num_layers:
                raise WeightsFormatError(f"{path}: {meta['model']} reads CLIP block {layer}, but {backbone.name} has "
                                         f"blocks 0..{backbone.num_layers - 1}")
    expected = _shapes_or_none(preset, config, backbone)
    if expected is None:
        raise WeightsFormatError(f"{path}: metadata config {meta['config']!r:.200} makes no {meta['model']} "
                                 f"on {backbone.name if backbone is not None else 'no backbone'}")
    problems = _differences(stored, expected)
    if problems:
        raise WeightsFormatError(_explain_misfit(path, meta, preset, fields, backbone, stored, problems,
                                                 str(given) if given is not None else None))

    try:
        model = build_model(meta["model"], backbone=backbone, device=device, input_size=input_size, **fields)
    except ValueError as exc:  # e.g. an input size that is no multiple of the backbone's patch
        raise WeightsFormatError(f"{path}: {exc}") from exc
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
    missing, unexpected = model.load_trainable_state_dict(state)
    if missing or unexpected:
        raise WeightsFormatError(f"{path}: weights do not fit {meta['model']}: missing keys {sorted(missing)}, "
                                 f"unexpected keys {sorted(unexpected)}")
    # a run's best/last file is named after its run folder: every run has a "best.safetensors"
    shown = (f"{path.parents[1].name}/{path.name}" if path.stem in ("best", "last") and len(path.parents) > 1
             else path.name)
    if isinstance(model, TextPromptedModel):
        if "preprocessing" in meta:
            try:
                model.normalization = Normalization.from_dict(meta["preprocessing"], f"checkpoint {path.name}")
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsFormatError(f"{path}: metadata preprocessing {meta['preprocessing']!r:.120} is not "
                                         f"three means and three positive stds ({exc})") from exc
        else:  # written before checkpoints recorded it: trained with its backbone's own statistics
            model.normalization = model.backbone.normalization
        model.visual_prompt_recipe = meta.get("visual_prompt_recipe", "clipseg-lab")
    model.provenance.decoder = f"checkpoint {shown}"
    model.provenance.extra = meta.get("info", {})
    return model
