"""Masks from the formats datasets ship: polygons, COCO RLE, colour-coded and index-coded label images."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipseg_lab.errors import ClipsegLabError
from clipseg_lab.images import open_image
from clipseg_lab.labels import IGNORE_INDEX as IGNORE_INDEX  # re-exported: the loaders read it from here

log = logging.getLogger(__name__)



class MaskError(ClipsegLabError, ValueError):
    """A mask that cannot be used: wrong size, unknown label values, unreadable file."""


def polygons_to_mask(polygons: Sequence[Sequence[Sequence[float]]], height: int, width: int, *,
                     holes: bool = False, source: str = "polygons") -> tuple[np.ndarray, int]:
    """Rasterise polygons (each a list of `[x, y]` points) into one boolean mask; returns `(mask, skipped)`.

    `holes=False`: the union of the filled polygons, as PhraseCut's own `polygons_to_mask` (and so its
    evaluation) does. `holes=True`: even-odd, so a polygon lying inside another one of the list cuts a hole.
    Points are clipped to the image; polygons with fewer than 3 points cannot enclose anything and are
    skipped (counted in `skipped`, with a log line naming `source`).
    """
    mask = np.zeros((height, width), bool)
    skipped = 0
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            skipped += 1
            continue
        points[:, 0] = points[:, 0].clip(0, width - 1)
        points[:, 1] = points[:, 1].clip(0, height - 1)
        layer = Image.new("L", (width, height), 0)
        ImageDraw.Draw(layer).polygon([(int(x), int(y)) for x, y in points], outline=1, fill=1)
        part = np.asarray(layer, dtype=bool)
        mask = (mask ^ part) if holes else (mask | part)
    if skipped:
        log.warning("%s: skipped %d polygon(s) with fewer than 3 points", source, skipped)
    return mask, skipped


def coco_segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (polygon list, compressed or uncompressed RLE) as a boolean mask (pycocotools)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: flat [x1, y1, x2, y2, ...] lists
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label image as an array: `(H, W)` for index-coded labels, `(H, W, 3)` for colour-coded ones."""
    im = open_image(path)
    if im.mode == "P":  # palette PNGs store class indices
        return np.asarray(im)
    if im.mode in ("RGBA", "RGB"):
        return np.asarray(im.convert("RGB"))
    return np.asarray(im)


def decode_colours(rgb: np.ndarray, palette: Mapping[tuple[int, int, int], int], *, source: str,
                   unknown: int | None = None) -> np.ndarray:
    """Colour-coded `(H, W, 3)` labels -> class indices `(H, W)` with `palette` {(r, g, b): index}.

    A colour outside the palette is an error naming the file, the colour and its pixel count, unless
    `unknown` gives the index to use for such pixels (e.g. 255 to ignore them).
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise MaskError(f"{source}: expected a colour-coded (H, W, 3) label image, got shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = np.full(code.shape, -1, np.int32)
    for colour, index in palette.items():
        out[code == ((colour[0] << 16) | (colour[1] << 8) | colour[2])] = index
    missing = out < 0
    if missing.any():
        if unknown is None:
            values, counts = np.unique(code[missing], return_counts=True)
            shown = ", ".join(f"({v >> 16}, {(v >> 8) & 255}, {v & 255}) x{c}" for v, c in zip(values[:5], counts[:5]))
            raise MaskError(f"{source}: {int(missing.sum())} pixels have colours outside the label palette: {shown}. "
                            "Give the right palette (label coding) or map them with unknown=255.")
        out[missing] = unknown
    return out.astype(np.uint8)


def encode_colours(index: np.ndarray, palette: Mapping[tuple[int, int, int], int]) -> np.ndarray:
    """Class indices -> colours: the inverse of `decode_colours` (for writing colour-coded labels)."""
    out = np.zeros(index.shape + (3,), np.uint8)
    for colour, value in palette.items():
        out[index == value] = colour
    return out


def remap_labels(labels: np.ndarray, mapping: Mapping[int, int], *, source: str, ignore_index: int = IGNORE_INDEX,
                 strict: bool = True) -> np.ndarray:
    """Original label values -> training indices. A value missing from `mapping` is an error naming the file
    (or, with `strict=False`, ignored as `ignore_index`)."""
    lut = np.full(max(int(labels.max(initial=0)), max(mapping, default=0)) + 1, -1, np.int32)
    for original, target in mapping.items():
        lut[original] = target
    out = lut[labels]
    if (out < 0).any():
        bad = sorted(set(np.unique(labels[out < 0]).tolist()))
        if strict:
            raise MaskError(f"{source}: label value(s) {bad} are not in the label mapping {dict(mapping)}")
        out[out < 0] = ignore_index
    return out.astype(np.uint8)


def check_size(image_hw: tuple[int, int], mask: np.ndarray, *, image: str | Path, mask_file: str | Path) -> None:
    if tuple(mask.shape[:2]) != tuple(image_hw):
        raise MaskError(f"{mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image} is "
                        f"{image_hw[1]}x{image_hw[0]}; they must be the same size")


def to_binary_mask(array: np.ndarray, *, source: str | Path) -> np.ndarray:
    """A user's binary mask image as uint8 0/1: 0/1 and 0/255 masks (grey, bilevel or palette PNGs, or colour
    PNGs whose three channels are equal). Anything else, e.g. anti-aliased edges, is an error naming the file."""
    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):  # LA / RGBA: drop the alpha channel
            array = array[..., :-1]
        if not (array == array[..., :1]).all():
            raise MaskError(f"{source}: a colour mask; expected a single-channel binary PNG (0/255 or 0/1)")
        array = array[..., 0]
    if array.dtype == bool:
        return array.astype(np.uint8)
    values = np.flatnonzero(np.bincount(array.ravel(), minlength=2)) if array.dtype == np.uint8 else np.unique(array)
    values = set(int(v) for v in values)
    if values <= {0, 1}:
        return array.astype(np.uint8)
    if values <= {0, 255}:
        return (array == 255).astype(np.uint8)
    shown = sorted(values)
    listed = ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else "")
    raise MaskError(f"{source}: not a binary mask (values {listed}; expected 0/255 or 0/1)")
