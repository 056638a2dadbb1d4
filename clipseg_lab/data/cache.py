"""A disk cache of frozen-backbone activations, so the backbone runs once per image, not once per epoch.

An entry is keyed by (image content hash, backbone fingerprint, layers, resolution, pixel normalisation, storage
dtype): change any part and it is a different entry, so a stale activation is never served. Entries are safetensors
files (memory-mapped on read), written atomically. `stats()` reports hits, misses and size on disk.

The image hash is of the exact pixels passed in, so use the cache with deterministic transforms (resizing),
not random augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from clipseg_lab.backbones.clip_backbone import ClipBackbone, Normalization
from clipseg_lab.files import atomic_path

log = logging.getLogger(__name__)


def backbone_fingerprint(backbone: ClipBackbone) -> str:
    """A short hash of the backbone's identity and of some of its weights (so retrained weights differ)."""
    h = hashlib.sha256(f"{backbone.name}|{backbone.source}|{backbone.width}|{backbone.num_layers}".encode())
    vision = backbone.clip.vision_model
    for t in (vision.embeddings.patch_embedding.weight, vision.encoder.layers[-1].mlp.fc2.weight,
              backbone.clip.visual_projection.weight):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def image_hash(image: torch.Tensor) -> str:
    t = image.detach().cpu().contiguous()
    return hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode() + t.numpy().tobytes()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ActivationCache:
    """Activations of `layers` of `backbone` at `size` px for uint8 images, cached under `root`.

    `ActivationCache.for_model(model, root)` makes one that fits a model's decoder.
    """

    def __init__(self, root: str | os.PathLike, backbone: ClipBackbone, layers: tuple[int, ...], size: int,
                 storage_dtype: torch.dtype = torch.float16, project: bool = False,
                 normalization: Normalization | None = None):
        self.root, self.backbone, self.project = Path(root), backbone, project
        self.normalization = normalization or backbone.normalization
        self.layers, self.size, self.storage_dtype = tuple(layers), int(size), storage_dtype
        self.fingerprint = backbone_fingerprint(backbone)
        self.stats = CacheStats()
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_model(cls, model, root: str | os.PathLike, storage_dtype: torch.dtype = torch.float16) -> ActivationCache:
        return cls(root, model.backbone, model.decoder.extract_layers, model.input_size, storage_dtype,
                   project=model.projects_tokens, normalization=model.normalization)

    def key(self, image: torch.Tensor) -> str:
        parts = [image_hash(image), self.fingerprint, ",".join(map(str, self.layers)), str(self.size),
                 str(self.storage_dtype), f"project={self.project}",
                 f"mean={self.normalization.mean},std={self.normalization.std}"]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def encode(self, images: list[torch.Tensor] | torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Activations `[(B, T, width)] * len(layers)` (float32, on the backbone's device) and the patch grid;
        cached images are read, the others encoded in one batch and stored."""
        images = list(images)
        keys = [self.key(im) for im in images]
        found: dict[int, list[torch.Tensor]] = {}
        for i, key in enumerate(keys):
            path = self._path(key)
            if path.is_file():
                tensors = load_file(str(path))
                found[i] = [tensors[f"layer_{layer}"] for layer in self.layers]
        self.stats.hits += len(found)
        todo = [i for i in range(len(images)) if i not in found]
        self.stats.misses += len(todo)
        if todo:
            pixels = self.backbone.preprocess([images[i] for i in todo], size=self.size,
                                              normalization=self.normalization)
            encoding = self.backbone.encode_image(pixels, layers=self.layers, pooled=False, project=self.project)
            for j, i in enumerate(todo):
                acts = [a[j].to(self.storage_dtype).cpu().contiguous() for a in encoding.activations]
                found[i] = acts
                meta = {"backbone": self.backbone.name, "fingerprint": self.fingerprint, "size": str(self.size),
                        "layers": json.dumps(self.layers), "dtype": str(self.storage_dtype)}
                with atomic_path(self._path(keys[i])) as tmp:
                    tmp.write_bytes(save({f"layer_{layer}": a for layer, a in zip(self.layers, acts)}, metadata=meta))
        device = self.backbone.device
        stacked = [torch.stack([found[i][k] for i in range(len(images))]).to(device, torch.float32)
                   for k in range(len(self.layers))]
        return stacked, self.backbone.patch_grid(self.size)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.safetensors"))

    def report(self) -> str:
        return (f"activation cache {self.root}: {self.stats.hits} hits, {self.stats.misses} misses "
                f"(hit rate {self.stats.hit_rate:.0%}), {self.disk_bytes() / 2**20:.1f} MiB on disk")
