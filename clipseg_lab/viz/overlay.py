"""Masks drawn over their image."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from clipseg_lab.provenance import Provenance

# Figures are drawn at most this large (a panel shows a few hundred pixels): the memory a figure takes is then
# bounded, not that of full-resolution float copies of a 24 MP photo and each of its maps.
DISPLAY_SIDE = 1024

# colour-blind-safe colours (Okabe-Ito), one per prompt
PALETTE = np.array([(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                    (204, 121, 167), (0, 0, 0)], dtype=np.float32) / 255.0


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    array = image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)


def fit_image(image: torch.Tensor, max_side: int = DISPLAY_SIDE) -> torch.Tensor:
    """A `(..., H, W)` image or stack of maps scaled down (bilinear, antialiased) so that its longer side is at
    most `max_side`; returned as is when it already fits. uint8 stays uint8, anything else becomes float32.

    One plane at a time, so that no full-size float copy of all the planes is ever made."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    planes = [F.interpolate(plane[None, None].float(), size=size, mode="bilinear", antialias=True)[0, 0]
              for plane in image.reshape(-1, h, w)]
    out = torch.stack(planes).reshape(*image.shape[:-2], *size)
    return out.round().clamp(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out


def _chw(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """`(3, H, W)` tensor of an image given as one, or as an `(H, W, 3)` array."""
    return image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image)).permute(2, 0, 1)


def blend(image: torch.Tensor | np.ndarray, probs: torch.Tensor | np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB float image with each of the K soft masks `(K, H, W)` tinted in its palette colour."""
    rgb = _hwc(image)
    probs = probs.float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=np.float32)
    for k, p in enumerate(probs):
        weight = alpha * p[..., None]
        rgb = rgb * (1 - weight) + PALETTE[k % len(PALETTE)] * weight
    return np.clip(rgb, 0, 1)


def plot_prompts(image: torch.Tensor | np.ndarray, probs: torch.Tensor, prompts: list[str],
                 provenance: Provenance | None = None, threshold: float | None = None,
                 alpha: float = 0.5) -> plt.Figure:
    """Image | one probability map per prompt | all masks over the image, drawn at most `DISPLAY_SIDE` pixels
    large (larger inputs are scaled down first)."""
    image = fit_image(_chw(image))
    probs = fit_image(probs if isinstance(probs, torch.Tensor) else torch.from_numpy(np.array(probs)))
    k = len(prompts)
    fig, axes = plt.subplots(1, k + 2, figsize=(2.6 * (k + 2), 3.0), squeeze=False)
    axes = axes[0]
    axes[0].imshow(_hwc(image))
    axes[0].set_title("image")
    for ax, p, prompt in zip(axes[1:], probs, prompts):
        shown = (p > threshold).float() if threshold is not None else p
        ax.imshow(np.asarray(shown), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"“{prompt}”" + (f" p > {threshold:.2f}" if threshold is not None else ""), fontsize=9)
    masks = (probs > threshold).float() if threshold is not None else probs
    axes[-1].imshow(blend(image, masks, alpha))
    axes[-1].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    if provenance is not None and provenance.untrained:
        fig.suptitle("UNTRAINED weights: these maps show no learned segmentation", color="firebrick", fontsize=10)
    fig.tight_layout()
    return fig


def plot_model_grid(image: torch.Tensor | np.ndarray, predictions: dict[str, torch.Tensor], prompt: str,
                    untrained: bool = False, columns: int = 5) -> plt.Figure:
    """The image, then one probability map per model for the same prompt."""
    n = len(predictions) + 1
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.7 * rows), squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(_hwc(image))
    axes[0].set_title("image", fontsize=9)
    for ax, (name, probs) in zip(axes[1:], predictions.items()):
        ax.imshow(np.asarray(probs), cmap="magma", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.axis("off")
    title = f"“{prompt}”: one prediction per model"
    if untrained:
        title += "  (UNTRAINED weights: no learned segmentation)"
    fig.suptitle(title, color="firebrick" if untrained else "black", fontsize=10)
    fig.tight_layout()
    return fig


def class_style(num_classes: int) -> dict:
    """`imshow` arguments that draw class k in tab10's k-th colour (as `viz.data.mask_to_rgb` does), so a class
    keeps its colour in every figure whatever the number of classes."""
    from matplotlib.colors import ListedColormap

    colours = [plt.get_cmap("tab10").colors[k % 10] for k in range(max(num_classes, 1))]
    return {"cmap": ListedColormap(colours), "vmin": -0.5, "vmax": max(num_classes, 1) - 0.5,
            "interpolation": "nearest"}
