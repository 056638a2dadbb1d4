"""Visual prompts (CLIPSeg §3.2): an example image plus a mask of the thing to find, turned into a
conditional embedding by the CLIP image encoder, and mixed with text embeddings.

The mask is shown to CLIP by editing the prompt image, as CLIPSeg's visual prompt engineering does:
  highlight  background darkened to `background` times its brightness
  blur       background blurred (Gaussian, `sigma` pixels at the prompt resolution)
  crop       the image cropped to the mask's bounding box (plus `margin`), made square
and their combinations ("blur_highlight", "crop_blur_highlight": the paper's best, the default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from clipseg_lab.data.images import ImageLike, load_rgb

MODES = ("highlight", "blur", "crop", "blur_highlight", "crop_highlight", "crop_blur", "crop_blur_highlight")


def _mask_tensor(mask, size: tuple[int, int], source: str) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != size:
        raise ValueError(f"{source}: the visual prompt mask is {tuple(m.shape)} but its image is {size} (H, W); "
                         "give a mask of the image's size")
    if m.max() > 1:
        m = m / 255.0
    if not (m > 0.5).any():
        raise ValueError(f"{source}: the visual prompt mask is empty: it must mark the object to look for")
    return m


def blend_visual_prompt(image: ImageLike, mask, mode: str = "crop_blur_highlight", *, background: float = 0.1,
                        sigma: float = 5.0, margin: float = 0.1, name: str = "visual prompt") -> torch.Tensor:
    """The edited prompt image, RGB uint8 `(3, H', W')`, that CLIP will see."""
    if mode not in MODES:
        raise ValueError(f"unknown visual prompt mode {mode!r}; known: {', '.join(MODES)}")
    rgb = load_rgb(image).float()
    m = _mask_tensor(mask, tuple(rgb.shape[-2:]), name)
    out = rgb
    if "blur" in mode:
        k = int(4 * sigma) | 1  # odd kernel covering +-2 sigma
        out = out * m + TF.gaussian_blur(out, [k, k], [sigma, sigma]) * (1 - m)
    if "highlight" in mode:
        out = out * m + out * (1 - m) * background
    if "crop" in mode:
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        y0, y1, x0, x1 = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
        side = max(y1 - y0, x1 - x0) * (1 + 2 * margin)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
        out = TF.crop(out, top, left, int(round(side)), int(round(side)))  # zero-padded outside the image
    return out.round().clamp(0, 255).to(torch.uint8)


@torch.inference_mode()
def visual_prompt_embeddings(backbone, images: Sequence[ImageLike], masks: Sequence, mode: str = "crop_blur_highlight",
                             **blend_options) -> torch.Tensor:
    """Conditional embeddings `(N, embed_dim)` from N (image, mask) pairs: CLIP's projected image embedding
    of each edited prompt image at the backbone's native resolution."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} visual prompt images but {len(masks)} masks")
    edited = [blend_visual_prompt(im, m, mode, name=f"visual prompt {i}", **blend_options)
              for i, (im, m) in enumerate(zip(images, masks))]
    return backbone.encode_image(backbone.preprocess(edited), pooled=True).pooled


def interpolate_conditionals(text: torch.Tensor, visual: torch.Tensor, alpha: float) -> torch.Tensor:
    """`(1 - alpha) * text + alpha * visual`: CLIPSeg's mix of text and visual conditionals (alpha in [0, 1])."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    return torch.lerp(text, visual.to(text.dtype), alpha)
