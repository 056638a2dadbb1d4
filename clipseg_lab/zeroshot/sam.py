"""SAM for ReSeg-CLIP's region masks: loading checkpoints, a tiny random SAM for tests, region partitions.

Loading (`load_sam`) follows the package's weights policy: an explicit checkpoint path, else
`$CLIPSEG_LAB_WEIGHTS/<official file name>`, else one `WeightsNotFoundError` naming the file, where it was looked
for and where to download it. Random weights only for the name `tiny-random` (a small SAM built from
segment-anything's own classes, seeded, labelled untrained). The model is built with
`segment_anything.sam_model_registry[model_type]()` and the checkpoint's state dict loaded into it strictly (the
same as passing `checkpoint=` to the registry, but read on the CPU first so that the model type can be checked:
a checkpoint of another size than the chosen model type is a `WeightsFormatError` naming both).

Regions (`SamRegionGenerator`): `SamAutomaticMaskGenerator` runs once per parameter set (points_per_side,
pred_iou_thresh, ...) on the tile; the masks of all sets are merged into one partition: masks are painted from
the largest to the smallest (ties: parameter-set order, then SAM's order), so where masks overlap the smaller,
finer one wins; painted regions smaller than `min_region_area` pixels are dropped. Pixels that no mask covers get
the label -1 ("outside every region"; `clipseg_lab.zeroshot.masks` says how their tokens attend). With
`mode="per_layer"` each parameter set gives its own partition instead (ReSeg-CLIP's reference code used set `i`
for SAM layer `i`). Partitions are computed once per tile and cached in memory and, with `cache_dir`, on disk.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from clipseg_lab.backbones.names import TINY_RANDOM, TINY_RANDOM_SEED
from clipseg_lab.backbones.weights import ENV_WEIGHTS, rehearsal_note
from clipseg_lab.errors import ConfigError, WeightsFormatError, WeightsNotFoundError
from clipseg_lab.files import atomic_path

log = logging.getLogger(__name__)

SAM_FILES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_WIDTHS = {"vit_h": 1280, "vit_l": 1024, "vit_b": 768}
WIDTH_KEY = "image_encoder.patch_embed.proj.weight"


@dataclass
class LoadedSam:
    """A SAM model with where it came from."""

    model: Any  # segment_anything.modeling.Sam
    name: str
    model_type: str  # vit_h / vit_l / vit_b / tiny-random
    source: str
    trained: bool

    @property
    def label(self) -> str:
        if self.trained:
            return f"SAM {self.model_type}"
        return f"SAM {self.model_type} (untrained: random weights)"


def tiny_random_sam(seed: int = TINY_RANDOM_SEED, img_size: int = 256):
    """A small SAM of the real architecture (segment-anything's classes) with seeded random weights: 2 encoder
    blocks of width 32 at 256 px, a 32-wide prompt encoder and mask decoder. For tests and smoke runs only.

    The mask decoder's transposed-convolution kernels are made constant over their 2x2 taps (a random channel mix
    followed by nearest-neighbour upsampling): random kernels give checkerboard-noise masks whose run-length
    encoding makes SamAutomaticMaskGenerator slow; constant ones give smooth random blobs."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed, patch = 32, 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(depth=2, embed_dim=32, img_size=img_size, mlp_ratio=2,
                                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2,
                                          patch_size=patch, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,),
                                          window_size=4, out_chans=embed),
            prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(img_size // patch, img_size // patch),
                                         input_image_size=(img_size, img_size), mask_in_chans=4),
            mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                     transformer=TwoWayTransformer(depth=2, embedding_dim=embed, mlp_dim=64,
                                                                   num_heads=2),
                                     transformer_dim=embed, iou_head_depth=2, iou_head_hidden_dim=32),
        )
        with torch.no_grad():
            for m in sam.mask_decoder.output_upscaling.modules():
                if isinstance(m, torch.nn.ConvTranspose2d):
                    m.weight.copy_(m.weight.mean(dim=(2, 3), keepdim=True).expand_as(m.weight).clone())
    return sam.eval()


