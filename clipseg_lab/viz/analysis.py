"""Looking at predictions: galleries across models, confidence heatmaps, error maps, per-class bars and the
"over the epochs" strips from a training run's snapshots."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap

from clipseg_lab.labels import IGNORE_INDEX
from clipseg_lab.segmenter import predict_sample
from clipseg_lab.viz.overlay import _hwc, class_style

# error-map codes, their names and colours (Okabe-Ito, colour-blind safe)
ERROR_CODES = {0: "correct background", 1: "true positive", 2: "false positive", 3: "false negative",
               4: "wrong class", 5: "ignored"}
ERROR_COLOURS = np.array([(0.88, 0.88, 0.88), (0.0, 0.62, 0.45), (0.84, 0.37, 0.0), (0.0, 0.45, 0.7),
                          (0.8, 0.47, 0.65), (0.45, 0.45, 0.45)])


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def error_map(prediction: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
              background: int | None = 0, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """Per-pixel error codes (`ERROR_CODES`) of a predicted label map against the truth.

    Binary masks are label maps with background 0 and foreground 1. With `background=None` (classes such as
    Potsdam's, none of which is "nothing") a pixel is either a true positive or a wrong class.
    """
    pred, true = _numpy(prediction).astype(np.int64), _numpy(truth).astype(np.int64)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {true.shape} differ in size: resize the "
                         "prediction to the mask first")
    codes = np.where(pred == true, 1, 4)
    if background is not None:
        codes[(pred == background) & (true == background)] = 0
        codes[(pred != background) & (true == background)] = 2
        codes[(pred == background) & (true != background)] = 3
    codes[true == ignore] = 5
    return codes.astype(np.uint8)


def _legend(fig: plt.Figure, codes: Sequence[int]) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=ERROR_COLOURS[c], edgecolor="0.5") for c in codes]
    fig.legend(handles, [ERROR_CODES[c] for c in codes], loc="lower center", ncol=len(codes), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.02))


def plot_error_maps(rows: Sequence[dict], title: str = "") -> plt.Figure:
    """One row per sample: image | prediction vs truth as error codes. Each row is a dict with `image`,
    `prediction` and `truth` label maps, optional `label` and `background` (default 0)."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(5.6, 2.7 * len(rows) + 0.6), squeeze=False)
    cmap = ListedColormap(ERROR_COLOURS)
    seen: set[int] = set()
    for ax_row, row in zip(axes, rows):
        codes = error_map(row["prediction"], row["truth"], row.get("background", 0))
        seen.update(np.unique(codes).tolist())
        ax_row[0].imshow(_hwc(row["image"]))
        ax_row[0].set_title(textwrap.shorten(str(row.get("label", "")), 40), fontsize=8)
        ax_row[1].imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(ERROR_COLOURS) - 0.5, interpolation="nearest")
        ax_row[1].set_title("errors", fontsize=8)
        for ax in ax_row:
            ax.axis("off")
    _legend(fig, sorted(seen))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96 if title else 1))
    return fig


