"""Datasets by name, so configs, the CLI and notebooks can say `oxford_pet` instead of importing a class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipseg_lab.errors import UnknownNameError


@dataclass(frozen=True)
class DatasetEntry:
    build: Callable[..., Any]  # (root, split, **options) -> Dataset
    splits: dict[str, str]  # our Train / Val / Test -> the dataset's own split names
    kind: str  # "referring" (binary mask per prompt), "semantic" (class indices) or "instance" (+ instance_mask)


def _pet(root, split, **kw):
    from clipseg_lab.data.oxford_pet import OxfordPet

    return OxfordPet(root, split, **kw)


def _phrasecut(root, split, **kw):
    from clipseg_lab.data.phrasecut import PhraseCut

    return PhraseCut(root, split, **kw)


def _refcoco(dataset: str, split_by: str):
    def build(root, split, **kw):
        from clipseg_lab.data.refcoco import RefCOCO

        root = Path(root)
        return RefCOCO(root, dataset, split_by, split, **kw)

    return build


def _refcoco_hf(root, split, **kw):
    from clipseg_lab.data.refcoco import RefCOCOHF

    return RefCOCOHF(root, split, **kw)


def _tiles(coding: str):
    def build(root, split, **kw):
        from clipseg_lab.data.remote_sensing import RemoteSensingTiles

        sub = Path(root) / "img_dir" / split
        return RemoteSensingTiles(root, coding=kw.pop("coding", coding), split=split if sub.is_dir() else None, **kw)

    return build


def _cityscapes(root, split, **kw):
    from clipseg_lab.data.cityscapes import Cityscapes

    return Cityscapes(root, split, **kw)


def _pennfudan(root, split, **kw):
    from clipseg_lab.data.pennfudan import PennFudan

    return PennFudan(root, split, **kw)


def _folder(root, split, **kw):
    from clipseg_lab.data.folder import FolderReferring

    return FolderReferring(root, split, **kw)


def _folder_semantic(root, split, **kw):
    from clipseg_lab.data.folder import FolderSemantic

    return FolderSemantic(root, split, **kw)


def _shapes(root, split, **kw):
    from clipseg_lab.data.synthetic import SyntheticShapes

    seeds = {"train": 0, "val": 1, "test": 2}
    return SyntheticShapes(seed=seeds[split], **kw)


DATASETS: dict[str, DatasetEntry] = {
    "oxford_pet": DatasetEntry(_pet, {"Train": "train", "Val": "val", "Test": "test"}, "semantic"),
    "phrasecut": DatasetEntry(_phrasecut, {"Train": "train", "Val": "val", "Test": "test"}, "referring"),
    "refcoco": DatasetEntry(_refcoco("refcoco", "unc"), {"Train": "train", "Val": "val", "Test": "testA"}, "referring"),
    "refcoco+": DatasetEntry(_refcoco("refcoco+", "unc"), {"Train": "train", "Val": "val", "Test": "testA"},
                             "referring"),
    "refcocog": DatasetEntry(_refcoco("refcocog", "umd"), {"Train": "train", "Val": "val", "Test": "test"},
                             "referring"),
    "refcoco_hf": DatasetEntry(_refcoco_hf, {"Train": "train", "Val": "val", "Test": "test"}, "referring"),
    "potsdam": DatasetEntry(_tiles("isprs-index"), {"Train": "train", "Val": "val", "Test": "test"}, "semantic"),
    "vaihingen": DatasetEntry(_tiles("isprs-index"), {"Train": "train", "Val": "val", "Test": "test"}, "semantic"),
    "loveda": DatasetEntry(_tiles("loveda"), {"Train": "train", "Val": "val", "Test": "test"}, "semantic"),
    "cityscapes": DatasetEntry(_cityscapes, {"Train": "train", "Val": "val", "Test": "test"}, "instance"),
    "pennfudan": DatasetEntry(_pennfudan, {"Train": "train", "Val": "val", "Test": "test"}, "instance"),
    "folder": DatasetEntry(_folder, {"Train": "train", "Val": "val", "Test": "test"}, "referring"),
    "folder-semantic": DatasetEntry(_folder_semantic, {"Train": "train", "Val": "val", "Test": "test"}, "semantic"),
    "synthetic_shapes": DatasetEntry(_shapes, {"Train": "train", "Val": "val", "Test": "test"}, "referring"),
}


def open_dataset(name: str, root: str | Path | None, split: str, **options: Any):
    """A dataset by registry name; `split` is the dataset's own split name (train, val, testA, ...)."""
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        raise UnknownNameError(f"unknown dataset {name!r}{hint} Known: {', '.join(DATASETS)}")
    return DATASETS[name].build(root, split, **options)
