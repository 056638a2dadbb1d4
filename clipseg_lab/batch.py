"""Batch inference: many images, the same text prompts, one model built once; resumable.

What `clipseg-lab segment INPUT PROMPT... --out DIR` writes (this module does the work, the CLI parses):

    DIR/.clipseg-lab-segment.json   ownership marker: this folder is segment's (other folders are refused)
    DIR/summary.csv                 image, prompt, mean_probability, area_fraction (one row per image and prompt)
    DIR/<image stem>/00_a-cat.png   one mask per prompt (probability * 255, or 0/255 at --threshold)
                     overlay.png    image | one map per prompt | overlay, with the model's provenance
                     manifest.json  the figure's provenance record (viz.save_figure)
                     segment.json   written LAST: the commit marker (prompts, threshold, provenance, the input
                                    file's name / size / mtime, its files and per-prompt statistics)

An image whose segment.json matches this run (same prompts, threshold, model provenance and input file) and
whose listed files all exist is skipped on a rerun; any other image folder is redone, and mask files that its
old segment.json listed but this run does not write are removed (nothing else is ever deleted).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipseg_lab.errors import ImageReadError, OutputDirError
from clipseg_lab.files import json_safe, save_png, write_csv, write_json

log = logging.getLogger(__name__)

MANIFEST = ".clipseg-lab-segment.json"
SUMMARY = "summary.csv"
RECORD = "segment.json"
PENDING = ".segment-pending.json"  # files an interrupted write may have left, until segment.json commits
WRITTEN_BY = "clipseg-lab segment"
DEFAULT_AREA_THRESHOLD = 0.5  # area_fraction in summary.csv when no threshold is given
SUMMARY_COLUMNS = ["image", "prompt", "mean_probability", "area_fraction"]
_RESERVED = {MANIFEST.lower(), SUMMARY.lower()}
_DELETABLE = re.compile(r"^(\d{2,}_[a-z0-9-]+\.png|overlay\.png)$")  # what an old segment.json may make us delete


def prompt_slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def mask_name(index: int, prompt: str) -> str:
    """`00_a-cat.png`: the prompt's position (so equal slugs never collide) and a readable slug."""
    return f"{index:02d}_{prompt_slug(prompt)}.png"


def image_extensions() -> frozenset[str]:
    """File extensions Pillow can open here (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def collect_images(spec: str | os.PathLike) -> list[Path]:
    """The image files `spec` names: a file; a folder's image files (by Pillow-readable extension, sorted,
    not recursive, hidden files left out); or a glob pattern (`photos/*.jpg`, `**` recursive), sorted."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        extensions = image_extensions()
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)
        if not files:
            raise ImageReadError(f"{path}: a folder with no image files (none of its files has an extension "
                                 "Pillow reads, e.g. .png, .jpg, .tif)")
        return files
    if path.exists():
        return [path]
    if any(c in text for c in "*?["):
        files = sorted({Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True) if Path(m).is_file()})
        if not files:
            raise ImageReadError(f"{text}: no file matches this pattern (relative patterns start at {Path.cwd()})")
        return files
    raise ImageReadError(f"{path}: no such image file or folder. Check the path (relative paths start at "
                         f"{Path.cwd()}); a glob pattern needs quotes, e.g. \"photos/*.jpg\".")