def plot_confidence(image: torch.Tensor | np.ndarray, probs: torch.Tensor | np.ndarray, names: Sequence[str],
                    title: str = "") -> plt.Figure:
    """The image, one probability heatmap per class (softmax over classes, `(C, H, W)`) or for one prompt
    (`(H, W)`), and the per-pixel confidence in the predicted label: the largest class probability, or
    max(p, 1 - p) for one prompt. Low confidence marks where the model hesitates."""
    probs = _numpy(probs).astype(np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    if len(probs) != len(names):
        raise ValueError(f"{len(probs)} probability maps for {len(names)} names")
    panels = len(names) + 2
    fig, axes = plt.subplots(1, panels, figsize=(2.5 * panels + 1.0, 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(_hwc(image))
    axes[0].set_title("image", fontsize=8)
    for ax, p, name in zip(axes[1:], probs, names):
        shown = ax.imshow(p, cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"p({textwrap.shorten(str(name), 24)})", fontsize=8)
    if len(probs) > 1:  # softmax: the predicted class has at least 1/C
        confidence, low, label = probs.max(0), 1.0 / len(probs), "confidence: max p"
    else:
        confidence, low, label = np.maximum(probs[0], 1 - probs[0]), 0.5, "confidence: max(p, 1-p)"
    sure = axes[-1].imshow(confidence, cmap="viridis", vmin=low, vmax=1)
    axes[-1].set_title(label, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes[1:-1]), fraction=0.02, pad=0.01, label="probability")
    fig.colorbar(sure, ax=axes[-1], fraction=0.046, pad=0.02, label="confidence")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_class_bars(table: pd.DataFrame, metrics: Sequence[str] = ("iou", "dice"), hue: str = "model",
                    title: str = "") -> plt.Figure:
    """Per-class metrics as bars, one panel per metric; `table` has a `class` column, the metrics, and `hue`
    (e.g. several models) when there is one."""
    metrics = [m for m in metrics if m in table]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 0.5 * table["class"].nunique() + 1.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(table, y="class", x=metric, hue=hue if hue in table else None, ax=ax, errorbar=None)
        ax.set_xlim(0, 1)
        ax.set_title(metric)
        ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# -- galleries -------------------------------------------------------------------------------------------------
def gallery_predictions(models: dict[str, torch.nn.Module], samples: Sequence[dict]) -> dict[str, list[torch.Tensor]]:
    """Each model's probabilities for each sample (at the sample's mask size): `(H, W)` for prompt models,
    `(C, H, W)` for multi-class ones. Samples are dataset items (`image`, `mask`, `prompt`, `name`)."""
    return {name: [predict_sample(model, s["image"], s.get("prompt"), tuple(s["mask"].shape[-2:])) for s in samples]
            for name, model in models.items()}


def truth_for_display(mask: torch.Tensor | np.ndarray, semantic: bool) -> np.ndarray:
    """A ground-truth mask ready for imshow: ignored pixels (255) blank for class maps, grey (0.5) for binary."""
    truth = _numpy(mask).astype(np.float32)
    if semantic:
        return np.ma.masked_equal(truth, IGNORE_INDEX)  # the ignore band is left blank
    truth[truth == IGNORE_INDEX] = 0.5
    return truth


def plot_gallery(samples: Sequence[dict], predictions: dict[str, list[torch.Tensor]], threshold: float = 0.5,
                 class_names: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """Rows of image | prompt | one prediction per model | ground truth, the same images and prompts for every
    model. Prompt models show their mask (p > threshold), drawn like the truth; multi-class models their classes."""
    names = list(predictions)
    semantic = predictions[names[0]][0].ndim == 3
    cols = 3 + len(names)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.3 * cols, 2.4 * len(samples) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 0.8] + [1] * (len(names) + 1)})
    n_classes = len(class_names) if class_names else (predictions[names[0]][0].shape[0] if semantic else 2)
    style = class_style(n_classes)
    for r, sample in enumerate(samples):
        row = axes[r]
        row[0].imshow(_hwc(sample["image"]))
        prompt = sample.get("prompt") or sample.get("name", "")
        row[1].text(0.0, 0.5, "\n".join(textwrap.wrap(f"“{prompt}”" if sample.get("prompt") else str(prompt), 16)),
                    fontsize=8, va="center")
        for c, name in enumerate(names, start=2):
            probs = predictions[name][r]
            if semantic:
                row[c].imshow(_numpy(probs.argmax(0)), **style)
            else:  # drawn like the ground truth beside it
                row[c].imshow(_numpy(probs > threshold), cmap="gray", vmin=0, vmax=1)
        row[-1].imshow(truth_for_display(sample["mask"], semantic),
                       **(style if semantic else {"cmap": "gray", "vmin": 0, "vmax": 1}))
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
        row[1].axis("off")
    for ax, head in zip(axes[0], ["image", "prompt", *names, "ground truth"]):
        ax.set_title(textwrap.shorten(head, 22), fontsize=8)
    if semantic and class_names:
        handles = [plt.Rectangle((0, 0), 1, 1, color=style["cmap"](k)) for k in range(n_classes)]
        fig.legend(handles, class_names, loc="lower center", ncol=min(n_classes, 6), fontsize=8, frameon=False)
    if not semantic:
        title = f"{title}{' | ' if title else ''}prediction: the mask p > {threshold}"
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# -- training snapshots ----------------------------------------------------------------------------------------
def read_snapshots(run_dir: str | Path) -> dict:
    """A training run's snapshots: the fixed validation samples and the prediction after every epoch."""
    folder = Path(run_dir) / "snapshots"
    if not (folder / "samples.npz").is_file():
        raise FileNotFoundError(f"{folder}: no snapshots; train with snapshot_samples > 0 to record them")
    samples = np.load(folder / "samples.npz")
    meta = json.loads((folder / "samples.json").read_text())
    epochs = sorted(folder.glob("epoch_*.npz"))
    return {"image": samples["image"], "mask": samples["mask"], **meta,
            "epochs": [int(p.stem.split("_")[1]) for p in epochs],
            "predictions": [np.load(p)["probs"] for p in epochs]}


def plot_epoch_strips(run_dir: str | Path, max_epochs: int = 8, samples: int | None = None,
                      title: str = "") -> plt.Figure:
    """One row per snapshot sample: image | ground truth | the prediction after each of (up to) `max_epochs`
    epochs, evenly spread over the run and always including the last."""
    snap = read_snapshots(run_dir)
    if not snap["epochs"]:
        raise FileNotFoundError(f"{run_dir}: snapshots hold no epoch yet")
    picks = np.unique(np.linspace(0, len(snap["epochs"]) - 1, min(max_epochs, len(snap["epochs"]))).round().astype(int))
    n = min(samples or len(snap["image"]), len(snap["image"]))
    semantic = snap.get("kind") == "semantic"
    if semantic:  # as many colours as the classes seen (the ignore value aside)
        seen = [int(a[a != IGNORE_INDEX].max(initial=0)) for a in (snap["mask"], *snap["predictions"])]
        style = class_style(max(seen) + 1)
    cols = 2 + len(picks)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 2.0 * n + 0.3), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(snap["image"][r].transpose(1, 2, 0))
        label = (snap.get("prompts") or [None] * n)[r] or snap["names"][r]
        axes[r, 0].set_ylabel(textwrap.shorten(str(label), 24), fontsize=7)
        axes[r, 1].imshow(truth_for_display(snap["mask"][r], semantic), **(style if semantic else {"cmap": "gray",
                                                                                                "vmin": 0, "vmax": 1}))
        for c, k in enumerate(picks, start=2):
            pred = snap["predictions"][k][r]
            if semantic:
                axes[r, c].imshow(pred, **style)
            else:
                axes[r, c].imshow(pred.astype(np.float32) / 255.0, cmap="magma", vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    for ax, head in zip(axes[0], ["image", "ground truth", *[f"epoch {snap['epochs'][k]}" for k in picks]]):
        ax.set_title(head, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
