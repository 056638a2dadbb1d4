"""`prepare`: a processed copy of a dataset, as the seeds' preprocessing scripts make it.

    OUT/Train|Val|Test/images/<name>.png        resized for the segmentation network (default 512 x 512)
    OUT/Train|Val|Test/images_clip/<name>.png   resized for the backbone (default 352 x 352)
    OUT/Train|Val|Test/masks/<name>.png         label masks resized with nearest neighbour (network size)
    OUT/Train|Val|Test/samples.csv              name, prompt, source image, mask source
    OUT/manifest.json                           dataset, sizes, counts, skipped samples and why

Polygons (PhraseCut, RefCOCO) are rasterised into the mask PNGs. The copy is written into a temporary
folder beside OUT and moved in at the end, manifest.json last; OUT's owner file (clipseg_lab.ownership) lists
what prepare wrote, so --overwrite replaces exactly that and nothing a user put beside it. The same command with
the same inputs finds the copy complete and returns at once.
"""

from __future__ import annotations

import json
import logging
import os
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
from clipseg_lab.errors import OutputDirError
from clipseg_lab.files import write_csv, write_json
from clipseg_lab.ownership import claim

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


PREPARED_NAMES = ("manifest.json", "Train", "Val", "Test")  # what prepare wrote before owner files existed


def _publish(staging: Path, ownership) -> None:
    """Move the finished copy into OUT: the replaced run's entries go first, manifest.json comes last (the
    commit: a copy without it is unfinished and is redone), and the owner file lists each entry before it lands."""
    out = ownership.folder
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in staging.iterdir() if p.name != "manifest.json") + ["manifest.json"]
    theirs = [n for n in names if (out / n).exists() and n not in {e.rstrip("/") for e in ownership.replaced}]
    if theirs:  # a file of the user's where ours would go: never replaced
        raise OutputDirError(f"{out}: holds {', '.join(theirs)}, which prepare did not write; move it away or choose "
                             "another --out")
    ownership.remove_replaced()
    ownership.entries = [f"{n}/" if (staging / n).is_dir() else n for n in names]
    ownership.write()
    for name in names:
        os.replace(staging / name, out / name)


def prepare_dataset(name: str, root: str | Path | None, out: str | Path, *, network_size: int = 512,
                    backbone_size: int = 352, overwrite: bool = False, limit: int | None = None,
                    **options: Any) -> dict[str, Any]:
    """Write the processed copy; returns the manifest. Samples that fail to load are skipped and listed."""
    out = Path(out)
    entry = DATASETS[name] if name in DATASETS else None
    if entry is None:
        open_dataset(name, root, "train")  # raises the unknown-name error
    inputs = {"dataset": name, "root": str(Path(root).resolve()) if root else None, "network_size": network_size,
              "backbone_size": backbone_size, "limit": limit, "options": options}
    # the old copy stays until the new one is complete; then only what the owner file lists is replaced
    ownership = claim(out, "prepare", inputs, overwrite=overwrite, can_resume=False, legacy=PREPARED_NAMES,
                      write=False)
    if ownership.resumed and (out / "manifest.json").is_file() and not overwrite:
        log.info("%s: already prepared from the same inputs (pass --overwrite to prepare it again)", out)
        return json.loads((out / "manifest.json").read_text())
    if ownership.resumed:  # the same run, unfinished (or redone): its own entries are replaced
        ownership.replaced, ownership.entries = ownership.entries, []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    manifest: dict[str, Any] = {"dataset": name, "source": str(root), "network_size": network_size,
                                "backbone_size": backbone_size, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "splits": {}, "skipped": []}
    unavailable: list[Exception] = []
    try:
        for ours, theirs in entry.splits.items():
            try:
                data = open_dataset(name, root, theirs, **options)
            except (FileNotFoundError, ValueError) as exc:
                manifest["splits"][ours] = {"samples": 0, "note": f"not available: {exc}"}
                unavailable.append(exc)
                if len(unavailable) == len(entry.splits):  # not one split: the dataset itself is missing
                    raise
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
                Image.fromarray(_resize(image, network_size, False).transpose(1, 2, 0)).save(
                    folder / "images" / f"{stem}.png")
                Image.fromarray(_resize(image, backbone_size, False).transpose(1, 2, 0)).save(
                    folder / "images_clip" / f"{stem}.png")
                if "mask" in s:
                    Image.fromarray(_resize(s["mask"].numpy(), network_size, True)).save(
                        folder / "masks" / f"{stem}.png")
                rows.append({"name": stem, "prompt": s.get("prompt", ""), "source": s.get("source", ""),
                             "mask_source": s.get("mask_source", s.get("source", "")),
                             "placeholder": s.get("placeholder", False)})
            write_csv(rows, folder / "samples.csv")
            manifest["splits"][ours] = {"samples": len(rows), "dataset_split": theirs,
                                        "dataset_skipped": [list(x) for x in getattr(data, "skipped", [])]}
        write_json(staging / "manifest.json", manifest)
        _publish(staging, ownership)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if manifest["skipped"]:
        log.warning("%s: skipped %d samples (see %s)", name, len(manifest["skipped"]), out / "manifest.json")
    return manifest
