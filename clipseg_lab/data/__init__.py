"""Datasets, image reading and masks."""

from clipseg_lab.data.images import ImageLike, load_rgb, open_image

__all__ = ["ImageLike", "load_rgb", "open_image"]