def output_names(images: Sequence[Path]) -> dict[Path, str]:
    """Each image's folder name under --out: its stem; `<stem>-<ext>` when two inputs share a stem (compared
    case-insensitively, as on macOS / Windows), then `-2`, `-3`, ... if still taken. Stable for the same input."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for image in images:
        by_stem[image.stem.lower()].append(image)
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for image in images:
        base = image.stem
        if len(by_stem[base.lower()]) > 1 and image.suffix:
            base = f"{base}-{image.suffix.lstrip('.')}"
        name, n = base, 2
        while name.lower() in taken or name.lower() in _RESERVED:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.lower())
        names[image] = name
    return names


def _has_manifest(out: Path) -> bool:
    return (_read_json(out / MANIFEST) or {}).get("written_by") == WRITTEN_BY


def owned_by_segment(out: Path) -> bool:
    """`out` has segment's ownership marker, or is a folder an older `segment` wrote (before the marker
    existed: only <image>/ folders, each with a segment.json)."""
    if _has_manifest(out):
        return True
    entries = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    return bool(entries) and all(p.is_dir() and "prompts" in (_read_json(p / RECORD) or {}) for p in entries)


def check_out_dir(out: str | os.PathLike, images: Sequence[Path], *, overwrite: bool = False) -> Path:
    """Refuse an --out that holds (or is) an input image, that is a file, or that is a non-empty folder not
    written by `clipseg-lab segment` (unless `overwrite`: then only segment's own files are replaced)."""
    out = Path(out).expanduser()
    resolved = out.resolve()
    for image in images:
        where = image.resolve()
        if where == resolved or resolved in where.parents:
            raise OutputDirError(f"--out {out} holds the input image {image}; outputs are never written among the "
                                 "inputs. Choose an output folder outside the input folder, e.g. --out masks/")
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not overwrite and not owned_by_segment(out) and any(out.iterdir()):
        raise OutputDirError(f"--out {out}: a non-empty folder that `clipseg-lab segment` did not write (it has no "
                             f"{MANIFEST}). Choose a new or empty folder, or pass --overwrite to write into it "
                             "(only segment's own output files are replaced; nothing else is deleted).")
    return out


def model_identity(model) -> dict[str, Any]:
    """What else decides the masks beside the provenance: preprocessing, resolution, recipe, the checkpoint
    file's size and time, and the package version (a rerun after any change redoes the images)."""
    import clipseg_lab

    identity: dict[str, Any] = {"input_size": getattr(model, "input_size", None), "version": clipseg_lab.__version__,
                                "visual_prompt_recipe": getattr(model, "visual_prompt_recipe", None)}
    normalization = getattr(model, "normalization", None)
    if normalization is not None:
        identity["normalization"] = [list(normalization.mean), list(normalization.std)]
    weights = []
    for source in (getattr(model, "checkpoint", None), getattr(getattr(model, "backbone", None), "source", None)):
        path = Path(str(source or ""))
        if source and (path.is_file() or path.is_dir()):
            files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
            weights += [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    identity["weights"] = weights
    return identity


def input_identity(image: Path) -> dict[str, Any]:
    """What a rerun compares to tell whether an input changed: its name, size and modification time."""
    st = image.stat()
    return {"name": image.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from segment.json, so that records compare equal to what a run wants."""
    return json.loads(json.dumps(json_safe(value), default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _listed_files(folder: Path) -> set[str]:
    """Mask and overlay files that segment.json / the pending list of an earlier run name (plain names only)."""
    names: set[str] = set()
    for record in (_read_json(folder / RECORD), _read_json(folder / PENDING)):
        for key in ("files", "masks"):
            listed = (record or {}).get(key)
            if isinstance(listed, list):
                names.update(n for n in listed if isinstance(n, str) and _DELETABLE.match(n))
    return names


def _is_complete(record: dict[str, Any] | None, folder: Path, wanted: dict[str, Any]) -> bool:
    if record is None or any(record.get(key) != value for key, value in wanted.items()):
        return False
    files, stats = record.get("files"), record.get("stats")
    return (isinstance(files, list) and all(isinstance(f, str) and (folder / Path(f).name).is_file() for f in files)
            and isinstance(stats, list) and len(stats) == len(wanted["prompts"]))


@dataclass
class BatchResult:
    out_dir: Path
    segmented: list[Path] = field(default_factory=list)  # written by this run
    up_to_date: list[Path] = field(default_factory=list)  # complete from an earlier run, left as they were
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (image, why)
    summary: Path | None = None  # summary.csv, when any image succeeded
    folders: dict[Path, Path] = field(default_factory=dict)  # image -> its output folder

    @property
    def succeeded(self) -> int:
        return len(self.segmented) + len(self.up_to_date)

    def report(self) -> str:
        """`N images segmented, M failed` (N counts the up-to-date ones too), then where the outputs are."""
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"

        text = f"{count(self.succeeded, 'image')} segmented, {len(self.failed)} failed"
        if self.up_to_date:
            text += f" ({len(self.up_to_date)} already up to date from an earlier run, not redone)"
        return text + (f"; outputs in {self.out_dir}, summary in {self.summary}" if self.summary else "")


def segment_images(images: Sequence[str | os.PathLike], prompts: Sequence[str], model, out: str | os.PathLike, *,
                   threshold: float | None = None, overwrite: bool = False, progress: bool = True,
                   report: Callable[[str], None] | None = None) -> BatchResult:
    """Segment every image for every prompt with one `model` (see the module docstring for the layout).

    Unreadable images are reported through `report` (one line each; default: a logged warning), counted in
    the result and skipped. `threshold`: binary masks at this probability (else probability PNGs); summary.csv's
    area_fraction uses it, or `DEFAULT_AREA_THRESHOLD` (0.5) without one.
    """
    from tqdm.auto import tqdm

    from clipseg_lab.backbones.tokenizer import check_prompts
    from clipseg_lab.segmenter import Segmenter

    prompts = check_prompts(list(prompts))
    out_resolved = Path(out).expanduser().resolve()
    # a recursive glob run from the photos' folder would otherwise pick up an earlier run's own masks
    images = [p for p in (Path(i).expanduser() for i in images) if out_resolved not in p.resolve().parents]
    out = check_out_dir(out, images, overwrite=overwrite)
    report = report or log.warning
    provenance = _jsonable({**model.provenance.as_dict(), **model_identity(model)})
    area_threshold = DEFAULT_AREA_THRESHOLD if threshold is None else threshold
    names = output_names(images)
    seg = Segmenter(model)
    result = BatchResult(out_dir=out)
    rows: list[dict[str, Any]] = []

    def claim_out_dir() -> None:  # the ownership marker, before segment's first file in --out
        if not _has_manifest(out):
            write_json(out / MANIFEST, {"written_by": WRITTEN_BY, "format": 1,
                                        "note": "clipseg-lab segment output folder; reruns resume here"})

    for image in tqdm(images, desc="segment", unit="image", disable=not progress):
        folder = out / names[image]
        result.folders[image] = folder
        try:
            identity = input_identity(image)
        except OSError as exc:
            result.failed.append((image, f"{image}: cannot read it ({exc.strerror or exc})"))
            report(f"skipped {result.failed[-1][1]}")
            continue
        wanted = _jsonable({"prompts": prompts, "threshold": threshold, "area_threshold": area_threshold,
                            "provenance": provenance, "input": identity})
        record = _read_json(folder / RECORD)
        if _is_complete(record, folder, wanted):
            _drop_pending(folder, record)
            result.up_to_date.append(image)
            rows += [{"image": str(image), **s} for s in record["stats"]]
            continue
        why = _foreign_folder(folder, image)
        if why:
            result.failed.append((image, why))
            report(f"skipped {why}")
            continue
        try:
            seg.set_image(image)
            maps = (p for _, p in seg.predict_iter(prompts))  # one full-resolution map at a time (principle 8)
            claim_out_dir()
            stats = _write_image(folder, image, prompts, maps, seg.image, model.provenance, threshold,
                                 {"image": str(image), **wanted})
        except (ImageReadError, OSError, ValueError) as exc:  # this image's problem, not the batch's
            result.failed.append((image, str(exc) if isinstance(exc, ImageReadError) else f"{image}: {exc}"))
            report(f"skipped {result.failed[-1][1]}")
            continue
        result.segmented.append(image)
        rows += [{"image": str(image), **s} for s in stats]
    if result.succeeded:
        import pandas as pd

        claim_out_dir()
        result.summary = write_csv(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), out / SUMMARY)
    return result


def _foreign_folder(folder: Path, image: Path) -> str | None:
    """Why `folder` cannot take `image`'s outputs: a file, or a non-empty folder segment did not write (even
    with --overwrite: its files are someone else's)."""
    if folder.exists() and not folder.is_dir():
        return f"{folder}: exists and is not a folder, so {image}'s outputs cannot go there"
    if folder.is_dir() and any(folder.iterdir()) and not ((folder / RECORD).exists() or (folder / PENDING).exists()):
        return (f"{folder}: a non-empty folder that `clipseg-lab segment` did not write; {image}'s outputs would "
                "mix with its files. Move it away or choose another --out")
    return None


def _drop_pending(folder: Path, record: dict[str, Any]) -> None:
    """A run interrupted after committing segment.json may leave its pending list: finish its clean-up."""
    if (folder / PENDING).exists():
        keep = set(record.get("files") or [])
        for name in _listed_files(folder) - keep:
            (folder / name).unlink(missing_ok=True)
        (folder / PENDING).unlink(missing_ok=True)


def _write_image(folder: Path, image: Path, prompts: list[str], probs, pixels, provenance, threshold: float | None,
                 record: dict[str, Any]) -> list[dict[str, Any]]:
    """One image's outputs, crash-safe: segment.json (the commit marker) is written last; until then a pending
    list names every mask an earlier or this run may have left, so a rerun removes what this one does not write.

    `probs`: one `(H, W)` probability map per prompt, best an iterator that makes them one at a time: each mask
    is written as its map comes, and only a display-size copy is kept, for the overlay."""
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from clipseg_lab.viz import plot_prompts, save_figure
    from clipseg_lab.viz.overlay import fit_image

    masks = [mask_name(i, p) for i, p in enumerate(prompts)]
    files = masks + ["overlay.png", "manifest.json"]
    old = _listed_files(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / PENDING, {"files": sorted(old | set(files))})
    (folder / RECORD).unlink(missing_ok=True)  # no longer complete
    for name in sorted(old - set(files)):
        (folder / name).unlink(missing_ok=True)

    meta = {"provenance": provenance.caption(), "image": str(image)}
    area_threshold = record["area_threshold"]
    stats, shown = [], []
    for name, prompt, p in zip(masks, prompts, probs):
        # uint8 straight from the float32 map: the same values as rounding p * 255, without float64 copies
        values = (p > threshold).to(torch.uint8) * 255 if threshold is not None else (p * 255).round_().to(torch.uint8)
        save_png(Image.fromarray(values.numpy()), folder / name, {**meta, "prompt": prompt})
        stats.append({"prompt": prompt, "mean_probability": round(float(p.mean()), 6),
                      "area_fraction": round(float((p > area_threshold).float().mean()), 6)})
        shown.append(fit_image(p))
    fig = plot_prompts(pixels, torch.stack(shown), prompts, provenance, threshold=threshold)
    try:
        save_figure(fig, folder / "overlay.png", provenance=provenance, data=str(image))
    finally:
        plt.close(fig)
    write_json(folder / RECORD, {**record, "masks": masks, "files": files, "stats": stats})
    (folder / PENDING).unlink(missing_ok=True)
    return stats
