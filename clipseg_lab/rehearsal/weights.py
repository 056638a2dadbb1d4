"""Seeded random weights of the real architectures, in the on-disk forms users download (the rehearsal's weights).

`build_weights(root)` writes, under `root`:

- `hf_home/hub/`: a Hugging Face cache in the hub's own layout (`models--<org>--<name>/blobs/<hash>`, `refs/main`,
  `snapshots/<revision>/<file>` as relative symlinks into `../../blobs/`) for `openai/clip-vit-base-patch16`,
  `openai/clip-vit-large-patch14` and `CIDAS/clipseg-rd64-refined`: the published configuration, processor and
  tokenizer files, and the weight file the published main revision has (`HUB_REPOS`);
- `weights/` (what `$CLIPSEG_LAB_WEIGHTS` points to): OpenAI's `ViT-B-16.pt` as the TorchScript archive `clip.load`
  downloads, the original CLIPSeg decoder `rd64-uni.pth`, and SAM's `sam_vit_h_4b8939.pth` / `sam_vit_b_01ec64.pth`.

Every file is written by the reference implementation's own code: transformers' `CLIPModel` /
`CLIPSegForImageSegmentation` and `save_pretrained`, the `clip` package's `CLIP` class, `convert_weights` and
`torch.jit.trace`, segment-anything's builders, and for `rd64-uni.pth` a key / shape list written here from
timojl/clipseg's `models/clipseg.py` (`original_decoder_shapes`), never this package's converters, which would then
only be tested against themselves.

`scale="real"` writes the real sizes (6.2 GB, about a minute on 2 cores; for `make rehearsal`); `scale="tiny"` the
same files with the same code at small widths (the real layer counts, patch sizes and vocabulary), for tests. SAM
is the exception: `load_sam` builds its model with segment-anything's fixed-size registry, so a narrower SAM could
not be loaded; at tiny scale both SAM files hold a real-size ViT-B SAM; load the ViT-H-named one with
`model_type="vit_b"`.

A rerun resumes: an item whose files are all present with the sizes recorded in `rehearsal-weights.json` is not
built again. Files appear atomically (written beside their place, then renamed).

    python -m clipseg_lab.rehearsal.weights ROOT [--scale tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipseg_lab.files import atomic_path, file_sha256, write_json

log = logging.getLogger(__name__)

SCALES = ("real", "tiny")
MANIFEST = "rehearsal-weights.json"
HF_HOME = "hf_home"
WEIGHTS = "weights"


@dataclass(frozen=True)
class HubRepo:
    weights_file: str  # the one PyTorch weight file of the main revision
    legacy_position_ids: bool  # the file carries `*.embeddings.position_ids` (see below)


# The three hub repositories as their published main revisions have them, as far as known; correct a line here if
# the hub says otherwise. openai/clip-vit-base-patch16's main revision ships pytorch_model.bin only (its
# model.safetensors lives in a PR branch); openai/clip-vit-large-patch14's has model.safetensors (transformers and
# our downloader take it before pytorch_model.bin); CIDAS/clipseg-rd64-refined's has pytorch_model.bin.
# All three were saved by transformers 4.2x, when `position_ids` was a persistent buffer of the embeddings, so their
# weights carry `text_model.embeddings.position_ids` / `vision_model.embeddings.position_ids` (`clip.` in front for
# CLIPSeg) that today's models report as unexpected keys.
HUB_REPOS: dict[str, HubRepo] = {
    "openai/clip-vit-base-patch16": HubRepo("pytorch_model.bin", legacy_position_ids=True),
    "openai/clip-vit-large-patch14": HubRepo("model.safetensors", legacy_position_ids=True),
    "CIDAS/clipseg-rd64-refined": HubRepo("pytorch_model.bin", legacy_position_ids=True),
}
CLIPSEG_ID = "CIDAS/clipseg-rd64-refined"


@dataclass(frozen=True)
class Tower:
    hidden: int
    intermediate: int
    layers: int
    heads: int


@dataclass(frozen=True)
class ClipSizes:
    projection: int
    text: Tower
    vision: Tower
    patch: int
    image: int = 224


# Published sizes (transformers' CLIP docs / the hub configs); tiny: the real layer counts, patches and vocabulary,
# narrow widths (heads of 64 channels, as OpenAI's CLIP has them)
CLIP_SIZES: dict[str, dict[str, ClipSizes]] = {
    "real": {
        "openai/clip-vit-base-patch16": ClipSizes(512, Tower(512, 2048, 12, 8), Tower(768, 3072, 12, 12), 16),
        "openai/clip-vit-large-patch14": ClipSizes(768, Tower(768, 3072, 12, 12), Tower(1024, 4096, 24, 16), 14),
    },
    "tiny": {
        "openai/clip-vit-base-patch16": ClipSizes(64, Tower(128, 512, 12, 2), Tower(128, 512, 12, 2), 16),
        "openai/clip-vit-large-patch14": ClipSizes(96, Tower(128, 512, 12, 2), Tower(192, 768, 24, 3), 14),
    },
}
CLIPSEG_BASE = "openai/clip-vit-base-patch16"  # CLIPSeg's CLIP is ViT-B/16

# `clip.model.CLIP(...)` arguments: ViT-B/16 as OpenAI released it, and the tiny one (transformer_heads must be
# transformer_width // 64: that is how `clip.model.build_model` reads a state dict back)
OPENAI_SIZES: dict[str, dict[str, int]] = {
    "real": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                 transformer_layers=12),
    "tiny": dict(embed_dim=64, image_resolution=224, vision_layers=12, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                 transformer_layers=12),
}
OPENAI_FILE = "ViT-B-16.pt"
ORIGINAL_DECODER_FILE = "rd64-uni.pth"
SAM_FILES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_b": "sam_vit_b_01ec64.pth"}

# The published preprocessor configs' values, written out here on purpose rather than imported from the package:
# the rehearsal's files state what the hub publishes, independently of the code they test.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------------------------------- configs
def _text_config(t: Tower, projection: int) -> dict[str, Any]:
    # bos 0 / eos 2 / pad 1 as in the published text configs (transformers' defaults of 2022; eos_token_id 2 makes
    # today's CLIP text model pool at the highest token id, the end token, as OpenAI's CLIP does)
    return dict(vocab_size=49408, hidden_size=t.hidden, intermediate_size=t.intermediate, num_hidden_layers=t.layers,
                num_attention_heads=t.heads, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                attention_dropout=0.0, dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
                projection_dim=projection, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def _vision_config(v: Tower, projection: int, patch: int, image: int) -> dict[str, Any]:
    return dict(hidden_size=v.hidden, intermediate_size=v.intermediate, num_hidden_layers=v.layers,
                num_attention_heads=v.heads, num_channels=3, image_size=image, patch_size=patch,
                hidden_act="quick_gelu",
                layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0, initializer_range=0.02,
                initializer_factor=1.0, projection_dim=projection)


def clip_config(hub_id: str, scale: str = "real"):
    """transformers' `CLIPConfig` of a published CLIP (`scale="real"`) or of its tiny stand-in."""
    from transformers import CLIPConfig

    s = CLIP_SIZES[_check_scale(scale)][hub_id]
    return CLIPConfig(text_config=_text_config(s.text, s.projection),
                      vision_config=_vision_config(s.vision, s.projection, s.patch, s.image),
                      projection_dim=s.projection, logit_scale_init_value=2.6592, initializer_factor=1.0)


