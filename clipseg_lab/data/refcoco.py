"""RefCOCO, RefCOCO+ and RefCOCOg referring expressions with COCO masks: one sample per (ref, sentence).

Annotation layouts:
* the refer toolkit's: `<root>/<dataset>/refs(<split_by>).p` + `<root>/<dataset>/instances.json`
  (dataset refcoco | refcoco+ | refcocog; split_by unc | google | umd);
* one JSON file `{"ref": [...], "coco_anns": {image_id: {"info": ..., "anns": [...]}}}` (TensorFlow Datasets'
  layout; each ref names its dataset and partition).

Images are COCO train2014 files (`COCO_train2014_<id>.jpg`) in `image_dir`. When they are missing, the loader
says so and stops, unless `images="placeholder"`: then each sample gets a flat grey image of the true size,
marked `placeholder=True` (for smoke runs with real annotations and no images).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.images import load_rgb
from clipseg_lab.data.masks import coco_segmentation_to_mask

SPLITS = ("train", "val", "test", "testA", "testB")


@dataclass(frozen=True)
class RefRecord:
    ref_id: int
    sentence: str
    sent_id: int
    ann: dict
    image: dict  # COCO image info: id, file_name, height, width
    split: str
    dataset: str


def _from_refer_dir(root: Path, dataset: str, split_by: str) -> tuple[list[dict], dict[int, dict], dict[int, dict]]:
    folder = root / dataset
    refs_file, instances_file = folder / f"refs({split_by}).p", folder / "instances.json"
    for f in (refs_file, instances_file):
        if not f.is_file():
            raise DatasetError(f"{f}: missing. Expected the refer layout <root>/{dataset}/refs({split_by}).p and "
                               f"<root>/{dataset}/instances.json")
    with open(refs_file, "rb") as fh:
        refs = pickle.load(fh)  # the refer toolkit's own format
    instances = json.loads(instances_file.read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    return refs, anns, images


def _from_single_json(path: Path, dataset: str, split_by: str) -> tuple[list[dict], dict[int, dict], dict[int, dict]]:
    data = json.loads(path.read_text())
    if not {"ref", "coco_anns"} <= set(data):
        raise DatasetError(f"{path}: expected keys 'ref' and 'coco_anns' (one-file RefCOCO layout), found {list(data)}")
    refs = [r for r in data["ref"] if r.get("dataset") == dataset and r.get("dataset_partition") == split_by]
    anns, images = {}, {}
    for image_id, entry in data["coco_anns"].items():
        images[int(image_id)] = entry["info"]
        for a in entry["anns"]:
            anns[a["id"]] = a
    for r in refs:  # refs embed their own annotation
        anns.setdefault(r["ann_id"], r.get("ann", {}))
    return refs, anns, images


class RefCOCO(RecordDataset):
    name = "refcoco"

    def __init__(self, annotations: str | Path, dataset: str = "refcoco", split_by: str = "unc",
                 split: str = "train", *, image_dir: str | Path | None = None, images: str = "require",
                 transform=None):
        super().__init__(transform)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if images not in ("require", "placeholder"):
            raise ValueError("images must be 'require' or 'placeholder'")
        annotations = Path(annotations)
        self.dataset, self.split_by, self.split, self.images = dataset, split_by, split, images
        self.name = f"{dataset}({split_by}) {split}"
        if annotations.is_file():
            refs, anns, coco_images = _from_single_json(annotations, dataset, split_by)
        elif annotations.is_dir():
            refs, anns, coco_images = _from_refer_dir(annotations, dataset, split_by)
        else:
            raise DatasetError(f"{annotations}: no such annotation file or folder")
        for ref in refs:
            if ref["split"] != split:
                continue
            ann, info = anns.get(ref["ann_id"]), coco_images.get(ref["image_id"])
            if ann is None or info is None:
                self.skip(f"ref {ref['ref_id']}", "annotation or image info missing")
                continue
            for sent in ref["sentences"]:
                self.records.append(RefRecord(ref["ref_id"], sent["sent"], sent["sent_id"], ann, info, split, dataset))
        self.require_records(f"{annotations} {dataset}({split_by}) split {split!r}")
        self.image_dir = Path(image_dir) if image_dir else None
        missing = [r.image["file_name"] for r in self.records
                   if self.image_dir is None or not (self.image_dir / r.image["file_name"]).is_file()]
        self.missing_images = sorted(set(missing))
        if self.missing_images and images == "require":
            where = f"in {self.image_dir}" if self.image_dir else "(no image_dir given)"
            raise DatasetError(
                f"{len(self.missing_images)} COCO image(s) of {self.name} not found {where}, e.g. "
                f"{self.missing_images[0]}. Pass image_dir=<COCO train2014 folder>, or images='placeholder' to use "
                "grey placeholders of the true sizes (smoke runs only: predictions on them mean nothing).")

    def load(self, r: RefRecord) -> Sample:
        h, w = int(r.image["height"]), int(r.image["width"])
        path = self.image_dir / r.image["file_name"] if self.image_dir else Path(r.image["file_name"])
        placeholder = r.image["file_name"] in self.missing_images
        image = torch.full((3, h, w), 128, dtype=torch.uint8) if placeholder else load_rgb(path)
        if tuple(image.shape[-2:]) != (h, w):
            raise ValueError(f"{path}: image is {image.shape[-1]}x{image.shape[-2]} but the annotations say {w}x{h}")
        mask = coco_segmentation_to_mask(r.ann["segmentation"], h, w)
        return {"image": image, "mask": torch.from_numpy(mask.astype(np.uint8)), "prompt": r.sentence,
                "name": f"{r.dataset}_{r.ref_id}_{r.sent_id}", "source": str(path) + (" (placeholder)" if placeholder else ""),
                "placeholder": placeholder, "dataset": r.dataset, "ref_id": r.ref_id, "ann_id": int(r.ann["id"]),
                "coco_area": float(r.ann.get("area", float("nan"))), "category_id": int(r.ann.get("category_id", -1))}

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self), "refs": len({r.ref_id for r in self.records}),
                "images": len({r.image["id"] for r in self.records}), "missing_images": len(self.missing_images)}
