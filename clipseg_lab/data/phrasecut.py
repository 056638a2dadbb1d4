"""PhraseCut (VGPhraseCut v0): phrases over Visual Genome images with the polygons of every instance they name.

Layout (as the dataset ships, `data/VGPhraseCut_v0/`): `refer_<split>.json` for split train | val | test |
miniv: a list of tasks `{"task_id", "image_id", "phrase", "phrase_structure", "Polygons", "instance_boxes",
"ann_ids"}`, where `Polygons[i]` holds the polygons (`[[x, y], ...]`, several parts) of instance i;
`refer_input_<split>.json`: the same tasks without ground truth (for prediction); images in
`images/<image_id>.jpg`.

A task's mask is the union of all its instances' polygons, rasterised as PhraseCut's own `polygons_to_mask`
does (so the masks are the ones its evaluation scores); `holes=True` instead treats nested polygons of one
instance as holes (even-odd).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import polygons_to_mask
from clipseg_lab.images import load_rgb

SPLITS = ("train", "val", "test", "miniv")


class PhraseCut(RecordDataset):
    name = "phrasecut"

    def __init__(self, root: str | Path, split: str = "train", *, image_dir: str | Path | None = None,
                 input_only: bool = False, holes: bool = False, transform=None):
        super().__init__(transform)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.root, self.split, self.input_only, self.holes = Path(root), split, input_only, holes
        self.image_dir = Path(image_dir) if image_dir else self.root / "images"
        file = self.root / (f"refer_input_{split}.json" if input_only else f"refer_{split}.json")
        if not file.is_file():
            raise DatasetError(f"{file}: missing. Expected PhraseCut's refer_<split>.json (and images/<image_id>.jpg) "
                               f"in {self.root}")
        try:
            tasks = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{file}: not valid JSON ({exc})") from exc
        required = {"task_id", "image_id", "phrase"} | (set() if input_only else {"Polygons"})
        for task in tasks:
            lacking = required - set(task)
            image = self.image_dir / f"{task.get('image_id')}.jpg"
            if lacking:
                self.skip(str(task.get("task_id")), f"task without {sorted(lacking)}")
            elif not task["phrase"].strip():
                self.skip(str(task["task_id"]), "empty phrase")
            elif not image.is_file():
                self.skip(str(image), "image file missing")
            else:
                self.records.append(task)
        self.require_records(f"{file}")
        if self.skipped:
            self.report_skips()

    def load(self, task: dict) -> Sample:
        path = self.image_dir / f"{task['image_id']}.jpg"
        image = load_rgb(path)
        sample: Sample = {"image": image, "prompt": task["phrase"], "name": str(task["task_id"]), "source": str(path),
                          "dataset": self.name, "image_id": task["image_id"]}
        if not self.input_only:
            h, w = image.shape[-2:]
            mask, skipped = np.zeros((h, w), bool), 0
            for instance in task["Polygons"]:  # holes are per instance; instances are united
                part, n = polygons_to_mask(instance, h, w, holes=self.holes, source=f"task {task['task_id']}")
                mask |= part
                skipped += n
            if not mask.any():
                raise ValueError(f"task {task['task_id']} ({path}): its polygons enclose no pixel; the mask would be "
                                 "empty")
            sample["mask"] = torch.from_numpy(mask.astype("uint8"))
            sample["instances"] = len(task["Polygons"])
            sample["skipped_polygons"] = skipped
        return sample
