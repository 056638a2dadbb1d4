"""Colour-coded class maps, overlays and figures for the zero-shot remote-sensing pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipseg_lab.data.masks import IGNORE_INDEX
from clipseg_lab.data.remote_sensing import ISPRS_COLOURS

LOVEDA_COLOURS = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0),
                  (255, 195, 128))  # mmseg's LoveDA palette
DEFAULT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
                   (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148))  # tab20-like
IGNORE_COLOUR = (0, 0, 0)


def default_palette(num_classes: int, coding: str | None = None) -> np.ndarray:
    """`(C, 3)` uint8 colours: the dataset's usual ones when the coding has them, else a tab20-like cycle."""
    if coding in ("isprs-index", "isprs-colour") and num_classes == len(ISPRS_COLOURS):
        colours = ISPRS_COLOURS
    elif coding == "loveda" and num_classes == len(LOVEDA_COLOURS):
        colours = LOVEDA_COLOURS
    else:
        colours = [DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(num_classes)]
    return np.asarray(colours, dtype=np.uint8)


def config_palette(config) -> np.ndarray:
    """`(C, 3)` uint8: the config's `palette`, else the dataset's usual colours for its label coding."""
    if config.palette is not None:
        return np.asarray(config.palette, dtype=np.uint8)
    return default_palette(len(config.classes), config.input.coding)


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class indices `(H, W)` -> `(H, W, 3)` uint8; the ignore index (255) is black."""
    labels = np.asarray(labels)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette
    lut[IGNORE_INDEX] = IGNORE_COLOUR
    return lut[labels.astype(np.int64).clip(0, 255)]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5, valid: np.ndarray | None = None) -> np.ndarray:
    """`(H, W, 3)` uint8 image blended with a colour map; pixels outside `valid` keep the image."""
    out = image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    if valid is not None:
        out[~valid] = image[~valid]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def plot_tiles(rows: Sequence[dict], classes: Sequence[str], palette: np.ndarray, *, title: str | None = None,
               untrained: bool = False):
    """One row per tile: image | prediction overlay | ground truth (when there is one), with a class legend.

    Each row: `{"name", "image" (H, W, 3) uint8, "pred" (H, W), "gt" (H, W) or None}`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(rows)
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 3.2 * n), squeeze=False)
    for ax_row, row in zip(axes, rows):
        ax_row[0].imshow(row["image"])
        ax_row[0].set_title(str(row["name"]), fontsize=8)
        ax_row[1].imshow(overlay(row["image"], colourise(row["pred"], palette)))
        ax_row[1].set_title("prediction", fontsize=8)
        if row.get("gt") is not None:
            gt = np.asarray(row["gt"])
            ax_row[2].imshow(overlay(row["image"], colourise(gt, palette), valid=gt != IGNORE_INDEX))
            ax_row[2].set_title("ground truth (black: ignored)", fontsize=8)
        for ax in ax_row:
            ax.axis("off")
    handles = [Patch(color=np.asarray(c) / 255, label=name) for c, name in zip(palette, classes)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(classes), 7), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    heading = title or "zero-shot segmentation"
    if untrained:
        heading += "  (UNTRAINED weights: no learned segmentation)"
    fig.suptitle(heading, y=1.03, fontsize=10, color="firebrick" if untrained else "black")
    fig.tight_layout()
    return fig


def plot_ablation(table, value: str = "miou", *, untrained: bool = False):
    """Heat map of `value` for a `(variant, layers)` ablation table (a pandas DataFrame with those columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = table.pivot_table(index="variant", columns="layers", values=value, sort=False)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 1.2 + 0.5 * grid.shape[0]))
    sns.heatmap(grid, annot=True, fmt=".3f", cmap="viridis", ax=ax, cbar_kws={"label": value})
    ax.set_xlabel("attention layers: initial / neighbourhood / SAM")
    ax.set_ylabel("dense-feature variant")
    heading = f"ablation: {value}"
    if untrained:
        heading += " (UNTRAINED weights: differences are noise)"
    ax.set_title(heading, fontsize=9, color="firebrick" if untrained else "black")
    fig.tight_layout()
    return fig
