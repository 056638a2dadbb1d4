"""Tables, figure rows and captions from `rs-infer` runs (notebook 09 and reports).

Everything here reads what `run` wrote (`metrics.json`, `pred_labels.png`) or its `RunSummary`, plus the tiles
themselves for the images and the ground truth, so a figure shows exactly the prediction that was scored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clipseg_lab.provenance import Provenance
from clipseg_lab.zeroshot.config import ZeroShotConfig
from clipseg_lab.zeroshot.pipeline import RunSummary, open_tiles, tile_status


def per_class_table(metrics: Mapping[str, Any]):
    """One row per class (IoU, F1, precision, recall, labelled pixels), then the means (mIoU, mF1) and OA.

    A class absent from both the labels and the predictions has no score (NaN), and is left out of the means."""
    import pandas as pd

    if not metrics or metrics.get("per_class") is None:
        return pd.DataFrame(columns=["iou", "f1", "precision", "recall", "pixels"])
    rows = {name: {"iou": v.get("iou"), "f1": v.get("f1"), "precision": v.get("precision"),
                   "recall": v.get("recall"), "pixels": v.get("support")}
            for name, v in metrics["per_class"].items()}
    rows["mean (mIoU, mF1)"] = {"iou": metrics["miou"], "f1": metrics["mf1"]}
    rows["overall accuracy (OA)"] = {"iou": None, "f1": None, "precision": metrics["oa"],
                                     "pixels": metrics.get("pixels")}
    table = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    table.index.name = "class"
    return table


def summary_table(runs: Mapping[str, RunSummary]):
    """One row per run: tiles segmented / resumed / redone (of the segmented: had a record but were not finished) /
    skipped, OA, mIoU, mF1, seconds, and whether it was untrained."""
    import pandas as pd

    rows = {}
    for name, s in runs.items():
        m = s.metrics or {}
        rows[name] = {"tiles": len(s.tiles), "segmented": len(s.processed), "resumed": len(s.resumed),
                      "redone": len(s.redone), "skipped": len(s.skipped), "labelled tiles": m.get("tiles_with_labels"),
                      "OA": m.get("oa"), "mIoU": m.get("miou"), "mF1": m.get("mf1"), "seconds": round(s.seconds, 2),
                      "untrained": s.untrained}
    return pd.DataFrame.from_dict(rows, orient="index")


def run_provenance(summary: RunSummary) -> Provenance:
    """The run's provenance as the object `viz.save_figure` takes (says 'untrained' for random weights)."""
    if summary.provenance is None:
        raise ValueError(f"{summary.out_dir}: the run has no provenance record")
    return Provenance(**summary.provenance)


def tile_rows(config: ZeroShotConfig, out_dir: str | os.PathLike | None = None, limit: int | None = None,
              labelled_first: bool = True) -> list[dict[str, Any]]:
    """Finished tiles of a run (a record whose listed outputs all exist) as rows for `zeroshot.viz.plot_tiles`:
    name, image, the written prediction (`pred_labels.png`) and the ground truth (None without a label)."""
    from PIL import Image

    vis = Path(out_dir or config.output.base_dir) / config.output.visualizations_subdir
    dataset = open_tiles(config)
    tiles = [t for t in sorted(dataset.records, key=lambda t: t.name) if tile_status(vis / t.name) is None]
    if labelled_first:
        tiles.sort(key=lambda t: t.label is None)
    rows = []
    for tile in tiles[:limit]:
        sample = dataset.load(tile)
        with Image.open(vis / tile.name / "pred_labels.png") as im:
            pred = np.asarray(im)
        rows.append({"name": tile.name, "image": sample["image"].permute(1, 2, 0).numpy(), "pred": pred,
                     "gt": sample["mask"].numpy() if tile.label is not None else None})
    return rows


def labelled_samples(config: ZeroShotConfig, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` labelled tiles (name order) as samples (`image`, `mask`, `name`) for `pipeline.ablation`;
    tiles that cannot be read are left out (the run reported them)."""
    from clipseg_lab.zeroshot.pipeline import TILE_ERRORS

    dataset = open_tiles(config)
    out = []
    for tile in sorted((t for t in dataset.records if t.label is not None), key=lambda t: t.name):
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(dataset.load(tile))
        except TILE_ERRORS:
            continue
    return out


def data_description(config: ZeroShotConfig, summary: RunSummary) -> str:
    """What a figure's data was: dataset, how many tiles and from where."""
    labelled = (summary.metrics or {}).get("tiles_with_labels")
    return (f"{config.dataset or 'tiles'}: {len(summary.tiles)} tile(s)"
            + (f", {labelled} labelled" if labelled is not None else "") + f" from {config.input.dir}")


__all__ = ["data_description", "labelled_samples", "per_class_table", "run_provenance",
           "summary_table", "tile_rows"]
