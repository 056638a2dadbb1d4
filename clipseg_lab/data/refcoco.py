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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import coco_segmentation_to_mask
from clipseg_lab.files import load_data_pickle
from clipseg_lab.images import load_rgb

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
    refs = load_data_pickle(refs_file)  # the refer toolkit's own format, read as data only (never run)
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
                "name": f"{r.dataset}_{r.ref_id}_{r.sent_id}",
                "source": str(path) + (" (placeholder)" if placeholder else ""),
                "placeholder": placeholder, "dataset": r.dataset, "ref_id": r.ref_id, "ann_id": int(r.ann["id"]),
                "coco_area": float(r.ann.get("area", float("nan"))), "category_id": int(r.ann.get("category_id", -1))}

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self), "refs": len({r.ref_id for r in self.records}),
                "images": len({r.image["id"] for r in self.records}), "missing_images": len(self.missing_images)}


_TEXT_COLUMNS = ("sentences", "sentence", "sent", "expression", "question", "caption", "text")
_MASK_COLUMNS = ("mask", "segmentation", "raw_anns", "polygons")


def _sentences(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    out = []
    for item in value or []:
        if isinstance(item, dict):
            item = item.get("sent") or item.get("raw") or item.get("text") or ""
        if str(item).strip():
            out.append(str(item))
    return out


def _mask_from_value(value, height: int, width: int, source: str) -> np.ndarray:
    """A mask column's value: an image / array, COCO polygons or RLE, or a JSON string holding either."""
    from PIL import Image as PILImage

    if isinstance(value, PILImage.Image):
        return np.asarray(value.convert("L")) > 0
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and "segmentation" in value:  # a whole COCO annotation (raw_anns)
        value = value["segmentation"]
    if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], (list, tuple))
                                   and value[0] and not isinstance(value[0][0], (list, tuple))):
        return coco_segmentation_to_mask(value, height, width)
    if isinstance(value, list) and value and isinstance(value[0], (int, float)):  # one flat polygon
        return coco_segmentation_to_mask([value], height, width)
    array = np.asarray(value)
    if array.ndim == 2:
        return array > 0
    raise ValueError(f"{source}: cannot read a mask from a {type(value).__name__} (expected an image, COCO polygons "
                     "or RLE)")


class RefCOCOHF(RecordDataset):
    """RefCOCO saved with Hugging Face `datasets`: a `save_to_disk` folder (arrow) or parquet file(s).

    Columns are found by name: an image column (`image`), a text column (one of `sentences` — strings or
    {"sent": ...} dicts — `sentence`, `expression`, `question`, `caption`, `text`) and a mask column (`mask` as an
    image, or `segmentation` / `raw_anns` / `polygons` with COCO polygons or RLE, possibly as JSON text). One
    sample per (row, sentence).
    """

    name = "refcoco_hf"

    def __init__(self, path: str | Path, split: str = "train", *, text_column: str | None = None,
                 mask_column: str | None = None, transform=None):
        super().__init__(transform)
        import datasets

        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such dataset folder or parquet file")
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            data = datasets.load_from_disk(str(path))
        else:
            files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
            chosen = [f for f in files if split in f.stem or split == f.parent.name] or files
            if not chosen:
                raise DatasetError(f"{path}: no parquet files and no save_to_disk dataset (dataset_dict.json)")
            data = datasets.load_dataset("parquet", data_files=[str(f) for f in chosen], split="train")
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DatasetError(f"{path}: no split {split!r}; it has {list(data)}")
            data = data[split]
        self.data, self.path, self.split = data, path, split
        columns = set(data.column_names)
        self.text_column = text_column or next((c for c in _TEXT_COLUMNS if c in columns), None)
        self.mask_column = mask_column or next((c for c in _MASK_COLUMNS if c in columns), None)
        if "image" not in columns or self.text_column is None or self.mask_column is None:
            raise DatasetError(f"{path}: needs an 'image' column, a text column ({', '.join(_TEXT_COLUMNS)}) and a "
                               f"mask column ({', '.join(_MASK_COLUMNS)}); it has {sorted(columns)}")
        for row, value in enumerate(data[self.text_column]):
            sentences = _sentences(value)
            if not sentences:
                self.skip(f"row {row}", "no sentence")
            self.records += [(row, k, s) for k, s in enumerate(sentences)]
        self.require_records(f"{path} split {split!r}")

    def load(self, record) -> Sample:
        row, k, sentence = record
        item = self.data[row]
        image = load_rgb(item["image"])
        h, w = image.shape[-2:]
        source = f"{self.path}#{self.split}[{row}]"
        mask = _mask_from_value(item[self.mask_column], h, w, source)
        if mask.shape != (h, w):
            raise ValueError(f"{source}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
        return {"image": image, "mask": torch.from_numpy(mask.astype(np.uint8)), "prompt": sentence,
                "name": f"{self.split}_{row}_{k}", "source": source, "dataset": self.name}
