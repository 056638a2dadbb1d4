"""Sliding-window inference over large tiles, with batched windows and exact reassembly.

The window placement is mmseg's `slide_inference` (which SegEarth-OV, SCLIP and ClearCLIP use): windows start
every `stride` pixels and the last one in each direction is moved back to end exactly at the border, so every
pixel is covered whenever `stride <= window`. A stride larger than the window would leave gaps and is rejected.
A tile smaller than the window in a direction gets one window there, padded at the bottom / right to the window
size (with `pad_value`; 0 in normalised pixel space is the mean colour) and cropped back afterwards.

Overlapping outputs are averaged: each pixel's output is the mean over the windows that cover it, accumulated in
float64, so an identity model reproduces its input exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipseg_lab.errors import ConfigError

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)
WindowModel = Callable[[torch.Tensor, Sequence[Box]], torch.Tensor]


@dataclass(frozen=True)
class SlidingWindow:
    """`window` x `window` crops every `stride` pixels, `batch_size` crops per model call."""

    window: int = 224
    stride: int = 112
    batch_size: int = 16

    def __post_init__(self) -> None:
        check_window(self.window, self.stride)
        if self.batch_size < 1:
            raise ConfigError(f"sliding-window batch_size must be >= 1, got {self.batch_size}")

    def boxes(self, height: int, width: int) -> list[Box]:
        return window_boxes(height, width, self.window, self.stride)


def check_window(window: int, stride: int) -> None:
    if window < 1 or stride < 1:
        raise ConfigError(f"window ({window}) and stride ({stride}) must be positive")
    if stride > window:
        raise ConfigError(f"stride {stride} is larger than the window {window}: the windows would leave gaps of "
                          f"{stride - window} pixels unseen. Use a stride <= the window (SegEarth-OV: window 224, "
                          "stride 112).")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis (mmseg's placement: the last window ends at the border)."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def window_boxes(height: int, width: int, window: int, stride: int) -> list[Box]:
    """Every window as `(y0, x0, y1, x1)`, row-major; boxes are clipped to the image when it is smaller."""
    check_window(window, stride)
    return [(y, x, min(y + window, height), min(x + window, width))
            for y in window_starts(height, window, stride) for x in window_starts(width, window, stride)]


def _batches(boxes: list[Box], size: int) -> Iterator[list[Box]]:
    for start in range(0, len(boxes), size):
        yield boxes[start:start + size]


def crop_windows(image: torch.Tensor, boxes: Sequence[Box], window: int, pad_value: float = 0.0) -> torch.Tensor:
    """`(C, H, W)` -> `(B, C, window, window)` crops, padded at the bottom / right where the image is smaller."""
    crops = []
    for y0, x0, y1, x1 in boxes:
        crop = image[:, y0:y1, x0:x1]
        pad_h, pad_w = window - (y1 - y0), window - (x1 - x0)
        if pad_h or pad_w:
            crop = F.pad(crop, (0, pad_w, 0, pad_h), value=pad_value)
        crops.append(crop)
    return torch.stack(crops)


def slide(image: torch.Tensor, model: WindowModel, spec: SlidingWindow, *, pad_value: float = 0.0,
          accumulate_dtype: torch.dtype = torch.float64, progress: bool = False) -> torch.Tensor:
    """Run `model` over the windows of `image` `(C, H, W)` and average the outputs: `(K, H, W)`.

    `model(crops, boxes)` takes `(B, C, window, window)` crops (and their boxes, e.g. to crop a per-tile region
    map alongside) and returns `(B, K, window, window)` per-pixel outputs.
    """
    if image.ndim != 3:
        raise ValueError(f"slide expects one (C, H, W) image, got shape {tuple(image.shape)}")
    _, height, width = image.shape
    boxes = spec.boxes(height, width)
    out: torch.Tensor | None = None
    count = torch.zeros(height, width, dtype=accumulate_dtype, device=image.device)
    batches = list(_batches(boxes, spec.batch_size))
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="windows", leave=False)
    for batch in batches:
        crops = crop_windows(image, batch, spec.window, pad_value)
        pred = model(crops, batch)
        if pred.ndim != 4 or pred.shape[0] != len(batch) or tuple(pred.shape[-2:]) != (spec.window, spec.window):
            raise ValueError(f"the window model returned {tuple(pred.shape)}; expected ({len(batch)}, K, "
                             f"{spec.window}, {spec.window})")
        if out is None:
            out = torch.zeros(pred.shape[1], height, width, dtype=accumulate_dtype, device=image.device)
        for p, (y0, x0, y1, x1) in zip(pred, batch):
            out[:, y0:y1, x0:x1] += p[:, : y1 - y0, : x1 - x0].to(out.device, accumulate_dtype)
            count[y0:y1, x0:x1] += 1
    assert out is not None and bool((count > 0).all()), "sliding windows left pixels uncovered"
    return out / count


def resize_short_side(image: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """`(C, H, W)` uint8 resized (bilinear, antialiased) so that its shorter side is `short_side` pixels."""
    if short_side is None:
        return image
    import torchvision.transforms.v2.functional as TF

    h, w = image.shape[-2:]
    scale = short_side / min(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    if size == [h, w]:
        return image
    return TF.resize(image, size, antialias=True)
