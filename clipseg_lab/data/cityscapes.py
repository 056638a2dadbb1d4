"""Cityscapes fine annotations (gtFine): images, semantic train ids, and an instance-level object map.

Layout (as the dataset ships): `leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` with
`gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png` (16-bit) and `..._gtFine_labelIds.png`.
Splits: train, val, test (the test annotations are withheld: every pixel is "unlabeled"), or "all".

Label conventions (cityscapesScripts' `labels.py`):
* `labelIds` are the 34 label ids (0 unlabeled ... 33 bicycle, -1 license plate). Ids with `ignoreInEval`
  (0-6 unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground; 9 parking,
  10 rail track, 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup, 29 caravan, 30 trailer) are ignored:
  the sample's `mask` holds the 19 evaluated train ids (0 road ... 18 bicycle) and 255 elsewhere.
* `instanceIds`: a pixel of a countable object ("thing": person, rider, car, truck, bus, train, motorcycle,
  bicycle) holds `labelId * 1000 + k`, one value per instance; every other pixel holds its label id. A thing
  pixel below 1000 belongs to a crowd ("group") region that was not split into instances.

`instance_mask` (int32, -1 = ignore) is the object map for "same object" questions: one id per thing
instance, the label id for each evaluated stuff class (all road is one region), -1 for ignored classes and,
with `groups="ignore"` (default), for crowd regions too (they hold several objects whose boundaries are not
annotated; `groups="keep"` treats each crowd region as one object). When `instanceIds.png` is absent the
loader falls back to `labelIds.png` and says so in the sample (`instances: False`) and in `notes` (the
record is kept, so it is not in `skipped`): then each thing class is one region per class, like stuff
(nothing is dropped as a crowd).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import IGNORE_INDEX, MaskError, check_size, read_label
from clipseg_lab.images import load_rgb

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")
# label id -> train id for the 19 evaluated classes (cityscapesScripts labels.py); every other id is ignored
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle")
IGNORE_IN_EVAL = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)
HAS_INSTANCES = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)
GROUPS = ("ignore", "keep")


@dataclass(frozen=True)
class CityscapesRecord:
    name: str  # <city>_<seq>_<frame>
    split: str
    city: str
    image: Path
    label: Path  # instanceIds.png, or labelIds.png when the instance file is absent
    instances: bool


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> the 19 train ids, 255 for everything not evaluated."""
    lut = np.full(max(int(label_ids.max(initial=0)) + 1, 34), IGNORE_INDEX, np.uint8)
    for label, train in LABEL_TO_TRAIN.items():
        lut[label] = train
    return lut[label_ids]


def instance_ids_to_objects(ids: np.ndarray, groups: str = "ignore") -> np.ndarray:
    """`instanceIds` (or `labelIds`) -> an int32 object map: thing instances keep their id, stuff its label id,
    ignored classes (and crowd regions with `groups="ignore"`) become -1."""
    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}, not {groups!r}")
    ids = ids.astype(np.int32)
    label = np.where(ids >= 1000, ids // 1000, ids)
    objects = ids.copy()
    drop = ~np.isin(label, list(LABEL_TO_TRAIN))  # IGNORE_IN_EVAL and any id outside the 34 labels
    if groups == "ignore":
        drop |= (ids < 1000) & np.isin(label, HAS_INSTANCES)
    objects[drop] = -1
    return objects


class Cityscapes(RecordDataset):
    """Each sample: `image`, `mask` (uint8 train ids, 255 ignore), `instance_mask` (int32 object ids, -1
    ignore; see the module docstring), `instances` (whether instance ids were available), `city`, `name`,
    `source`, `mask_source`, `prompt` (the class names)."""

    name = "cityscapes"
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "val", *, groups: str = "ignore", transform=None):
        super().__init__(transform)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if groups not in GROUPS:
            raise ValueError(f"groups must be one of {GROUPS}, not {groups!r}")
        self.root, self.split, self.groups = Path(root), split, groups
        self.fallbacks: list[str] = []  # instanceIds files that were missing (labelIds used instead)
        self.notes: list[str] = []  # what a report should say about this split besides skips
        images_root = self.root / "leftImg8bit"
        if not images_root.is_dir():
            raise DatasetError(f"{images_root}: missing. Expected the Cityscapes layout leftImg8bit/<split>/<city>/"
                               "*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_instanceIds.png")
        splits = [s for s in SPLITS[:3] if (images_root / s).is_dir()] if split == "all" else [split]
        for s in splits:
            for image in sorted((images_root / s).glob("*/*_leftImg8bit.png")):
                stem = image.name[: -len("_leftImg8bit.png")]
                folder = self.root / "gtFine" / s / image.parent.name
                instance, labels = folder / f"{stem}_gtFine_instanceIds.png", folder / f"{stem}_gtFine_labelIds.png"
                if instance.is_file():
                    self.records.append(CityscapesRecord(stem, s, image.parent.name, image, instance, True))
                elif labels.is_file():  # kept, so not a skip: noted
                    self.fallbacks.append(str(instance))
                    self.records.append(CityscapesRecord(stem, s, image.parent.name, image, labels, False))
                else:
                    self.skip(str(image), "no gtFine instanceIds or labelIds annotation")
        self.require_records(f"{self.root} split {split!r}")
        if self.fallbacks:
            self.notes.append(f"{len(self.fallbacks)} image(s) without instanceIds (e.g. {self.fallbacks[0]}): "
                              "labelIds used, so the instances of a class are one region (no instance separation)")
            log.warning("%s split %s: %s", self.root, split, self.notes[-1])

    def load(self, record: CityscapesRecord) -> Sample:
        image = load_rgb(record.image)
        raw = read_label(record.label)
        if raw.ndim != 2:
            raise MaskError(f"{record.label}: expected a single-channel id image, found shape {raw.shape}")
        check_size(tuple(image.shape[-2:]), raw, image=record.image, mask_file=record.label)
        ids = raw.astype(np.int32)
        label_ids = np.where(ids >= 1000, ids // 1000, ids)
        return {"image": image, "mask": torch.from_numpy(label_ids_to_train_ids(label_ids)),
                # from labelIds alone every thing pixel looks like a crowd: keep those as class regions
                "instance_mask": torch.from_numpy(instance_ids_to_objects(ids, self.groups if record.instances
                                                                          else "keep")),
                "instances": record.instances, "prompt": ", ".join(CLASS_NAMES), "name": record.name,
                "city": record.city, "split": record.split, "source": str(record.image),
                "mask_source": str(record.label), "dataset": self.name}
