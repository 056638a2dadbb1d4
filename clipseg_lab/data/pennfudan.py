"""Penn-Fudan pedestrians: images with one instance mask each.

Layout (as the dataset ships, `PennFudanPed/`): `PNGImages/<name>.png` and `PedMasks/<name>_mask.png`, the
mask holding 0 for background and 1..N for the N pedestrians (a palette PNG in the original archive).

The dataset has no official split. "all" (default) is every image; train / val / test are a seeded split of
the sorted names, as `OxfordPet` does without split files: `test_fraction` (default 0.3) of the shuffled
names is `test`, `val_fraction` (default 0.1) of the rest is `val`. A split that comes out empty (tiny
samples) raises `DatasetError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import MaskError, check_size, read_label
from clipseg_lab.data.oxford_pet import seeded_split
from clipseg_lab.images import load_rgb

SPLITS = ("all", "train", "val", "test", "trainval")
TARGETS = ("instances", "binary")


@dataclass(frozen=True)
class PedRecord:
    name: str
    image: Path
    mask: Path


class PennFudan(RecordDataset):
    """`target`: "instances" (mask = 0 background, 1..N pedestrians, as the file holds) or "binary" (0 / 1
    person). Every sample also carries `instance_mask` (int32 instance ids, 0 background; nothing is ignored)
    and `num_instances`; `prompt` is "a person"."""

    name = "pennfudan"
    class_names = ("background", "person")

    def __init__(self, root: str | Path, split: str = "all", target: str = "instances", *, split_seed: int = 0,
                 test_fraction: float = 0.3, val_fraction: float = 0.1, transform=None):
        super().__init__(transform)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.root, self.split, self.target = Path(root), split, target
        images, masks = self.root / "PNGImages", self.root / "PedMasks"
        if not images.is_dir() or not masks.is_dir():
            raise DatasetError(f"{self.root}: expected the Penn-Fudan layout PNGImages/<name>.png and "
                               "PedMasks/<name>_mask.png")
        found = {p.stem: p for p in sorted(images.glob("*.png"))}
        if split != "all":
            trainval, test = seeded_split(list(found), test_fraction, split_seed)
            train, val = seeded_split(sorted(trainval), val_fraction, split_seed + 1)
            chosen = {"train": train, "val": val, "test": test, "trainval": trainval}[split]
            found = {k: v for k, v in found.items() if k in chosen}
        for name, image in found.items():
            mask = masks / f"{name}_mask.png"
            if mask.is_file():
                self.records.append(PedRecord(name, image, mask))
            else:
                self.skip(str(mask), "mask missing")
        self.require_records(f"{self.root} split {split!r}")

    def load(self, record: PedRecord) -> Sample:
        image = load_rgb(record.image)
        ids = read_label(record.mask)
        if ids.ndim != 2:
            raise MaskError(f"{record.mask}: expected a single-channel instance mask (0 background, 1..N), found "
                            f"shape {ids.shape}")
        check_size(tuple(image.shape[-2:]), ids, image=record.image, mask_file=record.mask)
        ids = ids.astype(np.int32)
        if self.target == "instances" and ids.max(initial=0) > 254:
            raise MaskError(f"{record.mask}: {ids.max()} instances do not fit a uint8 mask; use target='binary' "
                            "and the sample's instance_mask")
        mask = (ids > 0) if self.target == "binary" else ids
        return {"image": image, "mask": torch.from_numpy(mask.astype(np.uint8)),
                "instance_mask": torch.from_numpy(ids), "num_instances": int(len(np.unique(ids[ids > 0]))),
                "prompt": "a person", "name": record.name, "source": str(record.image),
                "mask_source": str(record.mask), "dataset": self.name}
