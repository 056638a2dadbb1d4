"""Evaluate a model on a dataset: overall, per-class (multi-class models) and per-image metrics, written as JSON
and CSV (the figures of predictions are in `viz.evaluation`).

Prompt models are scored with `BinaryMetrics` (one mask per prompt); multi-class models (`clip-unet`, `unet`)
with `SegmentationMetrics` over the dataset's classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from clipseg_lab.data.base import collate_samples, with_transform
from clipseg_lab.data.transforms import JointTransform
from clipseg_lab.files import write_csv, write_json
from clipseg_lab.metrics import BinaryMetrics, SegmentationMetrics
from clipseg_lab.models.base import TextPromptedModel
from clipseg_lab.models.clip_unet import ClipUNet


def is_semantic(model) -> bool:
    """Multi-class models predict class maps without prompts."""
    return isinstance(model, ClipUNet)


@torch.no_grad()
def evaluate_model(model: TextPromptedModel | ClipUNet, dataset, *, batch_size: int = 8, threshold: float = 0.5,
                   limit: int | None = None) -> dict[str, Any]:
    """Metrics over `dataset` (or its first `limit` samples), read at the model's input size (a copy of the dataset
    with that transform: the caller's is left as it is), plus per-image rows (and per-class rows for multi-class
    models)."""
    dataset = with_transform(dataset, JointTransform(model.input_size))
    class_names = getattr(dataset, "class_names", None)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    model.eval()
    if is_semantic(model):
        return _evaluate_semantic(model, dataset, class_names, batch_size)
    metrics = BinaryMetrics(threshold=threshold)
    rows: list[dict[str, Any]] = []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples), desc="evaluate",
                      leave=False):
        probs = model(model.preprocess(list(batch["image"])), batch["prompt"]).sigmoid()
        before = len(metrics.image_iou)
        metrics.update(probs, batch["mask"].to(probs.device))
        for k, (name, prompt) in enumerate(zip(batch["name"], batch["prompt"])):
            rows.append({"name": name, "prompt": prompt, "iou": metrics.image_iou[before + k],
                         "dice": metrics.image_dice[before + k]})
    overall = metrics.compute()
    return {"overall": overall, "per_image": rows, "samples": len(rows), "provenance": model.provenance.as_dict()}


def _evaluate_semantic(model: ClipUNet, dataset, class_names, batch_size: int) -> dict[str, Any]:
    n = model.config.num_classes
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"the dataset has {len(class_names)} classes {list(class_names)}, the model predicts {n}; "
                         "evaluate on the dataset it was trained for")
    metrics = SegmentationMetrics(n, class_names=class_names)
    rows: list[dict[str, Any]] = []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples), desc="evaluate",
                      leave=False):
        pred = model.segment(batch["image"]).argmax(1)
        before = len(metrics.image_miou)
        metrics.update(pred, batch["mask"].to(pred.device))
        names = batch["name"][: len(metrics.image_miou) - before]  # all-ignore images get no row
        rows += [{"name": name, "miou": metrics.image_miou[before + k],
                  "pixel_accuracy": metrics.image_accuracy[before + k]}
                 for k, name in enumerate(names)]
    overall = metrics.compute()
    per_class = [{"class": name, **values} for name, values in overall.pop("per_class").items()]
    return {"overall": overall, "per_class": per_class, "per_image": rows, "samples": len(rows),
            "provenance": model.provenance.as_dict()}


def write_evaluation(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """evaluation.json (everything), evaluation_overall.csv (one row), evaluation_per_image.csv, and
    evaluation_per_class.csv for multi-class models."""
    out = Path(out_dir)
    write_json(out / "evaluation.json", result)
    overall = {k: v for k, v in result["overall"].items() if not isinstance(v, dict)}
    files = [out / "evaluation.json"]
    tables = {"evaluation_overall.csv": [{"model": result["provenance"]["model"],
                                          "backbone": result["provenance"]["backbone"],
                                          "samples": result["samples"], **overall}],
              "evaluation_per_image.csv": result["per_image"]}
    if "per_class" in result:
        tables["evaluation_per_class.csv"] = result["per_class"]
    for name, rows in tables.items():
        files.append(write_csv(rows, out / name))
    return files
