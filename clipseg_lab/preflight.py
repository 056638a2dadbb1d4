"""Preflight: every input the selected notebooks will read, checked before the first one runs.

The smoke profile substitutes what it lacks (`clipseg_lab.data.fallback`); the full profile never pretends. So
before `clipseg-lab notebooks --profile full` starts any training, this walks each notebook's parameters -- its
backbone, checkpoint and SAM, its dataset folders -- and lists every missing one as one line naming the file and
the fix. Nothing is downloaded here that a notebook would not download (weights are resolved the notebooks' way).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clipseg_lab.backbones.names import TINY_RANDOM
from clipseg_lab.errors import ClipsegLabError


class PreflightError(ClipsegLabError):
    """Inputs of the full profile that are missing; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} input(s) of the selected notebooks are missing, nothing was run:\n"
                         + "\n".join(f"error: {p}" for p in problems))


def _folder(path: Path, what: str, fix: str) -> list[str]:
    if path.is_dir() and any(path.iterdir()):
        return []
    state = "is empty" if path.is_dir() else "does not exist"
    return [f"{path}: {what} {state}. {fix}"]


def _file(path: Path, what: str, fix: str) -> list[str]:
    return [] if path.is_file() else [f"{path}: {what} missing. {fix}"]


def phrasecut(root: Path, **_: Any) -> list[str]:
    fix = "Download VGPhraseCut_v0 (refer_*.json) and its Visual Genome images/, or edit data_root in params/full.yaml"
    return (_file(root / "refer_train.json", "PhraseCut's refer_train.json", fix)
            + _file(root / "refer_val.json", "PhraseCut's refer_val.json", fix)
            + _folder(root / "images", "PhraseCut's images/ folder (<image_id>.jpg)", fix))


def oxford_pet(root: Path, **_: Any) -> list[str]:
    fix = "Download the Oxford-IIIT Pet release (images.tar.gz, annotations.tar.gz), or edit data_root"
    return (_folder(root / "images", "Oxford-IIIT Pet's images/", fix)
            + _folder(root / "annotations" / "trimaps", "Oxford-IIIT Pet's annotations/trimaps/", fix))


def refcoco(root: Path, image_dir: Path | None = None, **_: Any) -> list[str]:
    fix = "Get the refer toolkit's refcoco/ (refs(unc).p, instances.json) and COCO train2014 images, or edit data"
    problems = _folder(root, "the RefCOCO annotations folder", fix)
    if image_dir is None:
        problems.append(f"{root}: RefCOCO without data.options.image_dir: the full profile needs the COCO train2014 "
                        "images (placeholders are for smoke runs only)")
    else:
        problems += _folder(image_dir, "the COCO train2014 images folder", fix)
    return problems


def tiles(root: Path, **_: Any) -> list[str]:
    return _folder(root, "the tile folder (mmseg img_dir/ann_dir, or <tile>/ folders)",
                   "Put the tiles there or edit data_root / datasets in params/full.yaml")


DATASETS: dict[str, Callable[..., list[str]]] = {"phrasecut": phrasecut, "oxford_pet": oxford_pet,
                                                 "refcoco": refcoco, "potsdam": tiles, "vaihingen": tiles,
                                                 "loveda": tiles}


def weights(kind: str, name: str | None, resolve: Callable[[str], Any]) -> list[str]:
    if not name or name == TINY_RANDOM:
        return []
    try:
        resolve(name)
    except ClipsegLabError as exc:
        first = str(exc).splitlines()[0].replace(" Looked in:", "")
        return [f"{kind} {name!r}: {first} {_fix_of(exc)}"]
    return []


def _fix_of(exc: Exception) -> str:
    text = str(exc)
    return text[text.find("To fix:"):].splitlines()[0] if "To fix:" in text else "see the README's weights table"


def notebook_inputs(name: str, values: dict[str, Any], folder: Path) -> list[str]:
    """The problems with one notebook's inputs (`values`: its injected parameters; paths relative to `folder`)."""
    from clipseg_lab.backbones.weights import resolve_weights
    from clipseg_lab.zeroshot.sam import resolve_sam_checkpoint

    def at(path) -> Path:
        path = Path(os.path.expanduser(str(path)))
        return Path(os.path.normpath(path if path.is_absolute() else folder / path))

    problems = weights("backbone", values.get("backbone"), lambda n: resolve_weights(n))
    checkpoint = values.get("checkpoint")
    if checkpoint and not at(checkpoint).exists():
        problems += weights("checkpoint", checkpoint, lambda n: resolve_weights(n, what="checkpoint"))
    problems += weights("SAM", values.get("sam"), lambda n: resolve_sam_checkpoint(n))
    if values.get("dataset") in DATASETS and values.get("data_root"):
        problems += DATASETS[values["dataset"]](at(values["data_root"]))
    if name.startswith("05") and values.get("data_root"):
        problems += oxford_pet(at(values["data_root"]))
    if name.startswith("08") and values.get("pets_root"):
        problems += oxford_pet(at(values["pets_root"]))
    data = values.get("data")
    if isinstance(data, dict) and data.get("dataset") in DATASETS and data.get("root"):
        image_dir = (data.get("options") or {}).get("image_dir")
        problems += DATASETS[data["dataset"]](at(data["root"]), image_dir=at(image_dir) if image_dir else None)
    if isinstance(values.get("datasets"), dict) and values.get("data_root"):
        for spec in values["datasets"].values():
            problems += tiles(at(values["data_root"]) / spec["dir"])
    return [f"{name}: {p}" for p in problems]


def check(notebooks: Iterable[tuple[str, dict[str, Any]]], folder: Path) -> None:
    """Raise `PreflightError` listing every missing input of `notebooks` ((name, parameters) pairs)."""
    problems: list[str] = []
    for name, values in notebooks:
        for problem in notebook_inputs(name, values, folder):
            if problem.split(": ", 1)[1] not in {p.split(": ", 1)[1] for p in problems}:  # once, by the first user
                problems.append(problem)
    if problems:
        raise PreflightError(problems)
