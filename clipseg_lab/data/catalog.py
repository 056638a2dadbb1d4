"""The datasets found in a samples folder (../shared/data or $CLIPSEG_LAB_SAMPLES), and their statistics."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipseg_lab.data.masks import IGNORE_INDEX

log = logging.getLogger(__name__)


@dataclass
class FoundDataset:
    label: str  # e.g. "Oxford-IIIT Pet (real sample)"
    dataset: Any
    class_names: tuple[str, ...] | None  # None: binary referring masks
    note: str = ""


def default_samples_dir() -> Path:
    return Path(os.environ.get("CLIPSEG_LAB_SAMPLES", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def find_sample_datasets(root: str | Path | None = None,
                         synthetic_scenes: int = 16) -> tuple[list[FoundDataset], list[str]]:
    """Every dataset this package can open under `root`, plus SyntheticShapes; and a list of what is absent."""
    from clipseg_lab.data.oxford_pet import OxfordPet
    from clipseg_lab.data.refcoco import RefCOCO
    from clipseg_lab.data.remote_sensing import RemoteSensingTiles
    from clipseg_lab.data.synthetic import SyntheticShapes

    root = Path(root) if root else default_samples_dir()
    found, absent = [], []
    candidates = [
        ("Oxford-IIIT Pet (real sample)", root / "oxford_pet", lambda p: OxfordPet(p, "all"), None),
        ("ISPRS Potsdam (real sample)", root / "remote_sensing" / "potsdam",
         lambda p: RemoteSensingTiles(p, coding="isprs-index"), None),
        ("LoveDA (real sample)", root / "remote_sensing" / "loveda", lambda p: RemoteSensingTiles(p, coding="loveda"),
         None),
        ("RefCOCO (real annotations, placeholder images)", root / "refcoco" / "refcoco.json",
         lambda p: RefCOCO(p, "refcoco", "unc", "val", images="placeholder"),
         "COCO images are not in the sample: grey placeholders of the true sizes"),
    ]
    for label, path, build, note in candidates:
        if not path.exists():
            absent.append(f"{label}: {path} not found")
            continue
        data = build(path)
        found.append(FoundDataset(label, data, getattr(data, "class_names", None), note or ""))
    absent.append("PhraseCut: no real sample exists here (the loader is tested on fixtures in its format)")
    shapes = SyntheticShapes(synthetic_scenes, size=160, seed=0)
    found.append(FoundDataset("SyntheticShapes (synthetic)", shapes, None, "procedural scenes, referring prompts"))
    return found, absent


def sample_statistics(found: FoundDataset, limit: int = 50) -> list[dict[str, Any]]:
    """Per sample: dataset, name, size, foreground share (referring) or per-class pixel shares (semantic)."""
    rows = []
    data = found.dataset
    for i in range(min(len(data), limit)):
        s = data[i]
        mask = s["mask"].numpy()
        valid = mask != IGNORE_INDEX
        row = {"dataset": found.label, "name": s["name"], "height": mask.shape[0], "width": mask.shape[1],
               "ignored_share": float(1 - valid.mean())}
        if found.class_names is None:
            row["mask_share"] = float(mask[valid].astype(bool).mean()) if valid.any() else np.nan
            row["prompt"] = s["prompt"]
        else:
            counts = np.bincount(mask[valid].ravel(), minlength=len(found.class_names))[: len(found.class_names)]
            total = max(int(valid.sum()), 1)
            row.update({f"class:{c}": counts[k] / total for k, c in enumerate(found.class_names)})
        rows.append(row)
    return rows
