"""Datasets and masks (image reading lives in clipseg_lab.images; its names are kept here for old imports)."""

from clipseg_lab.images import ImageLike, load_rgb, open_image

__all__ = ["ImageLike", "load_rgb", "open_image"]