def model_type_from_name(name: str) -> str | None:
    match = re.search(r"vit_?([hlb])", Path(name).name.lower())
    return f"vit_{match.group(1)}" if match else None


def _download_hint(model_type: str | None) -> str:
    types = [model_type] if model_type in SAM_FILES else list(SAM_FILES)
    return "; ".join(f"{t}: {SAM_URL}{SAM_FILES[t]}" for t in types)


def resolve_sam_checkpoint(name_or_path: str | os.PathLike, model_type: str | None = None) -> tuple[Path, str | None]:
    """The checkpoint file for a SAM name (`vit_h` / `vit_l` / `vit_b`) or path, and the model type asked for."""
    text = str(name_or_path)
    if model_type is not None and model_type not in SAM_FILES:
        raise ConfigError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(SAM_FILES)} (or the SAM "
                          f"name {TINY_RANDOM!r} for tests)")
    looked: list[str] = []
    root = os.environ.get(ENV_WEIGHTS)
    if text in SAM_FILES:
        model_type = model_type or text
        if model_type != text:
            raise WeightsFormatError(f"SAM {text!r} was asked for with model type {model_type!r}; they must agree")
        file_name = SAM_FILES[text]
        if root:
            candidate = Path(root).expanduser() / file_name
            looked.append(f"${ENV_WEIGHTS}/{file_name} ({candidate})")
            if candidate.is_file():
                return candidate, model_type
        else:
            looked.append(f"${ENV_WEIGHTS} (not set)")
    else:
        path = Path(text).expanduser()
        if path.is_file():
            return path, model_type or model_type_from_name(text)
        if path.is_dir():
            raise WeightsFormatError(f"{path}: a directory; a SAM checkpoint is one .pth file such as "
                                     f"{SAM_FILES['vit_h']}")
        looked.append(f"the path {path}")
        model_type = model_type or model_type_from_name(text)
        if root and len(path.parts) == 1:
            candidate = Path(root).expanduser() / path.name
            looked.append(f"${ENV_WEIGHTS}/{path.name} ({candidate})")
            if candidate.is_file():
                return candidate, model_type
        elif not root:
            looked.append(f"${ENV_WEIGHTS} (not set)")
    raise WeightsNotFoundError(
        f"No SAM checkpoint found for {text!r}. Looked in:\n  - " + "\n  - ".join(looked)
        + f"\nTo fix: download the official checkpoint ({_download_hint(model_type)}) and pass its path, or put it "
        f"in ${ENV_WEIGHTS}/. For tests and smoke runs without weights, use the SAM {TINY_RANDOM!r} (random weights, "
        "labelled untrained).")


def read_sam_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsFormatError(f"{path}: not readable as a SAM checkpoint ({exc}). Expected an official "
                                 f"segment-anything .pth file ({_download_hint(None)}).") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or WIDTH_KEY not in state:
        raise WeightsFormatError(f"{path}: not a SAM checkpoint (no {WIDTH_KEY}). Expected an official "
                                 f"segment-anything .pth file ({_download_hint(None)}).")
    return state


def checkpoint_model_type(state: Mapping[str, torch.Tensor]) -> str | None:
    width = int(state[WIDTH_KEY].shape[0])
    return next((t for t, w in SAM_WIDTHS.items() if w == width), None)


