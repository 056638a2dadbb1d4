"""Dataset and training figures: sample grids (image, mask, prompt), statistics and curves (seaborn)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from clipseg_lab.data.masks import IGNORE_INDEX
from clipseg_lab.viz.overlay import _hwc


def mask_to_rgb(mask: np.ndarray, binary: bool) -> np.ndarray:
    """Class indices (or a binary mask) as colours; ignored pixels (255) in grey."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape + (3,), np.float32)
    if binary:
        out[mask == 1] = (1.0, 1.0, 1.0)
    else:
        colours = sns.color_palette("tab10", 10)
        for value in np.unique(mask):
            if value != IGNORE_INDEX:
                out[mask == value] = colours[int(value) % 10]
    out[mask == IGNORE_INDEX] = (0.5, 0.5, 0.5)
    return out


def plot_samples(samples: list[dict], title: str, class_names: tuple[str, ...] | None = None,
                 note: str = "") -> plt.Figure:
    """Two rows per sample set: the images (with their prompt) and their masks."""
    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    for k, s in enumerate(samples):
        axes[0, k].imshow(_hwc(s["image"][:3]))
        label = s["prompt"] if class_names is None else s["name"]
        axes[0, k].set_title(label if len(label) < 34 else label[:32] + "...", fontsize=8)
        axes[1, k].imshow(mask_to_rgb(s["mask"].numpy(), class_names is None), interpolation="nearest")
        axes[1, k].set_title(str(s["name"])[:30], fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    if class_names is not None:
        colours = sns.color_palette("tab10", 10)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % 10]) for i in range(len(class_names))]
        handles.append(plt.Rectangle((0, 0), 1, 1, color=(0.5, 0.5, 0.5)))
        fig.legend(handles, list(class_names) + ["ignore (255)"], loc="lower center", bbox_to_anchor=(0.5, 0.035),
                   ncol=min(8, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def plot_statistics(stats: pd.DataFrame) -> plt.Figure:
    """Left: the share of each class's pixels per semantic dataset; right: mask size (share of the image) per
    referring dataset."""
    class_cols = [c for c in stats.columns if c.startswith("class:")]
    semantic = stats.dropna(subset=class_cols, how="all") if class_cols else stats.iloc[:0]
    referring = stats.dropna(subset=["mask_share"]) if "mask_share" in stats else stats.iloc[:0]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    if len(semantic):
        long = semantic.melt(id_vars=["dataset"], value_vars=class_cols, var_name="class", value_name="share").dropna()
        long["class"] = long["class"].str[len("class:"):]
        sns.barplot(long, x="share", y="class", hue="dataset", ax=axes[0], errorbar=None)
        axes[0].set_title("pixel share per class (mean over samples)")
    if len(referring):
        sns.stripplot(referring, x="mask_share", y="dataset", ax=axes[1], size=4, jitter=0.2)
        axes[1].set_xlim(0, 1)
        axes[1].set_title("mask size: share of the image each prompt's mask covers")
    fig.tight_layout()
    return fig


def plot_curves(histories: dict[str, list[dict]], metrics: Sequence[str] = ("train_loss", "val_loss", "iou_fg"),
                title: str = "") -> plt.Figure:
    """Training curves of several runs side by side, one panel per metric (seaborn)."""
    rows = [{"run": name, "epoch": int(r["epoch"]), "metric": m, "value": float(r[m])}
            for name, history in histories.items() for r in history for m in metrics if r.get(m) not in (None, "")]
    frame = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics) + 1.2, 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(frame[frame.metric == m], x="epoch", y="value", hue="run", marker="o", ax=ax,
                     legend=ax is axes[0, -1])
        ax.set_title(m)
        ax.set_ylabel("")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if axes[0, -1].get_legend() is not None:  # one legend for all panels, outside the lines
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
