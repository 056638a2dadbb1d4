"""Figures of a model's predictions on a dataset: a prediction grid, the referring-expression table, and the
analysis figures (confidence heatmaps, error maps, Grad-CAM) the CLI's `evaluate --figures` writes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from clipseg_lab.data.base import with_transform
from clipseg_lab.data.transforms import JointTransform
from clipseg_lab.engine.evaluate import is_semantic
from clipseg_lab.metrics import BinaryMetrics
from clipseg_lab.models.base import TextPromptedModel
from clipseg_lab.models.clip_unet import ClipUNet
from clipseg_lab.segmenter import predict_sample
from clipseg_lab.viz.analysis import plot_confidence, plot_error_maps, truth_for_display
from clipseg_lab.viz.gradcam import grad_cam, plot_grad_cam
from clipseg_lab.viz.overlay import class_style


@torch.no_grad()
def plot_predictions(model: TextPromptedModel | ClipUNet, dataset, count: int, threshold: float = 0.5) -> plt.Figure:
    """One row per sample: image (with its prompt) | ground truth | predicted probability | thresholded; for
    multi-class models image | ground truth | predicted classes. Predictions are resized to the mask."""
    count = min(count, len(dataset))
    if is_semantic(model):
        return _plot_semantic(model, dataset, count)
    fig, axes = plt.subplots(count, 4, figsize=(10, 2.6 * count), squeeze=False)
    for row in range(count):
        s = dataset[row]
        probs = predict_sample(model, s["image"], s["prompt"], tuple(s["mask"].shape)).numpy()
        image = s["image"].permute(1, 2, 0).numpy()
        mask = truth_for_display(s["mask"], semantic=False)
        for ax, shown, title in zip(axes[row], (image, mask, probs, probs > threshold),
                                    (f"“{s['prompt'][:40]}”", "ground truth", "prediction", f"> {threshold}")):
            ax.imshow(shown, cmap=None if shown is image else "gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def _plot_semantic(model: ClipUNet, dataset, count: int) -> plt.Figure:

    names = list(getattr(dataset, "class_names", None) or range(model.config.num_classes))
    style = class_style(len(names))
    fig, axes = plt.subplots(count, 3, figsize=(7.5, 2.6 * count), squeeze=False)
    for row in range(count):
        s = dataset[row]
        pred = predict_sample(model, s["image"], size=tuple(s["mask"].shape)).argmax(0).numpy()
        truth = truth_for_display(s["mask"], semantic=True)
        for ax, shown, title in zip(axes[row], (s["image"].permute(1, 2, 0).numpy(), truth, pred),
                                    (s["name"], "ground truth (blank: ignore)", "prediction")):
            ax.imshow(shown, **({} if shown.ndim == 3 else style))
            ax.set_title(str(title)[:40], fontsize=8)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=style["cmap"](k)) for k in range(len(names))]
    fig.legend(handles, names, loc="upper center", ncol=len(names), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


@torch.no_grad()
def referring_table(model: TextPromptedModel, dataset, count: int, threshold: float = 0.5):
    """The first `count` samples as a table figure, one row each: referring text | image | prediction | ground
    truth; also returns their per-sample Dice and IoU (a DataFrame)."""
    import pandas as pd

    dataset = with_transform(dataset, JointTransform(model.input_size))  # the caller's dataset keeps its own
    count = min(count, len(dataset))
    fig, axes = plt.subplots(count, 4, figsize=(10, 2.4 * count), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1, 1, 1]})
    rows = []
    for row in range(count):
        s = dataset[row]
        probs = predict_sample(model, s["image"], s["prompt"], tuple(s["mask"].shape))
        metrics = BinaryMetrics(threshold=threshold)
        metrics.update(probs, s["mask"])
        rows.append({"text": s["prompt"], "name": s["name"], "dice": metrics.image_dice[0],
                     "iou": metrics.image_iou[0]})
        axes[row, 0].text(0.0, 0.5, "\n".join(_wrap(s["prompt"], 28)), fontsize=9, va="center")
        truth = truth_for_display(s["mask"], semantic=False)
        for ax, shown in zip(axes[row, 1:], (s["image"].permute(1, 2, 0).numpy(), (probs > threshold).numpy(), truth)):
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray", vmin=0, vmax=1)
        axes[row, 3].set_xlabel(f"Dice {rows[-1]['dice']:.2f}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].axis("off")
    for ax, title in zip(axes[0], ("referring text", "image", f"prediction (> {threshold})", "ground truth")):
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def analysis_figures(model: TextPromptedModel | ClipUNet, dataset, count: int, threshold: float = 0.5,
                     title: str = "") -> dict[str, plt.Figure]:
    """For the first `count` samples: per-class (or per-prompt) confidence heatmaps, error maps and Grad-CAM.
    Keys: "confidence", "errors", "gradcam" (file stems the CLI writes)."""
    count = min(count, len(dataset))
    samples = [dataset[i] for i in range(count)]
    semantic = is_semantic(model)
    names = list(getattr(dataset, "class_names", None) or range(model.config.num_classes)) if semantic else None
    # error maps tell false positives from wrong classes only where class 0 means "nothing" (Pet's background)
    background = 0 if not semantic or str(names[0]).lower() in ("background", "clutter", "no-data") else None
    probs = [predict_sample(model, s["image"], None if semantic else s["prompt"], tuple(s["mask"].shape))
             for s in samples]
    labels = [p.argmax(0) if semantic else (p > threshold).long() for p in probs]
    figures = {"confidence": _stack([plot_confidence(s["image"], p, names or [s["prompt"]])
                                     for s, p in zip(samples, probs)], title),
               "errors": plot_error_maps([{"image": s["image"], "prediction": lab, "truth": s["mask"],
                                           "background": background,
                                           "label": s["name"] if semantic else f"“{s['prompt']}”"}
                                          for s, lab in zip(samples, labels)], title=title)}
    cams = []
    for s, lab in zip(samples, labels):
        if semantic:  # the predicted classes other than background (background only when nothing else is)
            present = [int(c) for c in torch.unique(lab) if int(c) != background] or [int(lab.flatten()[0])]
            cams.append(plot_grad_cam(s["image"], {str(names[c]): grad_cam(model, s["image"], c) for c in present}))
        else:
            cams.append(plot_grad_cam(s["image"], {f"“{s['prompt']}”": grad_cam(model, s["image"], s["prompt"])}))
    figures["gradcam"] = _stack(cams, title)
    return figures


def _stack(figures: list[plt.Figure], title: str = "", dpi: int = 110) -> plt.Figure:
    """Rows of several one-row figures as one figure: each rendered at `dpi` (save_figure's), stacked as pixels,
    with room for the title above."""
    images = []
    for fig in figures:
        fig.set_dpi(dpi)
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        plt.close(fig)
    width = max(i.shape[1] for i in images)
    stacked = np.concatenate([np.pad(i, ((0, 0), (0, width - i.shape[1]), (0, 0)), constant_values=255)
                              for i in images])
    head = 0.35 if title else 0.0  # inches for the title
    height = stacked.shape[0] / dpi
    out = plt.figure(figsize=(width / dpi, height + head), dpi=dpi)
    ax = out.add_axes((0, 0, 1, height / (height + head)))
    ax.imshow(stacked, interpolation="none")
    ax.axis("off")
    if title:
        out.suptitle(title, fontsize=10, y=1 - 0.1 * head / (height + head))
    return out
