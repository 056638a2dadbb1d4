"""Read any image a user has into an RGB uint8 tensor `(3, H, W)`, or fail with a message naming it.

Orientation: a camera stores a photo as the sensor saw it and records in the EXIF Orientation tag how to turn
it for display. `orientation="exif"` applies that tag, so the result is the photo as a viewer shows it: the
Segmenter, the explorer and `clipseg-lab segment` read user photos so, and their masks line up with what the
user sees. `orientation="stored"` (the default) keeps the stored pixel grid: the dataset loaders read images
so, because their masks and polygons are in stored pixel coordinates, and a mask file is never turned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clipseg_lab.errors import ImageReadError

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
Orientation = Literal["exif", "stored"]
EXIF_ORIENTATION = 0x0112


def check_not_url(text: str | os.PathLike) -> None:
    """An http(s) URL is refused with one clear error: images are read from files, never fetched."""
    if re.match(r"(?i)https?://", os.fspath(text)):
        raise ImageReadError(f"{os.fspath(text)}: a URL; images are not fetched from the network. Download the "
                             "file first (e.g. curl -LO URL) and pass its path.")


def oriented(im: Image.Image, orientation: Orientation) -> Image.Image:
    """`im` turned as its EXIF Orientation tag says (`"exif"`), or as stored (`"stored"`): see the module docstring."""
    if orientation not in ("exif", "stored"):
        raise ValueError(f"orientation must be 'exif' or 'stored', not {orientation!r}")
    if orientation == "stored" or im.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return im  # no copy of an upright photo
    return ImageOps.exif_transpose(im)


def open_image(path: str | os.PathLike, orientation: Orientation = "stored") -> Image.Image:
    """Open an image file fully (so a truncated file fails here, not later), with a clear error.

    `orientation`: `"stored"` (the default, for dataset files whose annotations are in stored pixel coordinates)
    or `"exif"` (user photos, as a viewer shows them); see the module docstring."""
    check_not_url(path)
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file.")
    try:
        with Image.open(path) as im:
            im.load()
            turned = oriented(im, orientation)
            return im.copy() if turned is im else turned
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge images: not an OSError
        raise ImageReadError(f"{path}: {exc}. Tile it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the "
                             "file.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc}). Re-export it as PNG or JPEG.") from exc


def pil_to_rgb(im: Image.Image, source: str | None = None) -> Image.Image:
    """Grayscale, 16-bit, palette and RGBA images as 8-bit RGB (alpha composited over white)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grayscale: stretch to 8 bits
        source = source or f"a PIL image (mode {im.mode}, {im.width}x{im.height})"
        return Image.fromarray(_to_uint8(np.asarray(im), source)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _describe(array) -> str:
    kind = "tensor" if isinstance(array, torch.Tensor) else "array"
    return f"a {str(array.dtype).removeprefix('torch.')} {kind} of shape {tuple(array.shape)}"


def _to_uint8(array: np.ndarray, source: str = "the image") -> np.ndarray:
    """Integer images by their dtype's range (uint16 / 257), float images from [0, 1] (NaN refused)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        missing = int(np.isnan(array).sum())
        if missing:  # NaN would otherwise become black pixels that look like image content
            raise ImageReadError(f"{source}: {missing} of its {array.size} values are NaN; a float image must hold "
                                 "finite values in [0, 1]. Fill or crop the missing pixels first.")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ImageReadError(f"{source}: a float image must hold values in [0, 1]; this one spans "
                                 f"[{array.min():.3g}, {array.max():.3g}]. Scale it first.")
        return np.round(array * 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):  # e.g. PIL's int32 mode "I" holding 16-bit data
        top = 65535 if array.max(initial=0) > 255 else 255
        return (np.clip(array, 0, top).astype(np.float64) * 255 / top).round().astype(np.uint8)
    raise ImageReadError(f"{source}: unsupported image dtype {array.dtype}")


def array_to_rgb(array: np.ndarray, source: str | None = None) -> np.ndarray:
    """An `(H, W)`, `(H, W, 1|3|4)` array of any common dtype as `(H, W, 3)` uint8."""
    array = np.asarray(array)
    source = source or _describe(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first input
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageReadError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    if array.shape[-1] == 4:
        rgb = _to_uint8(array[..., :3], source).astype(np.float32)
        alpha = _to_uint8(array[..., 3:], source).astype(np.float32) / 255.0
        return np.round(rgb * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    array = _to_uint8(array, source)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def load_rgb(image: ImageLike, orientation: Orientation = "stored") -> torch.Tensor:
    """An image path, PIL image, NumPy array or tensor as an RGB uint8 tensor `(3, H, W)`.

    `orientation` applies to paths and PIL images (arrays and tensors carry no EXIF): `"stored"`, the default,
    is what the dataset loaders need (their annotations are in stored pixel coordinates); pass `"exif"` for user
    photos, so that the result is the photo as a viewer shows it (see the module docstring)."""
    if isinstance(image, torch.Tensor):
        source = _describe(image)
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        return torch.from_numpy(array_to_rgb(image.detach().cpu().numpy(), source)).permute(2, 0, 1).contiguous()
    source = None
    if isinstance(image, (str, os.PathLike)):
        source = str(image)
        image = open_image(image, orientation)
    elif isinstance(image, Image.Image):
        image = oriented(image, orientation)
    if isinstance(image, Image.Image):
        array = np.asarray(pil_to_rgb(image, source))
    elif isinstance(image, np.ndarray):
        array = array_to_rgb(image)
    else:
        raise ImageReadError(f"cannot read an image from a {type(image).__name__}: "
                             "pass a path, a PIL image or an array")
    return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