def clipseg_config(scale: str = "real"):
    """`CLIPSegConfig` of CIDAS/clipseg-rd64-refined, as transformers' convert_clipseg_original_pytorch_to_hf.py
    builds it: ViT-B/16 text and vision towers, projection 512, layers 3/6/9, D=64, 4 decoder heads, FF 2048,
    conditioning at layer 0, the refined ("complex") transposed convolution. Tiny: the tiny ViT-B/16, same decoder."""
    from transformers import CLIPSegConfig

    s = CLIP_SIZES[_check_scale(scale)][CLIPSEG_BASE]
    return CLIPSegConfig(text_config=_text_config(s.text, s.projection),
                         vision_config=_vision_config(s.vision, s.projection, s.patch, s.image),
                         projection_dim=s.projection, extract_layers=[3, 6, 9], reduce_dim=64,
                         decoder_num_attention_heads=4, decoder_attention_dropout=0.0, decoder_hidden_act="quick_gelu",
                         decoder_intermediate_size=2048, conditional_layer=0, use_complex_transposed_convolution=True,
                         logit_scale_init_value=2.6592, initializer_factor=1.0)


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


# ------------------------------------------------------------------------- the original CLIPSeg decoder (.pth)
def original_decoder_shapes(*, cond_dim: int = 512, width: int = 768, reduce_dim: int = 64, depth: int = 3,
                            dim_feedforward: int = 2048, patch_size: int = 16,
                            complex_trans_conv: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor of an original CLIPSeg decoder file, in the file's order, with its shape.

    Written from timojl/clipseg's `models/clipseg.py`, `CLIPDensePredT(version='ViT-B/16', reduce_dim=64,
    extract_layers=(3, 6, 9))` with its defaults (reduce_cond None, extra_blocks 0, upsample False, fix_shift False):
    the released files hold the parameters with requires_grad (`TrainingLogger.save_weights(only_trainable=True)`),
    i.e. everything but the frozen `clip_model.*`, in registration order: `film_mul`, `film_add` (Linear 512 -> D),
    the unused `reduce` (Linear 768 -> D, built by CLIPDenseBase and never called), `trans_conv`
    (ConvTranspose2d(D, 1, 16, stride 16), or for the refined head Conv2d(D, D, 3) / ConvTranspose2d(D, D/2, 4) /
    ConvTranspose2d(D/2, 1, 4) at indices 0 / 2 / 4), `reduces.i` (Linear 768 -> D), and `blocks.i`:
    nn.TransformerEncoderLayer(d_model=D, nhead=4) with its default dim_feedforward 2048. The original hard-codes
    512 (`cond_dim`) and 768 (`width`); the arguments exist for the tiny stand-in only.
    """
    d = reduce_dim
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("film_mul", "film_add"):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (d, cond_dim), (d,)
    shapes["reduce.weight"], shapes["reduce.bias"] = (d, width), (d,)
    if complex_trans_conv:
        k = patch_size // 4
        shapes.update({"trans_conv.0.weight": (d, d, 3, 3), "trans_conv.0.bias": (d,),
                       "trans_conv.2.weight": (d, d // 2, k, k), "trans_conv.2.bias": (d // 2,),
                       "trans_conv.4.weight": (d // 2, 1, k, k), "trans_conv.4.bias": (1,)})
    else:  # ConvTranspose2d weights are (in, out, kh, kw)
        shapes["trans_conv.weight"], shapes["trans_conv.bias"] = (d, 1, patch_size, patch_size), (1,)
    for i in range(depth):
        shapes[f"reduces.{i}.weight"], shapes[f"reduces.{i}.bias"] = (d, width), (d,)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "self_attn.in_proj_weight": (3 * d, d), b + "self_attn.in_proj_bias": (3 * d,),
                       b + "self_attn.out_proj.weight": (d, d), b + "self_attn.out_proj.bias": (d,),
                       b + "linear1.weight": (dim_feedforward, d), b + "linear1.bias": (dim_feedforward,),
                       b + "linear2.weight": (d, dim_feedforward), b + "linear2.bias": (d,),
                       b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                       b + "norm2.weight": (d,), b + "norm2.bias": (d,)})
    return shapes


def original_decoder_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 values for `shapes` from a seeded generator, at PyTorch's default scales: weights and biases
    uniform in +-1/sqrt(fan in), LayerNorm weights near 1 and biases near 0."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if ".norm" in key:
            base = 1.0 if key.endswith("weight") else 0.0
            state[key] = base + 0.1 * torch.randn(shape, generator=g)
            continue
        weight = shapes[key.replace("_bias", "_weight").replace(".bias", ".weight")]
        bound = 1 / math.sqrt(math.prod(weight[1:]))
        state[key] = (torch.rand(shape, generator=g) * 2 - 1) * bound
    return state


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _git_sha1(path: Path) -> str:
    """What the hub names a small (non-LFS) file's blob: git's blob hash."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _torch_save(obj: Any, path: Path) -> None:
    """`torch.save` through a file object: the zip archive's inner folder is then "archive" rather than the file's
    (temporary) name, so that the same seed gives the same bytes."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _replace_symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    if os.path.lexists(tmp):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json(path: Path, data: Any) -> None:
    _text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _added_token(content: str) -> dict[str, Any]:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def _write_tokenizer(folder: Path, hub_id: str) -> None:
    """vocab.json + merges.txt from the clip package's BPE file, tokenizer.json as transformers' CLIPTokenizer
    builds it from them, and tokenizer_config.json / special_tokens_map.json like the hub's (CIDAS's tokenizer is
    openai/clip-vit-base-patch32's, which its converter loaded)."""
    from clipseg_lab.backbones.tokenizer import write_hf_tokenizer_files

    write_hf_tokenizer_files(folder)
    bos, eos = _added_token("<|startoftext|>"), _added_token("<|endoftext|>")
    special = {"bos_token": {k: v for k, v in bos.items() if k != "__type"},
               "eos_token": {k: v for k, v in eos.items() if k != "__type"},
               "pad_token": "<|endoftext|>",
               "unk_token": {k: v for k, v in eos.items() if k != "__type"}}
    _json(folder / "special_tokens_map.json", special)
    _json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "bos_token": bos, "do_lower_case": True, "eos_token": eos, "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-base-patch32" if hub_id == CLIPSEG_ID else hub_id,
        "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer", "unk_token": eos})
    _write_tokenizer_json(folder)


def _write_tokenizer_json(folder: Path) -> None:
    """The fast tokenizer's tokenizer.json, by transformers' own CLIPTokenizer read from the folder's files."""
    from transformers import CLIPTokenizer

    from clipseg_lab.backbones.tokenizer import tokenize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = CLIPTokenizer.from_pretrained(folder)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:  # a slow tokenizer: the hub's tokenizer.json is an extra the snapshot can do without
        log.warning("transformers' CLIPTokenizer has no fast backend here: no tokenizer.json written")
        return
    probe = "a photo of a cat"
    ids, expected = backend.encode(probe).ids, tokenize(probe)[0]
    if ids != expected[: int(expected.argmax()) + 1].tolist():
        raise RuntimeError(f"transformers' CLIPTokenizer built from {folder} encodes {probe!r} as {ids}, not as CLIP's "
                           f"BPE does ({expected[:8].tolist()}...): tokenizer.json not written")
    with atomic_path(folder / "tokenizer.json") as tmp:
        backend.save(str(tmp))


def _preprocessor_config(hub_id: str, image: int) -> dict[str, Any]:
    if hub_id == CLIPSEG_ID:  # as published: a ViT image processor with ImageNet statistics at 352 x 352
        return {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN,
                "image_processor_type": "ViTImageProcessor", "image_std": IMAGENET_STD,
                "processor_class": "CLIPSegProcessor", "resample": 2, "rescale_factor": 1 / 255,
                "size": {"height": 352, "width": 352}}
    # the openai repositories' (saved by CLIPFeatureExtractor in 2022): resize the short side, centre crop
    return {"crop_size": image, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "resample": 3, "size": image}


def _revision(hub_id: str, scale: str, seed: int) -> str:
    return hashlib.sha1(f"clipseg-lab rehearsal {hub_id} {scale} seed {seed}".encode()).hexdigest()


def repo_folder(root: Path, hub_id: str) -> Path:
    return Path(root) / HF_HOME / "hub" / f"models--{hub_id.replace('/', '--')}"


# ------------------------------------------------------------------------------------------------ builders
def _hub_model(hub_id: str, scale: str, seed: int):
    from transformers import CLIPModel, CLIPSegForImageSegmentation

    with _seeded(seed):
        if hub_id == CLIPSEG_ID:
            model = _calibrated(CLIPSegForImageSegmentation(clipseg_config(scale)).eval(), seed)
        else:
            model = CLIPModel(clip_config(hub_id, scale))
    return model.eval()


LOGIT_STD = 3.0  # the released CLIPSeg's logits span about -10 .. +5
FILM_STD = 1.0  # how much the prompt moves FiLM's scale (around 1) and shift


@torch.no_grad()
def _calibrated(model, seed: int):
    """Still random weights, at the released model's ranges. transformers' initialisation gives the refined head
    logits in the thousands (every probability 0 or 1, so that a parity check on them passes whatever the inputs)
    and a FiLM whose multiplier is near 0: the last transposed convolution (weight and bias) is scaled so that the
    logits of a seeded random image have std LOGIT_STD, and FiLM's multiplier is made 1 + a prompt-dependent part
    of std FILM_STD (its shift: that part alone). The prompt still moves a random CLIPSeg's logits little (the
    layers after FiLM are unconditioned): by up to about 0.1 between two prompts (0.03 before), i.e. probability
    differences ~1e-2, well above a 1e-4 parity tolerance."""
    from clipseg_lab.backbones.tokenizer import tokenize

    g = torch.Generator().manual_seed(seed)
    size = model.config.vision_config.image_size
    ids = tokenize(["a photo of a cat", "a dog", "the sky", "something to sit on"])
    ids = ids[:, : int(ids.argmax(dim=1).max()) + 1]
    cond = model.clip.get_text_features(input_ids=ids)
    cond = getattr(cond, "pooler_output", cond)  # an output object in transformers 5, a tensor before
    decoder = model.decoder
    mean = cond.mean(dim=0)
    for film, base in ((decoder.film_mul, 1.0), (decoder.film_add, 0.0)):  # random CLIP text embeddings share a
        film.weight.mul_(FILM_STD / float(((cond - mean) @ film.weight.T).std()))  # large common part: scale the rest
        film.bias.copy_(base - film.weight @ mean)
    pixels = torch.randn(1, 3, size, size, generator=g).expand(len(ids), -1, -1, -1)
    logits = model(input_ids=ids, pixel_values=pixels).logits
    last = decoder.transposed_convolution[-1] if model.config.use_complex_transposed_convolution \
        else decoder.transposed_convolution
    factor = LOGIT_STD / float(logits.float().std())
    last.weight.mul_(factor)
    last.bias.mul_(factor)
    return model


def _write_hub_repo(root: Path, hub_id: str, scale: str, seed: int) -> dict[str, Any]:
    spec = HUB_REPOS[hub_id]
    repo = repo_folder(root, hub_id)
    revision = _revision(hub_id, scale, seed)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for stale in repo.glob(".build-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=repo, prefix=".build-") as tmp_name:
        build = Path(tmp_name)
        model = _hub_model(hub_id, scale, seed)
        state = model.state_dict()
        if spec.legacy_position_ids:
            state.update({name: buf.clone() for name, buf in model.named_buffers()
                          if name.endswith("embeddings.position_ids") and name not in state})
        image = model.config.vision_config.image_size
        if spec.weights_file == "model.safetensors":  # config.json + model.safetensors, as transformers writes them
            model.save_pretrained(build, state_dict=dict(state))  # (it empties the dict it is given)
        elif spec.weights_file == "pytorch_model.bin":  # what transformers' non-safe serialization wrote
            model.save_pretrained(build)  # for config.json
            (build / "model.safetensors").unlink()
            _torch_save(state, build / "pytorch_model.bin")
        else:
            raise ValueError(f"{hub_id}: unknown weights file {spec.weights_file!r} in HUB_REPOS")
        del model, state
        gc.collect()
        _json(build / "preprocessor_config.json", _preprocessor_config(hub_id, image))
        _write_tokenizer(build, hub_id)
        snapshot = repo / "snapshots" / revision
        files: dict[str, int] = {}
        for path in sorted(p for p in build.iterdir() if not p.name.startswith(".")):
            lfs = path.suffix in (".bin", ".safetensors")
            digest = file_sha256(path) if lfs else _git_sha1(path)  # the hub's blob names: LFS sha256, else git's sha1
            size = path.stat().st_size
            blob = repo / "blobs" / digest
            os.replace(path, blob)
            _replace_symlink(snapshot / path.name, f"../../blobs/{digest}")
            files[str((snapshot / path.name).relative_to(root))] = size
            files[str(blob.relative_to(root))] = size
    _text(repo / "refs" / "main", revision)  # last: the snapshot is complete before a reader can find it
    return {"kind": "hf_hub_repo", "hub_id": hub_id, "path": str(snapshot.relative_to(root)), "revision": revision,
            "weights_file": spec.weights_file, "files": files}


def _write_openai_jit(root: Path, scale: str, seed: int) -> dict[str, Any]:
    """ViT-B-16.pt as OpenAI released it: the `clip` package's CLIP in fp16 (`convert_weights`), traced to
    TorchScript, with the `input_resolution` / `context_length` / `vocab_size` entries the released archives carry
    in their state dicts (which `clip.model.build_model` deletes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-anytorch imports pkg_resources; torch.jit warns it is deprecated
        from clip.model import CLIP, convert_weights

        spec = OPENAI_SIZES[scale]
        with _seeded(seed):
            model = CLIP(**spec).eval()
        convert_weights(model)
        for name, value in (("input_resolution", spec["image_resolution"]), ("context_length", spec["context_length"]),
                            ("vocab_size", spec["vocab_size"])):
            model.__dict__.pop(name, None)  # plain ints on the class; tensors in the released state dicts
            model.register_buffer(name, torch.tensor(value))
        size = spec["image_resolution"]
        image = torch.zeros(1, 3, size, size, dtype=torch.float16)
        text = torch.zeros(1, spec["context_length"], dtype=torch.long)
        text[0, :3] = torch.tensor([49406, 320, 49407])  # <start> "a" <end>
        with torch.no_grad():
            traced = torch.jit.trace(model, (image, text), check_trace=False)
        dest = Path(root) / WEIGHTS / OPENAI_FILE
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:  # through a file object: the archive's inner folder is "archive", not
                torch.jit.save(traced, f)  # the temporary file's name (deterministic bytes across runs)
    del traced, model
    return {"kind": "openai_jit", "path": str(dest.relative_to(root)),
            "files": {str(dest.relative_to(root)): dest.stat().st_size}}


def _write_original_decoder(root: Path, scale: str, seed: int) -> dict[str, Any]:
    spec = OPENAI_SIZES[scale]
    shapes = original_decoder_shapes(cond_dim=spec["embed_dim"], width=spec["vision_width"],
                                     patch_size=spec["vision_patch_size"])
    dest = Path(root) / WEIGHTS / ORIGINAL_DECODER_FILE
    with atomic_path(dest) as tmp:
        _torch_save(original_decoder_state(shapes, seed), tmp)
    return {"kind": "clipseg_original_decoder", "path": str(dest.relative_to(root)),
            "files": {str(dest.relative_to(root)): dest.stat().st_size}}


def _write_sam(root: Path, model_type: str, scale: str, seed: int) -> dict[str, Any]:
    import segment_anything

    dest = Path(root) / WEIGHTS / SAM_FILES[model_type]
    built = model_type if scale == "real" else "vit_b"  # the registry's builders are fixed-size: tiny = ViT-B
    other = Path(root) / WEIGHTS / SAM_FILES["vit_b"]
    if built != model_type and other.is_file():  # tiny: the ViT-B file just written (same scale and seed)
        with atomic_path(dest) as tmp:
            tmp.unlink()
            try:
                os.link(other, tmp)
            except OSError:
                shutil.copyfile(other, tmp)
    else:
        with _seeded(seed):
            sam = getattr(segment_anything, f"build_sam_{built}")(checkpoint=None)
        state = sam.state_dict()
        del sam
        with atomic_path(dest) as tmp:
            _torch_save(state, tmp)
        del state
    item = {"kind": "sam_checkpoint", "model_type": built, "path": str(dest.relative_to(root)),
            "files": {str(dest.relative_to(root)): dest.stat().st_size}}
    if built != model_type:
        item["note"] = (f"tiny scale: a real-size SAM ViT-B under the {model_type} file name (segment-anything's "
                        f"registry builds fixed sizes); load it with model_type='vit_b'")
    return item


def _plan(root: Path, scale: str, seed: int) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(name, writer) for every item, smallest first; each seed differs so that no two models share weights."""
    b16, l14 = "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14"
    return [
        (b16, lambda: _write_hub_repo(root, b16, scale, seed + 1)),
        (CLIPSEG_ID, lambda: _write_hub_repo(root, CLIPSEG_ID, scale, seed + 2)),
        (l14, lambda: _write_hub_repo(root, l14, scale, seed + 3)),
        (OPENAI_FILE, lambda: _write_openai_jit(root, scale, seed + 4)),
        (ORIGINAL_DECODER_FILE, lambda: _write_original_decoder(root, scale, seed + 5)),
        (SAM_FILES["vit_b"], lambda: _write_sam(root, "vit_b", scale, seed + 6)),
        (SAM_FILES["vit_h"], lambda: _write_sam(root, "vit_h", scale, seed + 7)),
    ]


def _complete(root: Path, item: dict[str, Any] | None) -> bool:
    if not item or not item.get("files"):
        return False
    for rel, size in item["files"].items():
        path = root / rel
        if not path.exists() or path.stat().st_size != size:  # follows snapshot symlinks into blobs/
            return False
    return True


def environment(root: Path) -> dict[str, str]:
    """The variables that point the package (and transformers) at the rehearsal's weights, offline."""
    root = Path(root).resolve()
    return {"HF_HOME": str(root / HF_HOME), "HF_HUB_OFFLINE": "1", "CLIPSEG_LAB_WEIGHTS": str(root / WEIGHTS)}


def build_weights(root: Path, *, scale: str = "real", seed: int = 0) -> dict[str, Any]:
    """Write the rehearsal's weights under `root` (see the module docstring) and describe them.

    Returns `{"root", "scale", "seed", "env", "items"}`: `env` the variables to run with (HF_HOME, HF_HUB_OFFLINE,
    CLIPSEG_LAB_WEIGHTS; if HF_HUB_CACHE is set in your environment it wins over HF_HOME: unset it), `items` one
    entry per hub repository / file: `kind` (hf_hub_repo, openai_jit, clipseg_original_decoder, sam_checkpoint),
    `path` (absolute: a snapshot folder or a file), `bytes`, `files` (every file written, relative to root, with
    its size), `skipped` (found complete from an earlier run), `seconds`.
    """
    _check_scale(scale)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    manifest_file = root / MANIFEST
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError):
        manifest = {}
    if manifest.get("scale") != scale or manifest.get("seed") != seed:
        manifest = {"scale": scale, "seed": seed, "items": {}}
    if os.environ.get("HF_HUB_CACHE"):
        log.warning("HF_HUB_CACHE is set (%s): it wins over HF_HOME; unset it to use the rehearsal's cache",
                    os.environ["HF_HUB_CACHE"])
    items: dict[str, Any] = {}
    plan = _plan(root, scale, seed)
    for index, (name, write) in enumerate(plan, 1):
        start = time.perf_counter()
        previous = manifest["items"].get(name)
        if _complete(root, previous):
            item, skipped = previous, True
            log.info("[%d/%d] %s: present (%s), kept", index, len(plan), name, previous["path"])
        else:
            log.info("[%d/%d] %s: building (%s scale)", index, len(plan), name, scale)
            item, skipped = write(), False
            gc.collect()
            manifest["items"][name] = item
            write_json(manifest_file, manifest)
        seconds = time.perf_counter() - start
        total = sum(size for rel, size in item["files"].items() if "/snapshots/" not in rel)  # blobs counted once
        if not skipped:
            log.info("[%d/%d] %s: %.1f MB in %.1f s", index, len(plan), name, total / 1e6, seconds)
        items[name] = {**item, "path": root / item["path"], "bytes": total, "skipped": skipped,
                       "seconds": round(seconds, 2)}
    return {"root": root, "scale": scale, "seed": seed, "env": environment(root), "items": items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipseg_lab.rehearsal.weights", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder to write into (hf_home/ and weights/ are created there)")
    parser.add_argument("--scale", choices=SCALES, default="real")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = build_weights(args.root, scale=args.scale, seed=args.seed)
    for name, item in result["items"].items():
        log.info("%-32s %-26s %10.1f MB  %s", name, item["kind"], item["bytes"] / 1e6, item["path"])
    log.info("environment: %s", " ".join(f"{k}={v}" for k, v in result["env"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
