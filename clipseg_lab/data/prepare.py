"""`prepare`: a processed copy of a dataset, as the seeds' preprocessing scripts make it.

    OUT/Train|Val|Test/images/<name>.png        resized for the segmentation network (default 512 x 512)
    OUT/Train|Val|Test/images_clip/<name>.png   resized for the backbone (default 352 x 352)
    OUT/Train|Val|Test/masks/<name>.png         label masks resized with nearest neighbour (network size)
    OUT/Train|Val|Test/samples.csv              name, prompt, source image, mask source
    OUT/manifest.json                           dataset, sizes, counts, skipped samples and why

Polygons (PhraseCut, RefCOCO) are rasterised into the mask PNGs. The copy is written into a temporary
folder beside OUT and renamed at the end, so OUT is either complete or absent.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.transforms import v2
from tqdm.auto import tqdm

from clipseg_lab.data.registry import DATASETS, open_dataset
from clipseg_lab.files import write_json

log = logging.getLogger(__name__)


def _resize(array: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    import torch
    from torchvision import tv_tensors

    t = torch.from_numpy(array)
    if nearest:
        out = v2.functional.resize(tv_tensors.Mask(t[None]), [size, size])[0]
    else:
        out = v2.functional.resize(tv_tensors.Image(t), [size, size], antialias=True)
    return out.numpy()


def prepare_dataset(name: str, root: str | Path | None, out: str | Path, *, network_size: int = 512,
                    backbone_size: int = 352, overwrite: bool = False, limit: int | None = None,
                    **options: Any) -> dict[str, Any]:
    """Write the processed copy; returns the manifest. Samples that fail to load are skipped and listed."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    entry = DATASETS[name] if name in DATASETS else None
    if entry is None:
        open_dataset(name, root, "train")  # raises the unknown-name error
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    manifest: dict[str, Any] = {"dataset": name, "source": str(root), "network_size": network_size,
                                "backbone_size": backbone_size, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "splits": {}, "skipped": []}
    try:
        for ours, theirs in entry.splits.items():
            try:
                data = open_dataset(name, root, theirs, **options)
            except (FileNotFoundError, ValueError) as exc:
                manifest["splits"][ours] = {"samples": 0, "note": f"not available: {exc}"}
                continue
            folder = staging / ours
            for sub in ("images", "images_clip", "masks"):
                (folder / sub).mkdir(parents=True)
            rows, count = [], min(len(data), limit) if limit else len(data)
            for i in tqdm(range(count), desc=f"{name} {ours}", leave=False):
                try:
                    s = data[i]
                except Exception as exc:  # one bad file must not stop the copy: count it and go on
                    manifest["skipped"].append({"split": ours, "index": i, "reason": f"{type(exc).__name__}: {exc}"})
                    continue
                stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s["name"]))
                image = s["image"].numpy()
                Image.fromarray(_resize(image, network_size, False).transpose(1, 2, 0)).save(folder / "images" / f"{stem}.png")
                Image.fromarray(_resize(image, backbone_size, False).transpose(1, 2, 0)).save(
                    folder / "images_clip" / f"{stem}.png")
                if "mask" in s:
                    Image.fromarray(_resize(s["mask"].numpy(), network_size, True)).save(folder / "masks" / f"{stem}.png")
                rows.append({"name": stem, "prompt": s.get("prompt", ""), "source": s.get("source", ""),
                             "mask_source": s.get("mask_source", s.get("source", "")),
                             "placeholder": s.get("placeholder", False)})
            with open(folder / "samples.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["name"])
                writer.writeheader()
                writer.writerows(rows)
            manifest["splits"][ours] = {"samples": len(rows), "dataset_split": theirs,
                                        "dataset_skipped": [list(x) for x in getattr(data, "skipped", [])]}
        write_json(staging / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if manifest["skipped"]:
        log.warning("%s: skipped %d samples (see %s)", name, len(manifest["skipped"]), out / "manifest.json")
    return manifest