def load_sam(name_or_path: str | os.PathLike, model_type: str | None = None,
             device: str | torch.device | None = None) -> LoadedSam:
    """`tiny-random`, `vit_h` / `vit_l` / `vit_b` (found in `$CLIPSEG_LAB_WEIGHTS`), or a checkpoint path."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if str(name_or_path) == TINY_RANDOM:
        return LoadedSam(tiny_random_sam().to(device), TINY_RANDOM, TINY_RANDOM,
                         f"random init, seed {TINY_RANDOM_SEED}", trained=False)
    from segment_anything import sam_model_registry

    path, asked = resolve_sam_checkpoint(name_or_path, model_type)
    state = read_sam_state_dict(path)
    found = checkpoint_model_type(state)
    width = int(state[WIDTH_KEY].shape[0])
    if found is None:
        raise WeightsFormatError(f"{path}: SAM image encoder width {width} matches none of the model types "
                                 f"{SAM_WIDTHS}; expected an official vit_h / vit_l / vit_b checkpoint")
    if asked is not None and asked != found:
        raise WeightsFormatError(
            f"{path} is a SAM {found} checkpoint (image encoder width {width}), but model type {asked!r} was chosen "
            f"(width {SAM_WIDTHS[asked]}). Set model.sam_model_type: {found}, or use the {asked} checkpoint "
            f"{SAM_FILES[asked]} ({SAM_URL}{SAM_FILES[asked]}).")
    sam = sam_model_registry[found]()
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsFormatError(f"{path}: does not fit segment-anything's {found} model ({str(exc)[:400]})") from exc
    log.info("loaded SAM %s from %s", found, path)
    trained = rehearsal_note(path) is None  # the rehearsal's SAM files are random
    return LoadedSam(sam.eval().to(device), str(name_or_path), found, str(path), trained=trained)


def _generator_options() -> set[str]:
    from segment_anything import SamAutomaticMaskGenerator

    return set(inspect.signature(SamAutomaticMaskGenerator.__init__).parameters) - {"self", "model", "output_mode"}


def check_param_sets(param_sets: Sequence[Mapping[str, Any]], where: str = "attention.sam_param_sets") -> list[dict]:
    """Each set is keyword arguments of `SamAutomaticMaskGenerator`; unknown keys are errors."""
    allowed = _generator_options()
    out = []
    for i, params in enumerate(param_sets):
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}[{i}] must be a mapping of SamAutomaticMaskGenerator options, got {params!r}")
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ConfigError(f"{where}[{i}]: unknown SamAutomaticMaskGenerator option(s) {unknown}; known: "
                              f"{sorted(allowed)}")
        if params.get("min_mask_region_area", 0) > 0:
            try:
                import cv2  # noqa: F401
            except ImportError as exc:
                raise ConfigError(f"{where}[{i}]: min_mask_region_area > 0 needs OpenCV (pip install "
                                  "opencv-python-headless); or use attention.min_region_area, which needs nothing "
                                  "extra") from exc
        out.append(dict(params))
    return out


def merge_masks(masks: Sequence[np.ndarray], shape: tuple[int, int], min_area: int = 0) -> np.ndarray:
    """Boolean masks -> `(H, W)` int32 partition (-1 = uncovered): largest first, smaller masks on top."""
    partition = np.full(shape, -1, np.int32)
    areas = [int(m.sum()) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: -areas[i])  # stable: ties keep their order
    for label, i in enumerate(order):
        if areas[i]:
            partition[masks[i]] = label
    labels, inverse, counts = np.unique(partition, return_inverse=True, return_counts=True)
    keep = (labels >= 0) & (counts >= max(1, min_area))
    new = np.full(len(labels), -1, np.int32)
    new[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    return new[inverse].reshape(shape)


class SharedImageEmbedding:
    """One `SamPredictor` for every parameter set: a tile's image embedding (SAM's heavy image encoder, ~67 s for
    ViT-H on 2 CPU cores) is computed once and reused by each set's `SamAutomaticMaskGenerator`, which would
    otherwise encode the same tile again (it calls `set_image` and then `reset_image` for every crop)."""

    def __init__(self, model):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)
        self.encodes = 0
        self._key: tuple | None = None
        encode = self.predictor.set_image

        def set_image(image: np.ndarray, image_format: str = "RGB") -> None:
            key = (image.shape, image_format, hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest())
            if key != self._key or not self.predictor.is_image_set:
                encode(image, image_format)
                self._key = key
                self.encodes += 1

        self.predictor.set_image = set_image
        self.predictor.reset_image = lambda: None  # the embedding stays until another image comes

    def share_with(self, generators) -> None:
        for generator in generators:
            generator.predictor = self.predictor


class SamRegionGenerator:
    """Region partitions of tiles from SAM's automatic mask generator, computed once per tile and cached; the
    tile's image embedding is computed once for all parameter sets (`SharedImageEmbedding`)."""

    def __init__(self, sam: LoadedSam, param_sets: Sequence[Mapping[str, Any]], *, min_region_area: int = 0,
                 mode: Literal["merged", "per_layer"] = "merged", cache_dir: str | os.PathLike | None = None):
        from segment_anything import SamAutomaticMaskGenerator

        if not param_sets:
            raise ConfigError("attention.sam_param_sets is empty: SAM-region layers need at least one parameter set "
                              "(e.g. {points_per_side: 16, pred_iou_thresh: 0.8})")
        if mode not in ("merged", "per_layer"):
            raise ConfigError(f"attention.sam_mode must be 'merged' or 'per_layer', not {mode!r}")
        self.sam = sam
        self.param_sets = check_param_sets(param_sets)
        self.min_region_area = int(min_region_area)
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._generators = [SamAutomaticMaskGenerator(sam.model, **p) for p in self.param_sets]
        self.embedding = SharedImageEmbedding(sam.model)
        self.embedding.share_with(self._generators)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.memory_size = 8  # partitions kept in memory (most recent tiles)
        self.computed = 0  # how many partitions were computed (not served from a cache)
        self.hits = 0  # how many were served from the memory or disk cache

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"sam": self.sam.source, "type": self.sam.model_type, "sets": self.param_sets,
                           "min_area": self.min_region_area, "mode": self.mode}, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def _key(self, image: np.ndarray) -> str:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]
        return f"{self.fingerprint}-{image.shape[0]}x{image.shape[1]}-{digest}"

    def _cache_file(self, name: str) -> Path | None:
        if self.cache_dir is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "tile"
        return self.cache_dir / f"{safe}.npz"

    def raw_masks(self, image: np.ndarray) -> list[list[np.ndarray]]:
        """SAM's masks for each parameter set (booleans `(H, W)`)."""
        out = []
        with torch.inference_mode():
            for generator in self._generators:
                out.append([np.asarray(r["segmentation"], bool) for r in generator.generate(image)])
        return out

    def partitions(self, image: np.ndarray, name: str | None = None) -> np.ndarray:
        """`(S, H, W)` int32 region labels for an `(H, W, 3)` uint8 RGB image (S = 1 merged, or one per set)."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"SAM needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        key = self._key(image)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        file = self._cache_file(name) if name else None
        if file is not None and file.is_file():
            try:
                with np.load(file) as data:
                    if str(data["key"]) == key:
                        self.hits += 1
                        return self._remember(key, data["partitions"])
            except (OSError, KeyError, ValueError) as exc:
                log.warning("%s: unreadable region cache (%s); recomputing", file, exc)
        shape = image.shape[:2]
        masks = self.raw_masks(image)
        if self.mode == "merged":
            parts = [merge_masks([m for group in masks for m in group], shape, self.min_region_area)]
        else:
            parts = [merge_masks(group, shape, self.min_region_area) for group in masks]
        result = np.stack(parts)
        self.computed += 1
        self._remember(key, result)
        if file is not None:
            with atomic_path(file) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, key=np.array(key), partitions=result)
        return result

    def _remember(self, key: str, partitions: np.ndarray) -> np.ndarray:
        self._memory[key] = partitions
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)
        return partitions

    def clear_memory(self) -> None:
        self._memory.clear()
