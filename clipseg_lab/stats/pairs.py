"""Two populations of grayscale differences |I(p) - I(q)| from an image and an object mask.

* A, **inside**: pairs (p, q) whose two pixels carry the same object label.
* B, **across**: pairs whose two pixels carry different object labels (the pair crosses an object boundary,
  or joins two different objects).
Pairs touching an ignored pixel (the Oxford Pet trimap's boundary band, Cityscapes' ignored classes, the
remote-sensing no-data value) belong to neither population.

Two ways to draw pairs:

* `neighbour_pairs` (mode "neighbours"): every pair q = p + d * (dy, dx) for the half-directions of the 4-
  neighbourhood ((0, 1), (1, 0)) or the 8-neighbourhood (also (1, 1), (1, -1)), so each unordered pair is
  counted once. `d` is the pair distance in pixels along the direction (Chebyshev distance: a diagonal pair
  at d is d * sqrt(2) apart). A and B are drawn at the same `d`, so the comparison is not confounded by
  distance. An ignore band wider than d - 1 pixels hides the boundary: no pair crosses it. The Oxford Pet
  trimaps' band is 15-22 pixels wide (median distance from a pet pixel at the band to the nearest background
  pixel, measured on the 18 real samples), so d = 1 gives no B pairs there; `choose_pair_distance` picks d
  from the masks (see its docstring).
* `random_pairs` (mode "random", the seed's wording taken literally): random pairs of pixels of the same
  object vs random pairs of pixels of different objects, at any distance, drawn with a seeded generator.

Grayscale is ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000, the formula of PIL's `convert("L")`,
kept as a float (not rounded to an integer as PIL does); a grey pixel (R = G = B = v) has luma exactly v.
Differences are float32: a 1024 x 1024 image with the 8-neighbourhood gives about 4 million of them (16 MB).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipseg_lab.data.masks import IGNORE_INDEX, MaskError

log = logging.getLogger(__name__)

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")
DIRECTIONS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}
MODES = ("neighbours", "random")
OBJECTS = ("labels", "components")


class NoBoundaryError(MaskError):
    """A mask with fewer than two object labels outside the ignore value: nothing to compare across."""


@dataclass
class PairPopulations:
    """A (`inside`) and B (`across`): float32 absolute grayscale differences, one per pair."""

    inside: np.ndarray
    across: np.ndarray
    mode: str = "neighbours"
    distance: int | None = 1  # None in random mode
    neighbourhood: int | None = 4

    @property
    def n_inside(self) -> int:
        return int(self.inside.size)

    @property
    def n_across(self) -> int:
        return int(self.across.size)

    def describe(self) -> dict[str, Any]:
        def stats(x: np.ndarray) -> tuple[float, float]:
            return (float(x.mean(dtype=np.float64)) if x.size else math.nan,
                    float(x.std(ddof=1, dtype=np.float64)) if x.size > 1 else math.nan)

        (ma, sa), (mb, sb) = stats(self.inside), stats(self.across)
        return {"n_A": self.n_inside, "n_B": self.n_across, "mean_A": ma, "sd_A": sa, "mean_B": mb, "sd_B": sb}


def luma(image: Any) -> np.ndarray:
    """ITU-R 601-2 luma as float64 `(H, W)` from an RGB image, or a grayscale `(H, W)` image as float64.

    A tensor is `(3, H, W)` (the loaders' layout); an array is `(H, W, 3)`, or `(3, H, W)` when its last axis is
    not 3 (the rule `clipseg_lab.images.array_to_rgb` uses)."""
    tensor = hasattr(image, "detach")
    array = image.detach().cpu().numpy() if tensor else np.asarray(image)
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim == 3 and array.shape[0] == 3 and (tensor or array.shape[-1] != 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (3, H, W) or (H, W, 3), or a grayscale (H, W) one; got {array.shape}")
    rgb = array.astype(np.float64)
    return (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) / 1000


def object_labels(mask: Any, ignore_index: int | None = IGNORE_INDEX, objects: str = "labels") -> np.ndarray:
    """An int32 object map with -1 for ignored pixels.

    `objects="labels"`: one object per label value (a semantic mask's two cats are one object).
    `objects="components"`: one object per 8-connected component of each label value.
    """
    if objects not in OBJECTS:
        raise ValueError(f"objects must be one of {OBJECTS}, not {objects!r}")
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    if array.ndim != 2:
        raise MaskError(f"a label mask must be (H, W); got shape {array.shape}")
    labels = array.astype(np.int64)
    ignored = labels < 0 if ignore_index is None else (labels == ignore_index) | (labels < 0)
    labels = np.where(ignored, -1, labels)
    if objects == "components":
        from scipy import ndimage

        out = np.full(labels.shape, -1, np.int64)
        next_id = 0
        for value in np.unique(labels[labels >= 0]):
            comp, n = ndimage.label(labels == value, structure=np.ones((3, 3), bool))
            out[comp > 0] = comp[comp > 0] - 1 + next_id
            next_id += n
        labels = out
    if labels.max(initial=0) > np.iinfo(np.int32).max:
        raise MaskError(f"object labels up to {labels.max()} do not fit int32")
    return labels.astype(np.int32)


def check_inputs(gray: np.ndarray, labels: np.ndarray, source: str = "image") -> None:
    """Raise a `MaskError` naming `source` for a size mismatch, an all-ignore mask or a single-label mask."""
    if gray.shape != labels.shape:
        raise MaskError(f"{source}: mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but the image is "
                        f"{gray.shape[1]}x{gray.shape[0]}; they must be the same size (resize the mask with "
                        "nearest neighbour, or pass the mask made for this image)")
    valid = labels >= 0
    if not valid.any():
        raise NoBoundaryError(f"{source}: every pixel of the mask is ignored: no pairs inside or across objects")
    present = np.unique(labels[valid])
    if present.size < 2:
        raise NoBoundaryError(f"{source}: the mask holds a single object label ({int(present[0])}) outside the "
                              "ignored pixels: no boundary, so no pairs across objects")


def neighbour_pairs(gray: np.ndarray, labels: np.ndarray, distance: int = 1, neighbourhood: int = 4,
                    source: str = "image") -> PairPopulations:
    """All pairs (p, p + distance * direction) of the 4- or 8-neighbourhood, split into A (same label) and B
    (different labels); pairs with an ignored pixel (-1) are dropped. Vectorised by array slicing."""
    if neighbourhood not in DIRECTIONS:
        raise ValueError(f"neighbourhood must be 4 or 8, not {neighbourhood!r}")
    if int(distance) != distance or distance < 1:
        raise ValueError(f"pair distance must be a positive integer, not {distance!r}")
    check_inputs(gray, labels, source)
    d = int(distance)
    g = gray.astype(np.float32)
    inside, across = [], []
    h, w = labels.shape
    for dy, dx in DIRECTIONS[neighbourhood]:
        oy, ox = dy * d, dx * d
        if oy >= h or abs(ox) >= w:
            continue
        # p = (y, x) and q = (y + oy, x + ox), both inside the image
        p = (slice(0, h - oy), slice(max(0, -ox), w - max(0, ox)))
        q = (slice(oy, h), slice(max(0, ox), w - max(0, -ox)))
        a, b = labels[p], labels[q]
        diff = np.abs(g[p] - g[q])
        valid = (a >= 0) & (b >= 0)
        same = a == b
        inside.append(diff[valid & same])
        across.append(diff[valid & ~same])
    empty = np.zeros(0, np.float32)
    return PairPopulations(np.concatenate(inside) if inside else empty, np.concatenate(across) if across else empty,
                           "neighbours", d, neighbourhood)


def random_pairs(gray: np.ndarray, labels: np.ndarray, n_pairs: int = 10_000, seed: int | np.random.Generator = 0,
                 source: str = "image") -> PairPopulations:
    """`n_pairs` random pairs of distinct pixels of the same object (A) and `n_pairs` random pairs of pixels of
    different objects (B), at any distance. A: p uniform over the valid pixels, q uniform over the other
    pixels of p's object (objects of one pixel give no A pair). B: p uniform, q uniform over the pixels of
    every other object."""
    check_inputs(gray, labels, source)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    flat = labels.ravel()
    valid = np.flatnonzero(flat >= 0)
    order = valid[np.argsort(flat[valid], kind="stable")]  # valid pixel indices grouped by label
    values, start, count = np.unique(flat[order], return_index=True, return_counts=True)
    g = gray.ravel().astype(np.float32)
    n_valid = order.size

    # A: p, then a different pixel of the same object (objects of one pixel cannot give a pair)
    eligible = np.repeat(count > 1, count)
    pool = np.flatnonzero(eligible)
    if pool.size:
        ip = pool[rng.integers(0, pool.size, n_pairs)]
        obj = np.searchsorted(values, flat[order[ip]])
        offset = rng.integers(0, count[obj] - 1)  # skip p itself
        own = ip - start[obj]
        iq = start[obj] + offset + (offset >= own)
        inside = np.abs(g[order[ip]] - g[order[iq]])
    else:
        inside = np.zeros(0, np.float32)
    # B: p, then a pixel of any other object (the complement of p's block in the grouped order)
    ip = rng.integers(0, n_valid, n_pairs)
    obj = np.searchsorted(values, flat[order[ip]])
    r = rng.integers(0, n_valid - count[obj])
    iq = np.where(r < start[obj], r, r + count[obj])
    across = np.abs(g[order[ip]] - g[order[iq]])
    return PairPopulations(inside.astype(np.float32), across.astype(np.float32), "random", None, None)


def pair_populations(image: Any, mask: Any, *, mode: str = "neighbours", distance: int = 1, neighbourhood: int = 4,
                     n_pairs: int = 10_000, seed: int | np.random.Generator = 0,
                     ignore_index: int | None = IGNORE_INDEX, objects: str = "labels",
                     source: str = "image") -> PairPopulations:
    """A and B from an RGB (or grayscale) image and a label mask (semantic, instance, or a model's prediction).

    `mask` values equal to `ignore_index` (or negative) are ignored. Errors name `source`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    gray = luma(image)
    labels = object_labels(mask, ignore_index, objects)
    if mode == "neighbours":
        return neighbour_pairs(gray, labels, distance, neighbourhood, source)
    return random_pairs(gray, labels, n_pairs, seed, source)


def crossing_distances(labels: np.ndarray, max_span: int = 64) -> np.ndarray:
    """For each edge pixel (a valid pixel 4-adjacent to an ignored pixel or to another label): the Euclidean
    distance to the nearest valid pixel of another label. Direct edges give 1; a pixel at an ignore band gives
    about the band's width + 1. Distances above `max_span` (large ignored regions, not bands) are left out."""
    from scipy import ndimage

    valid = labels >= 0
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    edge = valid & np.logical_or.reduce([n != centre for n in neighbours])
    out = []
    for value in np.unique(labels[edge]):
        here = edge & (labels == value)
        others = valid & (labels != value)
        if not others.any():
            continue
        dist = ndimage.distance_transform_edt(~others)
        out.append(dist[here])
    dist = np.concatenate(out) if out else np.zeros(0)
    return dist[dist <= max_span]


def choose_pair_distance(label_maps: list[np.ndarray], quantile: float = 0.75, max_span: int = 64) -> dict[str, Any]:
    """The pair distance that lets pairs span the ignore bands of these masks.

    Rule: d = ceil(the `quantile` of `crossing_distances` pooled over the masks), at least 1. Where labels
    touch directly (Cityscapes, Penn-Fudan, most remote-sensing tiles) most edge pixels have distance 1 and
    d = 1; where a band separates every object from the next (Oxford Pet trimaps), d comes out as the band
    width that 75 % of the boundary can be crossed within (about 22 px on the real Pet samples). Returns
    {"distance", "rule", "median_crossing", "edge_pixels"}.
    """
    pooled = [crossing_distances(m, max_span) for m in label_maps]
    dist = np.concatenate(pooled) if pooled else np.zeros(0)
    if dist.size == 0:
        return {"distance": 1, "rule": "no edge pixels found: d = 1", "median_crossing": math.nan, "edge_pixels": 0}
    d = max(1, math.ceil(float(np.quantile(dist, quantile)) - 1e-9))
    return {"distance": int(d), "median_crossing": float(np.median(dist)), "edge_pixels": int(dist.size),
            "rule": f"ceil of the {quantile:.0%} quantile of the distance from an edge pixel to the nearest pixel of "
                    f"another label (over {len(label_maps)} mask(s), spans <= {max_span} px)"}
