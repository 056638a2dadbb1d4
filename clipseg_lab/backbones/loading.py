"""`load_backbone`: a frozen CLIP from a name, a Hugging Face directory, an OpenAI `.pt`, or `tiny-random`."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from clipseg_lab.backbones.clip_backbone import CLIP_MEAN, CLIP_STD, ClipBackbone
from clipseg_lab.backbones.convert import openai_config, openai_to_hf
from clipseg_lab.backbones.names import TINY_RANDOM, TINY_RANDOM_SEED, looks_like_path, lookup, unknown_backbone_message
from clipseg_lab.backbones.weights import rehearsal_note, resolve_weights
from clipseg_lab.errors import UnknownNameError, WeightsFormatError

log = logging.getLogger(__name__)



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
        try:
            part = (load_file(str(f)) if f.suffix == ".safetensors"
                    else torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:  # safetensors' and torch.load's errors for a damaged file have no common base
            raise WeightsFormatError(f"{f}: not a readable weight file ({type(exc).__name__}: {str(exc)[:200]}); "
                                     "download it again") from exc
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise WeightsFormatError(f"{f}: holds a {type(part).__name__}, not a state dict of tensors")
        state.update(part)
    return state


def clip_from_clipseg(config: dict, state: dict[str, torch.Tensor], source: str) -> CLIPModel:
    """The CLIP inside a Hugging Face CLIPSeg model (its `clip.*` weights, same names as CLIPModel's)."""
    clip_config = CLIPConfig(text_config=config.get("text_config") or {},
                             vision_config=config.get("vision_config") or {},
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
        try:
            model = CLIPModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
        except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:  # a damaged weight file
            raise WeightsFormatError(f"{path}: its weights could not be read as a CLIP model ({type(exc).__name__}: "
                                     f"{str(exc)[:200]}); download the directory again") from exc
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
    """The state dict of an OpenAI CLIP file: a TorchScript archive (the release) or a plain state dict.

    Both are read as data only: a TorchScript archive's tensors by `read_torchscript_state_dict` (its code is
    never loaded), a state dict by `torch.load(weights_only=True)`."""
    is_jit = False
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                is_jit = any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise WeightsFormatError(f"{path}: could not be read as an OpenAI CLIP checkpoint ({exc})") from exc
    if is_jit:
        return read_torchscript_state_dict(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load's errors for a file that is not a state dict have no common base
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


# -- TorchScript archives as data ----------------------------------------------------------------------------------
# OpenAI's CLIP .pt files are TorchScript archives: a zip with `<prefix>/data.pkl` (the module tree, pickled: objects
# of `__torch__.*` classes whose attributes are tensors and submodules), `<prefix>/data/<key>` (the raw bytes of each
# tensor storage) and `<prefix>/code/` (the modules' TorchScript source, which declares each class's
# `__parameters__` and `__buffers__`). `torch.jit.load` would compile and run that code; here the pickle is read by
# an unpickler that admits torch's tensor rebuild functions, storage type names and OrderedDict only (every
# `__torch__.*` class becomes an inert attribute holder), the storages are read from the zip as bytes, and the
# code is only searched, as text, for the parameter and buffer names.

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


class _ScriptObject:
    """What a `__torch__.*` class of a TorchScript pickle becomes: its attributes, nothing else."""

    qualified_name = ""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualified_name}: state of type {type(state).__name__}, not a "
                                         "module's attributes")
        self.__dict__["attributes"] = state


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: torch.dtype


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`'s job, on a storage this module read itself."""
    if not isinstance(storage, torch.Tensor):  # storages come back from persistent_load as flat tensors
        raise pickle.UnpicklingError("a tensor without a storage")
    tensor = torch.empty((0,), dtype=storage.dtype)
    tensor.set_(storage.untyped_storage(), int(storage_offset), tuple(int(s) for s in size),
                tuple(int(s) for s in stride))
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter that is not a tensor")
    return data


class _TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):  # every global the pickle names comes through here
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused the global {module}.{name}: a TorchScript archive's data.pkl names "
                                     "only module classes (__torch__.*), tensors and storages")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if key not in self.storages:
            try:
                data = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"the storage data/{key} is missing from the archive") from None
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(data) != numel * itemsize:
                raise pickle.UnpicklingError(f"the storage data/{key} holds {len(data)} bytes, "
                                             f"not {numel} x {itemsize}")
            flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
            self.storages[key] = flat.view(kind.dtype) if numel else torch.empty(0, dtype=kind.dtype)
        return self.storages[key]


def _declared_names(archive: zipfile.ZipFile, prefix: str, qualified: str) -> list[str] | None:
    """The parameter and buffer names a TorchScript class declares in its source, read as text; None if not found."""
    module, _, name = qualified.rpartition(".")
    source = f"{prefix}code/{module.replace('.', '/')}.py"
    try:
        text = archive.read(source).decode("utf-8", errors="replace")
    except KeyError:
        return None
    body = re.search(rf"^class {re.escape(name)}\(.*?\):\n((?:[ \t]+.*\n?)*)", text, re.MULTILINE)
    if body is None:
        return None
    names = []
    for field in ("__parameters__", "__buffers__"):
        declared = re.search(rf"^\s+{field} = \[(.*?)\]", body.group(1), re.MULTILINE)
        if declared is None:
            return None
        names += re.findall(r'"([^"]+)"', declared.group(1))
    return names


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict (dotted parameter and buffer names, as `torch.jit.load(path).state_dict()` gives) of a
    TorchScript archive, read as data: no TorchScript is loaded and no global outside torch's tensor rebuilding is
    admitted; anything else is one `WeightsFormatError` naming the file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise pickle.UnpicklingError("no <archive>/data.pkl (not a TorchScript archive)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
                raise pickle.UnpicklingError("big-endian tensors are not supported")
            with archive.open(pickles[0]) as f:
                unpickler = _TorchScriptUnpickler(f, archive, prefix)
                root = unpickler.load()
            if not isinstance(root, _ScriptObject):
                raise pickle.UnpicklingError(f"data.pkl holds a {type(root).__name__}, not a module")
            declared = {q: _declared_names(archive, prefix, q) for q in unpickler.classes}
    except (pickle.UnpicklingError, zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, TypeError,
            AttributeError, IndexError, KeyError, MemoryError, RecursionError) as exc:
        raise WeightsFormatError(f"{path}: refused as a TorchScript archive of tensors ({type(exc).__name__}: "
                                 f"{str(exc)[:300]}). Expected an OpenAI CLIP ViT-*.pt as `clip.load` downloads "
                                 "it, or a saved CLIP state dict.") from exc
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(obj: _ScriptObject, prefix: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        attributes = obj.__dict__.get("attributes", {})
        names = declared.get(obj.qualified_name)
        tensors = (names if names is not None else list(attributes))  # state_dict order: parameters, buffers
        for name in tensors:
            if isinstance(attributes.get(name), torch.Tensor):
                state[prefix + name] = attributes[name]
        for name, value in attributes.items():  # then the submodules, in order
            if isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    if not state:
        raise WeightsFormatError(f"{path}: a TorchScript archive without tensors")
    return state
