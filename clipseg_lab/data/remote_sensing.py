"""Remote-sensing tiles with semantic labels, in the layouts and label codings the field uses.

Layouts
* `reseg` (ReSeg-CLIP): `ROOT/<tile>/<target_image_name>` (default `R_G_B_IR.png`, 4 bands) with an optional
  `L.png` label in the same folder; tiles are found recursively.
* `mmseg`: `ROOT/img_dir[/<split>]/<name>.<ext>` with `ROOT/ann_dir[/<split>]/<name>.png`.

Label codings (`coding`) say what the label files hold; `label_to_class` maps each original value (an index,
or an (r, g, b) colour) to a class index or class name of `class_names`; anything mapped to 255 is ignored.
Presets: `isprs-colour` (ISPRS Potsdam / Vaihingen colour labels), `isprs-index` (mmseg's converted
Potsdam / Vaihingen: 0 = ignore, 1..6 the classes), `loveda` (0 = no-data, 1..7 the classes).
This `label_to_class` is about ground truth; the zero-shot pipeline's `query_to_class` maps text queries to
the same classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import IGNORE_INDEX, MaskError, check_size, decode_colours, read_label, remap_labels
from clipseg_lab.images import open_image

log = logging.getLogger(__name__)

ISPRS_CLASSES = ("impervious surface", "building", "low vegetation", "tree", "car", "clutter")
ISPRS_COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
BAND_PRESETS = {"RGB": (0, 1, 2), "IRRG": (3, 0, 1)}  # band indices into an R, G, B, IR image


@dataclass(frozen=True)
class LabelCoding:
    class_names: tuple[str, ...]
    label_to_class: Mapping[int | tuple[int, int, int], int] = field(default_factory=dict)
    colour: bool = False  # labels are (r, g, b) images


CODINGS = {
    "isprs-colour": LabelCoding(ISPRS_CLASSES, {c: i for i, c in enumerate(ISPRS_COLOURS)} | {(0, 0, 0): IGNORE_INDEX},
                                colour=True),
    "isprs-index": LabelCoding(ISPRS_CLASSES, {0: IGNORE_INDEX} | {i + 1: i for i in range(6)}),
    "loveda": LabelCoding(LOVEDA_CLASSES, {0: IGNORE_INDEX} | {i + 1: i for i in range(7)}),
}


def resolve_label_to_class(mapping: Mapping, class_names: Sequence[str]) -> dict:
    """Values may be class indices or class names; names must be in `class_names`."""
    out = {}
    for original, target in mapping.items():
        key = tuple(int(v) for v in original) if isinstance(original, (list, tuple)) else int(original)
        if isinstance(target, str):
            if target not in class_names:
                raise ValueError(f"label_to_class maps {original!r} to unknown class {target!r}; "
                                 f"classes are {list(class_names)}")
            target = class_names.index(target)
        out[key] = int(target)
    return out


@dataclass(frozen=True)
class Tile:
    name: str
    image: Path
    label: Path | None


def read_bands(path: Path) -> np.ndarray:
    """All bands of an image file as `(H, W, C)` (no alpha handling: a 4th band is a band, e.g. infrared)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(path)
        if array.ndim == 3 and array.shape[0] < array.shape[-1] and array.shape[0] <= 8:
            array = np.moveaxis(array, 0, -1)
    else:
        array = np.asarray(open_image(path))
    return array[..., None] if array.ndim == 2 else array


class RemoteSensingTiles(RecordDataset):
    name = "remote_sensing"

    def __init__(self, root: str | Path, *, layout: str = "auto", coding: str = "isprs-index",
                 class_names: Sequence[str] | None = None, label_to_class: Mapping | None = None,
                 bands: Sequence[int] | str = "RGB", split: str | None = None,
                 target_image_name: str = "R_G_B_IR.png", label_name: str = "L.png", transform=None):
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        if coding not in CODINGS:
            raise ValueError(f"unknown label coding {coding!r}; known: {', '.join(CODINGS)}")
        preset = CODINGS[coding]
        self.coding, self.colour = coding, preset.colour
        self.class_names = tuple(class_names or preset.class_names)
        self.label_to_class = resolve_label_to_class(label_to_class or preset.label_to_class, self.class_names)
        self.bands = BAND_PRESETS[bands] if isinstance(bands, str) else tuple(bands)
        if layout == "auto":
            layout = "mmseg" if (self.root / "img_dir").is_dir() else "reseg"
        self.layout = layout
        if layout == "mmseg":
            self._index_mmseg(split)
        elif layout == "reseg":
            self._index_reseg(target_image_name, label_name)
        else:
            raise ValueError(f"layout must be 'auto', 'mmseg' or 'reseg', not {layout!r}")
        self.require_records(f"{self.root} ({layout} layout)")

    def _index_mmseg(self, split: str | None) -> None:
        img_dir = self.root / "img_dir" / (split or "")
        ann_dir = self.root / "ann_dir" / (split or "")
        if not img_dir.is_dir():
            raise DatasetError(f"{img_dir}: missing (mmseg layout: img_dir/[split/], ann_dir/[split/])")
        for image in sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            rel = image.relative_to(img_dir).with_suffix(".png")
            label = ann_dir / rel
            if not label.is_file():
                self.skip(str(label), "label missing (tile kept without ground truth)")
            self.records.append(Tile(str(rel.with_suffix("")), image, label if label.is_file() else None))

    def _index_reseg(self, target_image_name: str, label_name: str) -> None:
        folders = sorted({p.parent for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES})
        for folder in folders:
            image = folder / target_image_name
            if not image.is_file():
                self.skip(str(folder), f"no {target_image_name} in the tile folder")
                continue
            label = folder / label_name
            self.records.append(Tile(str(folder.relative_to(self.root)), image, label if label.is_file() else None))

    def decode_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        if self.colour:
            if raw.ndim != 3:
                raise MaskError(f"{path}: coding {self.coding!r} expects colour labels, found a single-channel image")
            return decode_colours(raw, self.label_to_class, source=str(path))
        if raw.ndim != 2:
            raise MaskError(f"{path}: coding {self.coding!r} expects index labels, found {raw.shape[-1]} channels "
                            "(use coding='isprs-colour' for colour-coded labels)")
        return remap_labels(raw, self.label_to_class, source=str(path))

    def load(self, tile: Tile) -> Sample:
        bands = read_bands(tile.image)
        if max(self.bands) >= bands.shape[-1]:
            raise ValueError(f"{tile.image}: has {bands.shape[-1]} bands; bands={self.bands} asks for more")
        image = torch.from_numpy(np.ascontiguousarray(bands[..., list(self.bands)])).permute(2, 0, 1)
        if image.dtype != torch.uint8:  # 16-bit tiles: stretch by the dtype's range
            image = (image.float() / np.iinfo(bands.dtype).max * 255).round().to(torch.uint8)
        sample: Sample = {"image": image.contiguous(), "name": tile.name, "source": str(tile.image),
                          "dataset": self.name, "has_label": tile.label is not None,
                          "prompt": ", ".join(self.class_names)}
        if tile.label is not None:
            mask = self.decode_label(tile.label)
            check_size(tuple(image.shape[-2:]), mask, image=tile.image, mask_file=tile.label)
            sample["mask"], sample["mask_source"] = torch.from_numpy(mask), str(tile.label)
        else:  # explicit "no ground truth", never an all-background mask
            sample["mask"] = torch.full(tuple(image.shape[-2:]), IGNORE_INDEX, dtype=torch.uint8)
        return sample
