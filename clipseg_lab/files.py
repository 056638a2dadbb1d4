"""Atomic file writes: a reader never sees a half-written output, and a crash leaves no partial file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes.

    The temporary file is created with mode 0o666 less the umask (like any `open(path, "w")`), so the
    output gets the permissions collaborators expect (0644 under umask 022), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _new_temp_file(path: Path) -> Path:
    """An empty, newly created file `.<name>.<random><suffix>` beside `path` (O_EXCL: never an existing one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for any new file
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}(?P<suffix>\.[^.]*)?$")


def leftover_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of `atomic_path` in `folder` that a killed process left (`.<name>.<8 hex><suffix>`)."""
    folder = Path(folder)
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _TEMP_NAME.match(path.name)
        if match and path.is_file() and match["name"].endswith(match["suffix"] or ""):
            found.append(path)
    return found


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's contents, read in 1 MiB chunks (weights files run to gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """NaN and infinities as None (strict JSON has neither) and NumPy scalars as Python numbers, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # NumPy scalars
        return json_safe(value.item())
    return value


def write_csv(table, path: str | os.PathLike, fieldnames: list[str] | None = None) -> Path:
    """A table as CSV, atomically: a pandas DataFrame (no index), or a list of dicts with a header of
    `fieldnames` (default: the first row's keys; keys not in it are left out; an empty list writes `name`)."""
    import csv

    with atomic_path(path) as tmp:
        if hasattr(table, "to_csv"):
            table.to_csv(tmp, index=False)
        else:
            fields = fieldnames or (list(table[0]) if table else ["name"])
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(table)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def save_png(image, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save a PIL image as PNG, with text chunks for provenance."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def load_data_pickle(path: str | os.PathLike) -> Any:
    """A pickle of plain data (the refer toolkit's `refs(unc).p`: lists, dicts, strings, numbers; sets too), read
    without running anything: any other object in the file -- a class, a function, `os.system` -- is refused with one
    `DatasetError` naming the file, instead of being executed as `pickle.load` would."""
    import pickle

    from clipseg_lab.errors import DatasetError

    containers = {"set", "frozenset", "complex", "bytearray"}  # builtin data types a pickle may name; nothing else

    class PlainData(pickle.Unpickler):
        def find_class(self, module: str, name: str):  # called for every global a pickle names
            if module in ("builtins", "__builtin__") and name in containers:
                return getattr(__import__("builtins"), name)
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not plain data")

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return PlainData(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"{path}: refused, not a pickle of plain data ({exc}); the refer toolkit's refs files hold "
                           "only lists, dicts, strings and numbers. Re-download the annotations") from exc


def compact_png(data: bytes, max_side: int | None = None) -> bytes:
    """A PNG re-encoded light: RGB quantised to 256 colours (no dithering: flat areas stay flat), optionally
    scaled down to `max_side`; text chunks (provenance) are kept."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(data))
    info = PngInfo()
    for key, value in (getattr(image, "text", None) or {}).items():
        info.add_text(key, value)
    rgb = image.convert("RGB")
    if max_side and max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.LANCZOS)
    out = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG", optimize=True,
                                                                                   pnginfo=info)
    return out.getvalue() if out.tell() < len(data) else data
