"""Evaluate a prompt model on a dataset: overall and per-image metrics, written as JSON and CSV, and a figure
of a few samples (image | ground truth | prediction)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from clipseg_lab.data.base import collate_samples
from clipseg_lab.data.transforms import JointTransform
from clipseg_lab.files import atomic_path, write_json
from clipseg_lab.metrics import BinaryMetrics
from clipseg_lab.models.base import TextPromptedModel


@torch.no_grad()
def evaluate_model(model: TextPromptedModel, dataset, *, batch_size: int = 8, threshold: float = 0.5,
                   limit: int | None = None) -> dict[str, Any]:
    """Binary metrics over `dataset` (or its first `limit` samples; its transform is set to the model's input
    size), plus per-image rows."""
    dataset.transform = JointTransform(model.input_size)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    model.eval()
    metrics = BinaryMetrics(threshold=threshold)
    rows: list[dict[str, Any]] = []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples), desc="evaluate", leave=False):
        probs = model(model.preprocess(list(batch["image"])), batch["prompt"]).sigmoid()
        before = len(metrics.image_iou)
        metrics.update(probs, batch["mask"].to(probs.device))
        for k, (name, prompt) in enumerate(zip(batch["name"], batch["prompt"])):
            rows.append({"name": name, "prompt": prompt, "iou": metrics.image_iou[before + k],
                         "dice": metrics.image_dice[before + k]})
    overall = metrics.compute()
    return {"overall": overall, "per_image": rows, "samples": len(rows), "provenance": model.provenance.as_dict()}


def write_evaluation(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """evaluation.json (everything), evaluation_overall.csv (one row), evaluation_per_image.csv."""
    out = Path(out_dir)
    write_json(out / "evaluation.json", result)
    overall = {k: v for k, v in result["overall"].items() if not isinstance(v, dict)}
    with atomic_path(out / "evaluation_overall.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["model", "backbone", "samples", *overall])
        writer.writeheader()
        writer.writerow({"model": result["provenance"]["model"], "backbone": result["provenance"]["backbone"],
                         "samples": result["samples"], **overall})
    with atomic_path(out / "evaluation_per_image.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["name", "prompt", "iou", "dice"])
        writer.writeheader()
        writer.writerows(result["per_image"])
    return [out / "evaluation.json", out / "evaluation_overall.csv", out / "evaluation_per_image.csv"]


@torch.no_grad()
def plot_predictions(model: TextPromptedModel, dataset, count: int, threshold: float = 0.5) -> plt.Figure:
    """One row per sample: image (with its prompt) | ground truth | predicted probability | thresholded."""
    count = min(count, len(dataset))
    fig, axes = plt.subplots(count, 4, figsize=(10, 2.6 * count), squeeze=False)
    for row in range(count):
        s = dataset[row]
        probs = model(model.preprocess([s["image"]]), [s["prompt"]]).sigmoid()[0].cpu().numpy()
        image = s["image"].permute(1, 2, 0).numpy()
        mask = s["mask"].numpy().astype(np.float32)
        mask[s["mask"].numpy() == 255] = 0.5
        for ax, shown, title in zip(axes[row], (image, mask, probs, probs > threshold),
                                    (f"“{s['prompt'][:40]}”", "ground truth", "prediction", f"> {threshold}")):
            ax.imshow(shown, cmap=None if shown is image else "gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig
