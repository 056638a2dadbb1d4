"""Users' own data: a folder of images with binary masks and prompts, or with index-coded label images.

`folder` (`FolderReferring`, referring: one binary mask per prompt)::

    ROOT/images/<file>            any image Pillow reads
    ROOT/masks/<file>.png         binary masks, 0/255 or 0/1, the size of their image
    ROOT/prompts.csv              columns image,mask,prompt[,split]; one row per prompt, so an image (and a
                                  mask) may appear on several rows with different prompts

`image` is a path relative to `images/` (or to ROOT, or absolute), `mask` likewise relative to `masks/`; an
empty or absent `mask` means `masks/<image path>.png` (the image's path under `images/`, with `.png`). Samples are
named `<image stem>-<k>`, k counting that image's rows from 0.

`folder-semantic` (`FolderSemantic`, semantic: class indices, `class_names` sizes a multi-class head)::

    ROOT/images/<stem>.<ext>      any image Pillow reads
    ROOT/labels/<stem>.png        index-coded labels (one channel), matched to the image by stem
    ROOT/classes.yaml             the classes: a list of names (index = position), a mapping index -> name,
                                  or {classes: <either>, ignore_index: 255}; ignore_index defaults to 255

Label values are remapped to 0..K-1 in the order of the class indices (the identity when they already are
0..K-1) and ignore_index becomes 255, as every other loader's masks.

Splits (`train`, `val`, `test`, or `all`): `folder` takes them from the optional `split` column of
prompts.csv, `folder-semantic` from an optional `splits.csv` (or `split.csv`) with columns `image,split`
(images it does not list are in no split but `all`). Without one, the split is seeded and deterministic, and
made by image, never by row, so one image (with all its prompts) never lands in two splits: the sorted image
names are shuffled with `split_seed` (default 0), the first `test_fraction` (default 0.1) become `test`, the
next `val_fraction` (default 0.1) `val`, the rest `train` (at least one val and one test image from three
images up). The split is made over every listed image, good or bad, so skipping bad rows never moves an image.

Bad rows (a missing image or mask file, an unreadable file, an image / mask size mismatch, an empty prompt, a
mask that is not binary, an unknown class, an unknown split name) are collected while indexing the requested
split and raised as ONE `DatasetError` that lists them; `skip_bad=True` (`data.options: {skip_bad: true}` in
a config) skips and counts them instead (`dataset.skipped`, summarised in the log). Sizes are read from the
file headers; mask and label values are checked by decoding each mask once (`check_values=False` leaves that
to loading time, where a bad mask raises a `MaskError` naming the file).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from clipseg_lab.data.base import DatasetError, RecordDataset, Sample
from clipseg_lab.data.masks import IGNORE_INDEX, MaskError, check_size, read_label, to_binary_mask
from clipseg_lab.images import load_rgb

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SHOWN_BAD_ROWS = 10
_SAID: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class BadRow:
    """One problem found while indexing: `where` (a CSV line or a file), `kind` (for counting) and `detail`."""

    where: str
    kind: str  # e.g. "image file missing": what the skip summary counts
    detail: str = ""  # the whole reason, naming the file (default: the kind)

    def __str__(self) -> str:
        return f"{self.where}: {self.detail or self.kind}"


def seeded_split_by_image(names: Iterable[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """{image name: split}: the sorted unique names shuffled with `seed`; the first `test_fraction` go to test,
    the next `val_fraction` to val, the rest to train (from 3 images up, at least one each for a non-zero
    fraction). Deterministic, and changing `val_fraction` leaves the test images where they were."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must lie in [0, 1) and "
                         "leave some images for training")
    order = sorted(set(names))
    np.random.default_rng(seed).shuffle(order)
    n = len(order)

    def count(fraction: float) -> int:
        k = int(round(n * fraction))
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test = count(test_fraction)
    n_val = min(count(val_fraction), max(n - n_test - 1, 0))
    return {name: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, name in enumerate(order)}


def label_values(array: np.ndarray) -> list[int]:
    """The distinct values of an integer label image (a bincount for uint8: fast on big images)."""
    if array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=1)).tolist()
    return [int(v) for v in np.unique(array)]


class _FolderBase(RecordDataset):
    """Split choice, cheap size checks, the bad-row report and `skip_bad`, shared by both folder datasets."""

    def __init__(self, root: str | Path | None, split: str, *, skip_bad: bool, split_seed: int, val_fraction: float,
                 test_fraction: float, check_values: bool, transform):
        super().__init__(transform)
        if root is None:
            raise DatasetError(f"{self.name}: needs a root folder (data.root in a config, --data on the command line)")
        if split not in (*SPLITS, "all"):
            raise DatasetError(f"split must be train, val, test or all, not {split!r}")
        self.root, self.split = Path(root).expanduser(), split
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        self.skip_bad, self.check_values = skip_bad, check_values
        self.split_seed, self.val_fraction, self.test_fraction = split_seed, val_fraction, test_fraction
        self.bad_rows: list[BadRow] = []
        self._sizes: dict[Path, tuple[int, int] | BadRow] = {}

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def image_size(self, path: Path, what: str = "image") -> tuple[int, int] | BadRow:
        """(W, H) from the file header (no decoding), or the bad row saying why not; cached per file."""
        if path not in self._sizes:
            if not path.is_file():
                self._sizes[path] = BadRow(self.rel(path), f"{what} file missing")
            else:
                try:
                    with Image.open(path) as im:
                        self._sizes[path] = im.size
                except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                    self._sizes[path] = BadRow(self.rel(path), f"unreadable {what} file",
                                               f"unreadable {what} file ({exc})")
        return self._sizes[path]

    def seeded_split_note(self, count: int) -> None:
        self.split_source = (f"seeded split by image (seed {self.split_seed}, val {self.val_fraction:.0%}, test "
                             f"{self.test_fraction:.0%}) of {count} images")
        if (str(self.root), self.split_source) not in _SAID:  # once per folder, not once per split opened
            _SAID.add((str(self.root), self.split_source))
            log.info("%s: %s", self.root, self.split_source)

    def bad(self, row: BadRow) -> None:
        self.bad_rows.append(row)

    def finish(self, source: str) -> None:
        """Raise the one report of bad rows (or skip and count them with `skip_bad`), then require samples."""
        if self.bad_rows and not self.skip_bad:
            shown = "\n".join(f"  {row}" for row in self.bad_rows[:SHOWN_BAD_ROWS])
            more = len(self.bad_rows) - SHOWN_BAD_ROWS
            raise DatasetError(
                f"{self.root} ({self.name}, split {self.split!r}): {len(self.bad_rows)} bad row(s) in {source}:\n"
                f"{shown}" + (f"\n  and {more} more" if more > 0 else "") +
                "\nFix them, or skip them with the loader option skip_bad=True (in a config: data.options: "
                "{skip_bad: true}; for clipseg-lab evaluate: --data-option skip_bad=true).")
        for row in self.bad_rows:
            self.skip(str(row), row.kind)
        if not self.records:
            reasons = f"; {len(self.skipped)} bad row(s) skipped, e.g. {self.skipped[0][0]}" if self.skipped else ""
            raise DatasetError(f"{self.root} ({self.name}): no samples in split {self.split!r} ({self.split_source})"
                               f"{reasons}")
        if self.skipped:
            self.report_skips()


@dataclass(frozen=True)
class FolderRecord:
    name: str  # <image stem>-<k>
    image: Path
    mask: Path
    prompt: str
    line: int  # in prompts.csv


class FolderReferring(_FolderBase):
    """`folder`: images, binary masks and prompts.csv (see the module docstring for layout, splits, bad rows).

    Options: `split` (train, val, test, all), `skip_bad` (skip bad rows instead of raising), `split_seed`,
    `val_fraction`, `test_fraction` (the seeded split, when prompts.csv has no split column), `check_values`
    (decode masks while indexing to check they are binary), `prompts_file` (default prompts.csv)."""

    name = "folder"

    def __init__(self, root: str | Path | None, split: str = "train", *, skip_bad: bool = False, split_seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, check_values: bool = True,
                 prompts_file: str = "prompts.csv", transform=None):
        super().__init__(root, split, skip_bad=skip_bad, split_seed=split_seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, check_values=check_values, transform=transform)
        csv_path = self.root / prompts_file
        if not csv_path.is_file():
            raise DatasetError(f"{csv_path}: missing. Expected the folder layout: images/, masks/ (binary PNGs) and "
                               f"{prompts_file} with columns image,mask,prompt[,split]")
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(fh, skipinitialspace=True)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            lacking = [c for c in ("image", "prompt") if c not in columns]
            if lacking:
                raise DatasetError(f"{csv_path}: no column(s) {', '.join(lacking)}; found {columns or 'no header'}. "
                                   "Expected a header line image,mask,prompt[,split]")
            rows = [(number, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None})
                    for number, row in enumerate(reader, 2)]
        rows = [(n, row) for n, row in rows if any(row.values())]  # blank lines
        if not rows:
            raise DatasetError(f"{csv_path}: no rows (one row per prompt: image,mask,prompt)")
        where = lambda n: f"{prompts_file} line {n}"  # noqa: E731
        has_split = "split" in columns
        if has_split:
            self.split_source = f"the split column of {prompts_file}"
            splits = {n: SPLIT_ALIASES.get(row.get("split", "").lower()) for n, row in rows}
        else:
            key = {n: self.rel(self._resolve("images", row["image"])) for n, row in rows if row["image"]}
            chosen = seeded_split_by_image(key.values(), split_seed, val_fraction, test_fraction)
            self.seeded_split_note(len(chosen))
            splits = {n: chosen.get(key.get(n)) for n, row in rows}
        self._mask_checks: dict[Path, tuple[str, str] | None] = {}
        per_image: dict[Path, int] = {}
        split_of_image: dict[Path, set[str]] = {}
        for number, row in rows:
            if has_split and splits[number] is None:
                self.bad(BadRow(where(number), "unknown split",
                                f"unknown split {row.get('split')!r}; use train, val or test"))
                continue
            if not row["image"]:
                self.bad(BadRow(where(number), "no image named"))
                continue
            image = self._resolve("images", row["image"])
            split_of_image.setdefault(image, set()).add(splits[number])
            if split != "all" and splits[number] != split:
                continue
            mask = self._resolve("masks", row.get("mask") or f"{self._stem(image)}.png")  # sub/cat1 -> sub/cat1.png
            problem = self._check(number, where(number), image, mask, row["prompt"])
            if problem is not None:
                self.bad(problem)
                continue
            k = per_image.get(image, 0)
            per_image[image] = k + 1
            self.records.append(FolderRecord(f"{self._stem(image)}-{k}", image, mask, row["prompt"], number))
        leaking = sorted(self.rel(p) for p, s in split_of_image.items() if len(s) > 1)
        if leaking:
            log.warning("%s: %d image(s) are in more than one split of the split column (e.g. %s): their prompts "
                        "are seen in training and evaluation", csv_path, len(leaking), leaking[0])
        self.finish(prompts_file)

    def _stem(self, image: Path) -> str:
        """The image's path below images/ (else below ROOT) without its suffix: `cat1`, `sub/cat1`."""
        for base in (self.root / "images", self.root):
            if image.is_relative_to(base):
                return image.relative_to(base).with_suffix("").as_posix()
        return image.stem

    def _resolve(self, folder: str, value: str) -> Path:
        """`value` relative to ROOT/<folder> (the layout), else to ROOT when only that exists; absolute as is."""
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        inside = self.root / folder / path
        return self.root / path if not inside.exists() and (self.root / path).exists() else inside

    def _check(self, number: int, where: str, image: Path, mask: Path, prompt: str) -> BadRow | None:
        if not prompt:
            return BadRow(where, "empty prompt", f"empty prompt (image {self.rel(image)})")
        for path, what in ((image, "image"), (mask, "mask")):
            size = self.image_size(path, what)
            if isinstance(size, BadRow):
                return BadRow(where, size.kind, str(size))
        image_size, mask_size = self.image_size(image), self.image_size(mask)
        if image_size != mask_size:
            return BadRow(where, "image / mask size mismatch",
                          f"{self.rel(mask)}: mask is {mask_size[0]}x{mask_size[1]} but its image {self.rel(image)} is "
                          f"{image_size[0]}x{image_size[1]} (WxH)")
        if self.check_values:
            problem = self._mask_problem(mask)
            if problem is not None:
                return BadRow(where, problem[0], problem[1])
        return None

    def _mask_problem(self, mask: Path) -> tuple[str, str] | None:
        """(kind, detail) when the mask cannot be read or is not binary; decoded once per mask file."""
        cache = self._mask_checks
        if mask not in cache:
            try:
                to_binary_mask(read_label(mask), source=self.rel(mask))
                cache[mask] = None
            except MaskError as exc:
                cache[mask] = ("mask is not binary", str(exc))
            except ValueError as exc:  # ImageReadError: a truncated or corrupt file (it names the file)
                cache[mask] = ("unreadable mask file", str(exc))
        return cache[mask]

    def load(self, record: FolderRecord) -> Sample:
        image = load_rgb(record.image)
        mask = to_binary_mask(read_label(record.mask), source=record.mask)
        check_size(tuple(image.shape[-2:]), mask, image=record.image, mask_file=record.mask)
        return {"image": image, "mask": torch.from_numpy(mask), "prompt": record.prompt, "name": record.name,
                "source": str(record.image), "mask_source": str(record.mask), "dataset": self.name,
                "row": record.line}


@dataclass(frozen=True)
class SemanticRecord:
    name: str  # the image stem
    image: Path
    label: Path


def read_classes(path: Path) -> tuple[tuple[str, ...], list[int], int]:
    """(class names in index order, their original indices, ignore_index) from classes.yaml."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: cannot read it ({exc})") from exc
    ignore = IGNORE_INDEX
    if isinstance(data, dict):
        data = dict(data)
        if "ignore_index" in data:
            ignore = data.pop("ignore_index")
        if "classes" in data:
            extra = sorted(map(str, set(data) - {"classes"}))
            if extra:
                raise DatasetError(f"{path}: unknown key(s) {', '.join(extra)}; expected classes and ignore_index")
            data = data["classes"]
    example = "e.g. 'classes: [background, cat, dog]' or '{0: background, 1: cat}', optional 'ignore_index: 255'"
    if isinstance(data, list):
        mapping = dict(enumerate(data))
    elif isinstance(data, dict):
        try:
            mapping = {int(k): v for k, v in data.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: class indices must be integers, got {list(data)}; {example}") from None
    else:
        raise DatasetError(f"{path}: expected a list of class names or a mapping index -> name; {example}")
    if not mapping:
        raise DatasetError(f"{path}: names no class; {example}")
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise DatasetError(f"{path}: ignore_index must be an integer, not {ignore!r}")
    names = [str(mapping[i]).strip() if mapping[i] is not None else "" for i in sorted(mapping)]
    if any(not n for n in names):
        raise DatasetError(f"{path}: an empty class name")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names repeat: {names}")
    if min(mapping) < 0 or ignore in mapping:
        raise DatasetError(f"{path}: class indices must be non-negative and differ from ignore_index {ignore}")
    if len(mapping) > 255:
        raise DatasetError(f"{path}: {len(mapping)} classes; at most 255 (255 is the ignore index)")
    return tuple(names), sorted(mapping), ignore


def _describe(indices: list[int]) -> str:
    contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
    return f"{indices[0]}..{indices[-1]}" if contiguous and len(indices) > 2 else ", ".join(map(str, indices))


class FolderSemantic(_FolderBase):
    """`folder-semantic`: images, index-coded labels and classes.yaml (see the module docstring).

    Options: `split`, `skip_bad`, `split_seed`, `val_fraction`, `test_fraction` (the seeded split, without a
    splits.csv), `check_values` (decode labels while indexing to find unknown classes), `classes_file`
    (default classes.yaml). `class_names` lists the classes in index order."""

    name = "folder-semantic"

    def __init__(self, root: str | Path | None, split: str = "train", *, skip_bad: bool = False, split_seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, check_values: bool = True,
                 classes_file: str = "classes.yaml", transform=None):
        super().__init__(root, split, skip_bad=skip_bad, split_seed=split_seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, check_values=check_values, transform=transform)
        classes_path = self.root / classes_file
        if not classes_path.is_file():
            raise DatasetError(f"{classes_path}: missing. Expected the folder layout: images/, labels/ (index PNGs "
                               f"named like the images) and {classes_file} (the class names)")
        self.class_names, self.class_indices, self.ignore_index = read_classes(classes_path)
        self.classes_file = classes_file
        top = max(max(self.class_indices), self.ignore_index)
        lut = np.full(max(top + 1, 256), -1, np.int32)  # original value -> training index (-1: unknown)
        lut[self.class_indices] = np.arange(len(self.class_indices))
        lut[self.ignore_index] = IGNORE_INDEX
        self._lut = lut
        images_dir, labels_dir = self.root / "images", self.root / "labels"
        if not images_dir.is_dir():
            raise DatasetError(f"{images_dir}: missing (folder-semantic layout: images/, labels/, {classes_file})")
        by_stem: dict[str, list[Path]] = {}
        for path in sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            by_stem.setdefault(path.stem, []).append(path)
        if not by_stem:
            raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        splits, source = self._read_splits(set(by_stem))
        for stem in sorted(set(by_stem) | set(splits)):
            wanted = splits.get(stem)
            if wanted is None or (split != "all" and wanted != split):
                continue
            problem = self._check(stem, by_stem.get(stem, []), labels_dir)
            if isinstance(problem, BadRow):
                self.bad(problem)
            else:
                self.records.append(SemanticRecord(stem, by_stem[stem][0], problem))
        self.finish(source)

    def _read_splits(self, stems: set[str]) -> tuple[dict[str, str | None], str]:
        """{image stem: split} from splits.csv / split.csv (bad split names become bad rows), else seeded."""
        for file in ("splits.csv", "split.csv"):
            path = self.root / file
            if path.is_file():
                break
        else:
            self.seeded_split_note(len(stems))
            return (seeded_split_by_image(stems, self.split_seed, self.val_fraction, self.test_fraction),
                    "images/ and labels/")
        self.split_source = file
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "image" not in columns or "split" not in columns:
                raise DatasetError(f"{path}: expected columns image,split; found {columns or 'no header'}")
            rows = [(n, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None})
                    for n, row in enumerate(reader, 2)]
        splits: dict[str, str | None] = {}
        for number, row in rows:
            if not row.get("image"):
                continue
            stem = Path(row["image"]).stem if Path(row["image"]).suffix.lower() in IMAGE_SUFFIXES else row["image"]
            value = SPLIT_ALIASES.get(row.get("split", "").lower())
            if value is None:
                self.bad(BadRow(f"{file} line {number}", "unknown split",
                                f"unknown split {row.get('split')!r}; use train, val or test"))
            elif splits.get(stem, value) != value:
                self.bad(BadRow(f"{file} line {number}", "image in two splits", f"{stem}: {splits[stem]} and {value}"))
            else:
                splits[stem] = value
        unlisted = stems - set(splits)
        if unlisted:
            log.info("%s: %d image(s) not in %s are in no split (only in 'all'), e.g. %s", self.root, len(unlisted),
                     file, sorted(unlisted)[0])
            if self.split == "all":
                splits.update({stem: "all" for stem in unlisted})
        return splits, f"{file}, images/ and labels/"

    def _check(self, stem: str, images: list[Path], labels_dir: Path) -> Path | BadRow:
        """The label file of a good image, or the bad row saying what is wrong."""
        if not images:
            return BadRow(f"images/{stem}.*", "image file missing",
                          f"image file missing (listed in {self.split_source})")
        if len(images) > 1:
            return BadRow(self.rel(images[0]), "two images share a stem",
                          f"two images share the stem {stem!r}: {', '.join(self.rel(p) for p in images)}")
        image = images[0]
        label = labels_dir / f"{stem}.png"
        if not label.is_file():
            others = sorted(labels_dir.glob(f"{stem}.*")) if labels_dir.is_dir() else []
            label = others[0] if others else label
        for path, what in ((image, "image"), (label, "label")):
            size = self.image_size(path, what)
            if isinstance(size, BadRow):
                return (BadRow(size.where, size.kind, f"{size.kind} (for image {self.rel(image)})")
                        if what == "label" and not size.detail else size)
        if self.image_size(image) != self.image_size(label):
            (iw, ih), (lw, lh) = self.image_size(image), self.image_size(label)
            return BadRow(self.rel(label), "image / label size mismatch",
                          f"label is {lw}x{lh} but its image {self.rel(image)} is {iw}x{ih} (WxH)")
        if self.check_values:
            try:
                self.decode(label)
            except MaskError as exc:
                kind = "unknown class" if "unknown class" in str(exc) else "not an index label"
                return BadRow(self.rel(label), kind, str(exc).split(": ", 1)[-1])
            except ValueError as exc:  # ImageReadError: truncated or corrupt
                return BadRow(self.rel(label), "unreadable label file", f"unreadable label file ({exc})")
        return label

    def decode(self, path: Path) -> np.ndarray:
        """Label file -> training indices (0..K-1, 255 ignore); unknown values are a MaskError naming the file."""
        raw = read_label(path)
        if raw.ndim == 3:
            if raw.shape[-1] in (2, 4):
                raw = raw[..., :-1]
            if not (raw == raw[..., :1]).all():
                raise MaskError(f"{self.rel(path)}: a colour image; expected an index-coded label PNG (one channel "
                                "holding class indices)")
            raw = raw[..., 0]
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        values = label_values(raw)
        unknown = [v for v in values if v < 0 or v >= len(self._lut) or self._lut[v] < 0]
        if unknown:
            shown = ", ".join(map(str, unknown[:8])) + (", ..." if len(unknown) > 8 else "")
            raise MaskError(f"{self.rel(path)}: unknown class {shown}; {self.classes_file} names "
                            f"{_describe(self.class_indices)} (ignore_index {self.ignore_index})")
        return self._lut[raw].astype(np.uint8)

    def load(self, record: SemanticRecord) -> Sample:
        image = load_rgb(record.image)
        mask = self.decode(record.label)
        check_size(tuple(image.shape[-2:]), mask, image=record.image, mask_file=record.label)
        return {"image": image, "mask": torch.from_numpy(mask), "prompt": ", ".join(self.class_names),
                "name": record.name, "source": str(record.image), "mask_source": str(record.label),
                "dataset": self.name}
