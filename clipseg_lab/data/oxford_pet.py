"""Oxford-IIIT Pet: images, trimaps and species labels (background / cat / dog), for segmentation.

Layout (as the dataset ships): `images/<name>.jpg`, `annotations/trimaps/<name>.png` (1 pet, 2 background,
3 boundary), `annotations/list.txt` (`<name> <class id> <species 1=cat 2=dog> <breed id>`), and the official
splits `annotations/trainval.txt` / `annotations/test.txt` in the same format.

When the split files are absent (as in small samples), the split is made from `list.txt`: the names are
sorted, shuffled with `split_seed`, and the first `test_fraction` (default 0.5, about the official 3,669 /
7,349) becomes `test`; `val_fraction` of the rest (default 0.1) is carved out as `val` the same way, so
`train` + `val` = `trainval`. The loader logs that it did so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import IGNORE_INDEX, check_size, read_label
from clipseg_lab.images import load_rgb

log = logging.getLogger(__name__)

SPECIES = {1: "cat", 2: "dog"}
CLASS_NAMES = ("background", "cat", "dog")
TARGETS = ("species", "binary", "trimap")
_SAID: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class PetRecord:
    name: str
    species: int  # 1 cat, 2 dog
    breed: str


def read_list(path: Path) -> list[PetRecord]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 4 or not parts[2].isdigit() or int(parts[2]) not in SPECIES:
            raise DatasetError(f"{path}:{number}: expected '<name> <class id> <species 1|2> <breed id>', got {line!r}")
        breed = parts[0].rsplit("_", 1)[0].replace("_", " ")
        records.append(PetRecord(parts[0], int(parts[2]), breed))
    return records


def seeded_split(names: list[str], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(rest, carved): `fraction` of the sorted names, shuffled with `seed`, go to `carved`."""
    order = sorted(names)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n = int(round(len(order) * fraction))
    return set(order[n:]), set(order[:n])


class OxfordPet(RecordDataset):
    """`target`: "species" (0 background, 1 cat, 2 dog, 255 boundary), "binary" (0, 1 pet, 255 boundary) or
    "trimap" (the raw 1/2/3). Each sample carries `prompt` ("a cat"), `prompts` (species and breed phrasings),
    `species`, `breed`, `name` and `source`."""

    name = "oxford_pet"

    def __init__(self, root: str | Path, split: str = "trainval", target: str = "species", *, split_seed: int = 0,
                 test_fraction: float = 0.5, val_fraction: float = 0.1, transform=None):
        super().__init__(transform)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        if split not in ("trainval", "train", "val", "test", "all"):
            raise ValueError(f"split must be trainval, train, val, test or all, not {split!r}")
        self.root, self.split, self.target = Path(root), split, target
        self.class_names = CLASS_NAMES if target == "species" else ("background", "pet")
        ann = self.root / "annotations"
        list_file = ann / "list.txt"
        if not list_file.is_file():
            raise DatasetError(f"{list_file}: missing. Expected the Oxford-IIIT Pet layout: images/, "
                               "annotations/trimaps/, annotations/list.txt (and trainval.txt, test.txt)")
        every = {r.name: r for r in read_list(list_file)}
        official = {s: ann / f"{s}.txt" for s in ("trainval", "test")}
        if all(p.is_file() for p in official.values()):
            trainval = {r.name for r in read_list(official["trainval"])}
            test = {r.name for r in read_list(official["test"])}
            self.split_source = "official trainval.txt / test.txt"
        else:
            trainval, test = seeded_split(list(every), test_fraction, split_seed)
            self.split_source = (f"seeded split of list.txt (seed {split_seed}, test {test_fraction:.0%}); "
                                 f"no {official['trainval'].name} / {official['test'].name} in {ann}")
            if (str(self.root), self.split_source) not in _SAID:  # once per folder, not once per split opened
                _SAID.add((str(self.root), self.split_source))
                log.warning("%s: %s", self.root, self.split_source)
        train, val = seeded_split(sorted(trainval), val_fraction, split_seed + 1)
        chosen = {"trainval": trainval, "train": train, "val": val, "test": test, "all": set(every)}[split]
        for name in sorted(chosen):
            record = every.get(name)
            image, trimap = self.root / "images" / f"{name}.jpg", ann / "trimaps" / f"{name}.png"
            if record is None:
                self.skip(name, "in a split file but not in list.txt")
            elif not image.is_file():
                self.skip(str(image), "image file missing")
            elif not trimap.is_file():
                self.skip(str(trimap), "trimap missing")
            else:
                self.records.append(record)
        self.require_records(f"{self.root} split {split!r}")

    def load(self, record: PetRecord) -> Sample:
        image_path = self.root / "images" / f"{record.name}.jpg"
        trimap_path = self.root / "annotations" / "trimaps" / f"{record.name}.png"
        image = load_rgb(image_path)
        trimap = read_label(trimap_path)
        check_size(tuple(image.shape[-2:]), trimap, image=image_path, mask_file=trimap_path)
        bad = set(np.unique(trimap).tolist()) - {1, 2, 3}
        if bad:
            raise ValueError(f"{trimap_path}: trimap values {sorted(bad)} outside 1 (pet), 2 (background), "
                             "3 (boundary)")
        if self.target == "trimap":
            mask = trimap.astype(np.uint8)
        else:
            fg = record.species if self.target == "species" else 1
            mask = np.select([trimap == 1, trimap == 2], [fg, 0], IGNORE_INDEX).astype(np.uint8)
        species = SPECIES[record.species]
        return {"image": image, "mask": torch.from_numpy(mask), "prompt": f"a {species}",
                "prompts": [f"a {species}", f"a photo of a {species}", f"a photo of a {record.breed}, a type of pet"],
                "species": species, "breed": record.breed, "name": record.name, "source": str(image_path),
                "mask_source": str(trimap_path), "dataset": self.name}
