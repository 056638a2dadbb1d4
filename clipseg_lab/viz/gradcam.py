"""Grad-CAM (Selvaraju et al., 2017) for the decoders: which parts of a feature map drive a prediction.

The score is the sum of the logits over the predicted region (all pixels when nothing is predicted, or with
`region="all"`), as in Grad-CAM for segmentation (Vinogradova et al., 2020). Channel weights are the spatial
mean of the score's gradient; the map is ReLU(sum_c w_c A_c), upsampled to the image and scaled to [0, 1].
Token activations `(B, 1 + h*w, D)` are read on the patch grid with the class token dropped.
"""

from __future__ import annotations

import textwrap
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.models.base import TextPromptedModel


def default_layer(model: nn.Module) -> nn.Module:
    """Where each model's Grad-CAM is taken: the deepest decoder feature map before a prompt model's output head;
    for the CLIP-UNet its bottleneck, where the CLIP tokens are fused (the skip connections bypass it, so that
    map shows what the bottleneck path, CLIP included, contributes)."""
    decoder = getattr(model, "decoder", None)
    if isinstance(model, TextPromptedModel):
        if hasattr(decoder, "layers"):  # CLIPSeg: the last decoder block's tokens
            return decoder.layers[-1]
        if hasattr(decoder, "encoder"):  # transformer decoder: its last encoder layer
            return decoder.encoder.layers[-1]
        if hasattr(decoder, "blocks"):  # conv UNet decoder: the finest block
            return decoder.blocks[0]
    if hasattr(model, "fusion"):  # CLIP-UNet: the bottleneck where the CLIP tokens are fused
        return model.fusion
    if hasattr(model, "encoder"):  # plain UNet: its bottleneck
        return model.encoder[-1]
    raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}: pass layer=<a module of the model>")


def _as_maps(activation: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """`(B, C, h, w)` from a feature map or from tokens on the patch grid."""
    if activation.ndim == 4:
        return activation
    if grid is None:
        raise ValueError("token activations need the patch grid")
    h, w = grid
    tokens = activation[:, 1:] if activation.shape[1] == h * w + 1 else activation
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def grad_cam(model: nn.Module, image: torch.Tensor, target: str | int, *, layer: nn.Module | None = None,
             region: Literal["prediction", "all"] = "prediction") -> np.ndarray:
    """Grad-CAM heatmap `(H, W)` in [0, 1] at the size of the uint8 `image` `(3, H, W)`.

    `target`: the prompt for prompt models, the class index for multi-class ones. `layer`: a decoder module
    (the frozen backbone runs without gradients); its output is `(B, C, h, w)` or batch-first tokens
    `(B, [1 +] h*w, D)` on the patch grid. The model's parameters get no `.grad` (gradients are taken with
    `torch.autograd.grad`), and its train/eval mode is restored.
    """
    layer = layer or default_layer(model)
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        store["activation"] = output[0] if isinstance(output, tuple) else output

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            grid = None
            if isinstance(model, TextPromptedModel):
                if not isinstance(target, str):
                    raise ValueError("prompt models take a text prompt as the Grad-CAM target")
                features = model.image_features(model.preprocess([image]))
                grid = features.grid
                logits = model.decode(features, model.prompt_embeddings([target]))[0]
                chosen = logits > 0
            else:
                if not isinstance(target, int) or not 0 <= target < model.config.num_classes:
                    raise ValueError(f"class index {target!r} is not one of 0..{model.config.num_classes - 1}")
                out = model.segment(image[None])[0]
                logits, chosen = out[target], out.argmax(0) == target
            activation = store.get("activation")
            if activation is None or not activation.requires_grad:
                raise ValueError(f"the layer {type(layer).__name__} did not run with gradients in the forward pass: "
                                 "pass a decoder module as layer=")
            if region == "all" or not chosen.any():
                chosen = torch.ones_like(chosen)
            (grads,) = torch.autograd.grad((logits * chosen).sum(), activation, allow_unused=True)
            if grads is None:
                raise ValueError(f"the output does not depend on the layer {type(layer).__name__}: "
                                 "pick one on its path")
            maps, grads = _as_maps(activation.detach(), grid), _as_maps(grads, grid)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(-2, -1), keepdim=True)
    cam = F.relu((weights * maps).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).cpu().numpy()


def plot_grad_cam(image: torch.Tensor | np.ndarray, cams: dict[str, np.ndarray], title: str = "", alpha: float = 0.5):
    """The image, then each Grad-CAM heatmap over it (one panel per prompt or class)."""
    import matplotlib.pyplot as plt

    from clipseg_lab.viz.overlay import _hwc

    rgb = _hwc(image)
    fig, axes = plt.subplots(1, len(cams) + 1, figsize=(2.6 * (len(cams) + 1), 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(rgb)
    axes[0].set_title("image", fontsize=8)
    for ax, (label, cam) in zip(axes[1:], cams.items()):
        ax.imshow(rgb)
        ax.imshow(cam, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_title(textwrap.shorten(f"Grad-CAM: {label}", 34, placeholder=" …"), fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
