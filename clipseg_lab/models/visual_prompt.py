"""Visual prompts (CLIPSeg §3.2): an example image plus a mask of the thing to find, turned into a
conditional embedding by the CLIP image encoder, and mixed with text embeddings.

The mask is shown to CLIP by editing the prompt image. Two recipes, named in `RECIPES`:

"clipseg-lab" (ours, the default for decoders trained here): edited in uint8 pixel space, then resized to
the backbone's native size (or `size`) and normalised.
  highlight  background darkened to `background` times its brightness (so it fades to black)
  blur       background blurred (Gaussian, `sigma` pixels at the image's own resolution)
  crop       the image cropped to the mask's bounding box (plus `margin`), made square, zero (black) padded
and their combinations (`MODES`; "crop_blur_highlight", the paper's best, is the default).

"clipseg-original" (the released CLIPSeg weights, timojl/clipseg): the recipe those decoders were trained
with, re-implemented from `datasets/phrasecut.py` (`load_sample`), `datasets/utils.py`
(`blend_image_segmentation`) and `evaluation_utils.py` (`img_preprocess`, `object_crop`, `crop_mask`,
`pad_to_square`):
  1. the example image is resized to `size` x `size` (352, the training `image_size`; bilinear with
     align_corners=True, no antialiasing) and its mask likewise (nearest), then normalised with the
     weights' mean / std (ImageNet statistics for the released decoders);
  2. in NORMALISED space: the whole image is blurred (15 x 15 Gaussian kernel, sigma `blur`), and
     `prompt = image * mask + bg_fac * blurred * (1 - mask)`, so the background fades toward the
     normalisation mean colour (0), not toward black;
  3. crop modes: the mask's bounding box grown by `center_context` times its own height / width on each
     side (truncated to whole pixels, clipped to the image), zero padded (mean colour) to a square with
     the object centred, resized (nearest) to the output size;
  4. modes without a crop subtract 0.01 from every value, as the original does.
  The released rd64-uni / rd64-uni-refined were trained with mask "text_and_crop_blur_highlight352"
  (experiments/phrasecut.yaml): blur 3, bg_fac 0.1, center_context 0.1, output 352 px — the default mode
  here. The prompt is encoded at that size by CLIP's image tower with its position embeddings bicubically
  interpolated (class position kept), as `CLIPDenseBase.visual_forward` does; `ClipBackbone.encode_image`
  interpolates the same way (transformers' `interpolate_pos_encoding`: bicubic, align_corners=False).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from clipseg_lab.images import ImageLike, load_rgb

RECIPES = ("clipseg-lab", "clipseg-original")
MODES = ("highlight", "blur", "crop", "blur_highlight", "crop_highlight", "crop_blur", "crop_blur_highlight")

# The original's prompt modes built on `img_preprocess` (datasets/utils.py), with the arguments it passes.
# `out`: the crop's output size (None: the working size `size`); `shift`: subtracted afterwards.
ORIGINAL_MODES: dict[str, dict] = {
    "crop_blur_highlight352": dict(blur=3.0, bg_fac=0.1, center_context=0.1, out=352, shift=0.0),
    "crop_blur_highlight": dict(blur=3.0, bg_fac=0.1, center_context=0.1, out=None, shift=0.0),
    "crop": dict(blur=1.0, bg_fac=1.0, center_context=0.1, out=None, shift=0.0),
    "blur3_highlight01": dict(blur=3.0, bg_fac=0.1, center_context=None, out=None, shift=0.01),
    "blur3_highlight": dict(blur=3.0, bg_fac=0.5, center_context=None, out=None, shift=0.01),
    "blur_highlight": dict(blur=1.0, bg_fac=0.5, center_context=None, out=None, shift=0.01),
}
ORIGINAL_DEFAULT_MODE = "crop_blur_highlight352"  # experiments/phrasecut.yaml: mask text_and_crop_blur_highlight352
ORIGINAL_SIZE = 352  # experiments/phrasecut.yaml: image_size 352
ORIGINAL_BLUR_KERNEL = 15  # evaluation_utils.img_preprocess: cv2.GaussianBlur(img, (15, 15), blur)
LAB_DEFAULT_MODE = "crop_blur_highlight"


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


# -- "clipseg-lab" ---------------------------------------------------------------------------------

def blend_visual_prompt(image: ImageLike, mask, mode: str = "crop_blur_highlight", *, background: float = 0.1,
                        sigma: float = 5.0, margin: float = 0.1, name: str = "visual prompt") -> torch.Tensor:
    """The "clipseg-lab" edited prompt image, RGB uint8 `(3, H', W')`, that CLIP will see."""
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


# -- "clipseg-original" ----------------------------------------------------------------------------

def original_crop_box(mask: torch.Tensor, context: float) -> tuple[int, int, int, int]:
    """The original's crop window `(top, bottom, left, right)` (end-exclusive) on a binary `(S, S)` mask.

    `evaluation_utils.crop_mask` (square=False): the bounding box grown on each side by `context` times the
    box's extent along that axis, each bound truncated by int() (Python floats: e.g. 10 - 0.1 * 30 gives
    6.999... and so 6), clipped to the image. The original swaps H and W in two places; they agree
    because its prompt images are square, as they are here (step 1 resizes to S x S), so this is exact.
    """
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    y0, y1 = int(rows.min()), int(rows.max()) + 1
    x0, x1 = int(cols.min()), int(cols.max()) + 1
    h, w = mask.shape
    ext_y, ext_x = y1 - y0, x1 - x0
    top, bottom = int(max(0, y0 - context * ext_y)), int(min(h, y1 + context * ext_y))
    left, right = int(max(0, x0 - context * ext_x)), int(min(w, x1 + context * ext_x))
    return top, bottom, left, right


def _pad_to_square(x: torch.Tensor) -> torch.Tensor:
    """`evaluation_utils.pad_to_square`: zeros (the mean colour in normalised space), the image centred,
    the odd pixel after it."""
    h, w = x.shape[-2:]
    if h > w:
        left = (h - w) // 2
        return F.pad(x, (left, h - w - left, 0, 0))
    if w > h:
        top = (w - h) // 2
        return F.pad(x, (0, 0, top, w - h - top))
    return x


def _stats(values, backbone, name: str) -> torch.Tensor:
    if values is None:
        if backbone is None:
            raise ValueError(f"visual prompt: give `{name}` (the weights' normalisation) when there is no backbone")
        values = getattr(backbone, name)
    t = torch.as_tensor(values, dtype=torch.float32).detach().cpu().reshape(-1)
    if t.numel() != 3:
        raise ValueError(f"visual prompt: `{name}` must be three numbers (R, G, B), not {values!r}")
    return t.view(3, 1, 1)


def blend_visual_prompt_original(image: ImageLike, mask, mode: str = ORIGINAL_DEFAULT_MODE, *,
                                 mean, std, size: int = ORIGINAL_SIZE, blur: float | None = None,
                                 bg_fac: float | None = None, center_context: float | None = None,
                                 name: str = "visual prompt") -> torch.Tensor:
    """The "clipseg-original" prompt: normalised float pixels `(3, S', S')` (see the module docstring).

    `mode`: one of `ORIGINAL_MODES`; `blur` (Gaussian sigma of the 15 x 15 kernel, 0: none), `bg_fac` and
    `center_context` override the mode's values. `size`: the square working size the example is resized
    to (the original dataset's `image_size`); the output is `size` px, except for "crop_blur_highlight352",
    whose crop is always resized to 352 (so it needs size 352 here: use "crop_blur_highlight" otherwise).
    """
    if mode not in ORIGINAL_MODES:
        raise ValueError(f"unknown visual prompt mode {mode!r} for the clipseg-original recipe; known: "
                         f"{', '.join(ORIGINAL_MODES)}")
    spec = ORIGINAL_MODES[mode]
    if spec["out"] is not None and size != spec["out"]:
        raise ValueError(f"visual prompt mode {mode!r} is {spec['out']} px by definition, not {size}: "
                         "use 'crop_blur_highlight' for another size")
    blur = spec["blur"] if blur is None else float(blur)
    bg_fac = spec["bg_fac"] if bg_fac is None else float(bg_fac)
    context = spec["center_context"] if center_context is None else float(center_context)
    mean_t, std_t = _stats(mean, None, "mean"), _stats(std, None, "std")

    rgb = load_rgb(image).float()
    m = _mask_tensor(mask, tuple(rgb.shape[-2:]), name)
    # 1. datasets/phrasecut.py load_sample: image bilinear (align_corners=True) on 0..255 floats, mask
    #    nearest on the binary mask, then /255 and Normalize(mean, std).
    img = F.interpolate(rgb[None], (size, size), mode="bilinear", align_corners=True)[0] / 255.0
    m = F.interpolate((m > 0.5).float()[None, None], (size, size), mode="nearest")[0, 0]
    if not m.any():
        raise ValueError(f"{name}: the visual prompt mask vanishes when the image is resized to {size} x {size} "
                         "(nearest, as the original does): mark a larger region")
    img = (img - mean_t) / std_t
    # 2. img_preprocess: blur the whole (normalised) image, keep the object, scale the blurred background.
    blurred = img
    if blur > 0:
        # cv2.GaussianBlur(img, (15, 15), blur): sigmaY = sigmaX, border BORDER_REFLECT_101 (= torch's
        # "reflect" padding that torchvision uses), kernel exp(-x^2 / (2 sigma^2)) normalised, x = -7..7: the
        # same kernel. It may differ from cv2 by float32 rounding only (cv2 builds the kernel in double and
        # filters separably; torchvision builds it in float32 and convolves in 2-D): ~1e-6.
        k = ORIGINAL_BLUR_KERNEL
        blurred = TF.gaussian_blur(img, [k, k], [blur, blur])
    out = img * m + bg_fac * blurred * (1 - m)
    # 3. object_crop: crop with context, pad to a square, resize (nearest: F.interpolate's default).
    if context is not None:
        top, bottom, left, right = original_crop_box(m, context)
        out = _pad_to_square(out[:, top:bottom, left:right])
        side = spec["out"] or size
        out = F.interpolate(out[None], (side, side), mode="nearest")[0]
    # 4. blend_image_segmentation subtracts 0.01 in its non-crop img_preprocess modes.
    return out - spec["shift"] if spec["shift"] else out


# -- both ------------------------------------------------------------------------------------------

def _check(recipe: str, images, masks) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"unknown visual prompt recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} visual prompt images but {len(masks)} masks")
    if len(images) == 0:
        raise ValueError("no visual prompt images given")


def visual_prompt_pixels(backbone, images: Sequence[ImageLike], masks: Sequence, mode: str | None = None, *,
                         recipe: str = "clipseg-lab", mean=None, std=None, size: int | None = None,
                         **blend_options) -> torch.Tensor:
    """The normalised prompt pixels `(N, 3, S, S)` that CLIP encodes, for N (image, mask) pairs.

    `mean` / `std`: the weights' normalisation (3 numbers or a `(1, 3, 1, 1)` tensor), default the backbone's.
    "clipseg-lab": `mode` from `MODES` (default "crop_blur_highlight"), `blend_options` of
    `blend_visual_prompt`, S = `size` or the backbone's native size; on the backbone's device and dtype.
    "clipseg-original": `mode` from `ORIGINAL_MODES` (default "crop_blur_highlight352", the released
    weights'), `blend_options` of `blend_visual_prompt_original`, S = `size` or 352; float32 on the CPU.
    `backbone` may be None for "clipseg-original" when `mean` and `std` are given.
    """
    _check(recipe, images, masks)
    if recipe == "clipseg-lab":
        if backbone is None:
            raise ValueError("the clipseg-lab visual prompt recipe needs the backbone (its preprocessing)")
        from clipseg_lab.backbones.clip_backbone import Normalization

        edited = [blend_visual_prompt(im, m, mode or LAB_DEFAULT_MODE, name=f"visual prompt {i}", **blend_options)
                  for i, (im, m) in enumerate(zip(images, masks))]
        normalization = None
        if mean is not None or std is not None:
            normalization = Normalization(tuple(_stats(mean, backbone, "mean").flatten().tolist()),
                                          tuple(_stats(std, backbone, "std").flatten().tolist()),
                                          "visual prompt normalisation")
        return backbone.preprocess(edited, size=size, normalization=normalization)
    mean_t, std_t = _stats(mean, backbone, "mean"), _stats(std, backbone, "std")
    return torch.stack([
        blend_visual_prompt_original(im, m, mode or ORIGINAL_DEFAULT_MODE, mean=mean_t, std=std_t,
                                     size=size or ORIGINAL_SIZE, name=f"visual prompt {i}", **blend_options)
        for i, (im, m) in enumerate(zip(images, masks))])


@torch.inference_mode()
def visual_prompt_embeddings(backbone, images: Sequence[ImageLike], masks: Sequence, mode: str | None = None, *,
                             recipe: str = "clipseg-lab", mean=None, std=None, size: int | None = None,
                             **blend_options) -> torch.Tensor:
    """Conditional embeddings `(N, embed_dim)` from N (image, mask) pairs: CLIP's projected (pooled) image
    embedding of each prompt of `visual_prompt_pixels` (same arguments). "clipseg-lab" encodes at the
    backbone's native size by default, "clipseg-original" at 352 with interpolated position embeddings,
    as the original does."""
    pixels = visual_prompt_pixels(backbone, images, masks, mode, recipe=recipe, mean=mean, std=std, size=size,
                                  **blend_options)
    return backbone.encode_image(pixels.to(backbone.device, backbone.dtype), pooled=True).pooled


def interpolate_conditionals(text: torch.Tensor, visual: torch.Tensor, alpha: float) -> torch.Tensor:
    """`(1 - alpha) * text + alpha * visual`: CLIPSeg's mix of text and visual conditionals (alpha in [0, 1])."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    return torch.lerp(text, visual.to(text.dtype), alpha)
