"""What a notebook reads when the real samples are absent (a user's clone has no `../shared/data`).

The real samples exist only on this project's own machines. Each notebook asks here for its data: the real
sample when `$CLIPSEG_LAB_SAMPLES` (or the notebook's `samples_dir`) holds it, else, in the smoke profile, data
that ships with the installed packages (SyntheticShapes), announced in one visible line that says why and how
to point at a copy. Other profiles never substitute: a missing dataset is one `DatasetError` naming the path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipseg_lab.data.base import DatasetError

log = logging.getLogger(__name__)

ENV_SAMPLES = "CLIPSEG_LAB_SAMPLES"
HOW_TO_POINT = (f"to use the real samples, point {ENV_SAMPLES} at a copy of this project's shared/data folder "
                "(or set the notebook's samples_dir)")


def samples_root(samples_dir: str | os.PathLike | None = None) -> Path:
    """`$CLIPSEG_LAB_SAMPLES` when set, else `samples_dir` (a notebook parameter), else the project's
    `../shared/data` beside the checkout."""
    from clipseg_lab.data.catalog import default_samples_dir

    env = os.environ.get(ENV_SAMPLES)
    if env:
        return Path(env).expanduser()
    return Path(samples_dir).expanduser() if samples_dir else default_samples_dir()


@dataclass
class DataChoice:
    """A dataset by registry name and options, and whether it is the real one that was asked for."""

    dataset: str
    root: str | None
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    real: bool = True
    note: str = ""  # the visible line when a substitute is used

    def open(self, split: str, **extra: Any):
        from clipseg_lab.data.registry import open_dataset

        return open_dataset(self.dataset, self.root, split, **{**self.options, **extra})


def _substitute(what: str, path: Path, profile: str, instead: str) -> str:
    if profile != "smoke":
        raise DatasetError(f"{path}: {what} not found. The {profile} profile never substitutes data: put the dataset "
                           f"there or edit params/{profile}.yaml")
    note = f"{what} not found at {path}: this section runs on {instead} instead; {HOW_TO_POINT}."
    print(f"note: {note}", flush=True)  # a notebook's reader must see it, in the executed copy too
    return note


# Semantic SyntheticShapes standing in for a 3-class dataset: background + circle / square / triangle
SEMANTIC_SHAPES = {"mode": "semantic", "num_scenes": 24, "size": 128, "radius": [0.16, 0.25], "max_shapes": 3,
                   "distractors": "distinct_colours"}


def oxford_pet(data_root: str | None, samples_dir: str | os.PathLike | None, profile: str = "smoke") -> DataChoice:
    """Oxford-IIIT Pet: `data_root` (the full release), else the samples' `oxford_pet`, else (smoke) semantic
    SyntheticShapes with a one-line note."""
    path = Path(data_root) if data_root else samples_root(samples_dir) / "oxford_pet"
    if ((path / "annotations").is_dir() or (path / "list.txt").is_file()
            or (path / "annotations" / "list.txt").is_file()):
        return DataChoice("oxford_pet", str(path), {}, f"Oxford-IIIT Pet ({path})")
    note = _substitute("the Oxford-IIIT Pet sample", path, profile,
                       "semantic SyntheticShapes (background / circle / square / triangle)")
    return DataChoice("synthetic_shapes", None, dict(SEMANTIC_SHAPES), "SyntheticShapes (semantic, synthetic)",
                      real=False, note=note)


def remote_sensing(datasets: dict[str, dict], root: str | os.PathLike, work_dir: str | os.PathLike,
                   profile: str = "smoke", config_dir: str | os.PathLike = "../configs/zeroshot",
                   tiles: int = 2, size: int = 448) -> tuple[dict[str, dict], list[str]]:
    """The tile folders of `datasets` ({name: {config, dir}}) found under `root`, and the notes of those that
    were not. When none is found (smoke only): SyntheticShapes scenes written as one mmseg-layout folder under
    `work_dir`, with `configs/zeroshot/synthetic_shapes.yaml`."""
    root = Path(root)
    present, notes = {}, []
    for name, spec in datasets.items():
        folder = root / spec["dir"]
        if folder.is_dir():
            present[name] = {**spec, "dir": str(folder)}
        elif profile != "smoke":
            raise DatasetError(f"{folder}: the {name} tiles were not found. The {profile} profile never substitutes "
                               f"data: put them there or edit params/{profile}.yaml")
        else:
            notes.append(f"{name}: no tiles at {folder}")
    if present:
        for line in notes:
            print(f"note: {line}: skipped; {HOW_TO_POINT}.", flush=True)
        return present, notes
    note = _substitute("remote-sensing tiles (" + ", ".join(datasets) + ")", root, profile,
                       f"{tiles} SyntheticShapes scenes written as tiles")
    folder = write_synthetic_tiles(Path(work_dir) / "synthetic_tiles", tiles, size)
    return {"synthetic_shapes": {"config": str(Path(config_dir) / "synthetic_shapes.yaml"), "dir": str(folder)}}, [note]


def write_synthetic_tiles(out: Path, count: int, size: int, seed: int = 3) -> Path:
    """`count` semantic SyntheticShapes scenes in mmseg layout (`img_dir/val/*.png`, `ann_dir/val/*.png`; label
    0 background, 1..3 circle / square / triangle). A pure function of (count, size, seed): a rerun rewrites the
    same bytes."""
    import numpy as np
    from PIL import Image

    from clipseg_lab.data.synthetic import SyntheticShapes
    from clipseg_lab.files import atomic_path

    shapes = SyntheticShapes(count, size=size, seed=seed, mode="semantic", max_shapes=4, radius=(0.08, 0.16))
    for i in range(count):
        sample = shapes[i]
        for sub, array in (("img_dir", sample["image"].permute(1, 2, 0).numpy()), ("ann_dir", sample["mask"].numpy())):
            path = out / sub / "val" / f"{sample['name']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return out
