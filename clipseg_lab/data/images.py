"""Read any image a user has into an RGB uint8 tensor `(3, H, W)`, or fail with a message naming it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipseg_lab.errors import ImageReadError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (so a truncated file fails here, not later), with a clear error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file.")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge images: not an OSError
        raise ImageReadError(f"{path}: {exc}. Tile it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the "
                             "file.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc}). Re-export it as PNG or JPEG.") from exc


def pil_to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette and RGBA images as 8-bit RGB (alpha composited over white)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grayscale: stretch to 8 bits
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Integer images by their dtype's range (uint16 / 257), float images from [0, 1]."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise ImageReadError(f"a float image must hold values in [0, 1]; this one spans "
                                 f"[{np.nanmin(array):.3g}, {np.nanmax(array):.3g}]. Scale it first.")
        return np.round(np.nan_to_num(array) * 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):  # e.g. PIL's int32 mode "I" holding 16-bit data
        top = 65535 if array.max(initial=0) > 255 else 255
        return (np.clip(array, 0, top).astype(np.float64) * 255 / top).round().astype(np.uint8)
    raise ImageReadError(f"unsupported image dtype {array.dtype}")


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """An `(H, W)`, `(H, W, 1|3|4)` array of any common dtype as `(H, W, 3)` uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first input
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageReadError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    if array.shape[-1] == 4:
        rgb = _to_uint8(array[..., :3]).astype(np.float32)
        alpha = _to_uint8(array[..., 3:]).astype(np.float32) / 255.0
        return np.round(rgb * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    array = _to_uint8(array)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def load_rgb(image: ImageLike) -> torch.Tensor:
    """An image path, PIL image, NumPy array or tensor as an RGB uint8 tensor `(3, H, W)`."""
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        return torch.from_numpy(array_to_rgb(image.detach().cpu().numpy())).permute(2, 0, 1).contiguous()
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        array = np.asarray(pil_to_rgb(image))
    elif isinstance(image, np.ndarray):
        array = array_to_rgb(image)
    else:
        raise ImageReadError(f"cannot read an image from a {type(image).__name__}: pass a path, a PIL image or an array")
    return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
