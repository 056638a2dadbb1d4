"""Trained models shared between notebooks: `papermill_runs/<profile>/checkpoints/` holds one safetensors file
per published model and a `manifest.json` saying what each is (model, backbone, data, best epoch, metrics,
which notebook trained it, git commit).

Training notebooks `publish` their best checkpoints there; later notebooks (galleries, statistics of predicted
masks) call `load_or_train`, which loads a published model or, when it is missing, trains a quick one with the
config they give and publishes it, so every notebook also runs on its own.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from clipseg_lab.files import atomic_path, write_json
from clipseg_lab.provenance import git_commit

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def publish(result, name: str, folder: str | Path, *, notebook: str | None = None) -> Path:
    """Copy a `TrainResult`'s best checkpoint to `<folder>/<name>.safetensors` and record it in the manifest."""
    folder = Path(folder)
    source = result.best_checkpoint
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the run has no best checkpoint to publish (did any epoch finish?)")
    target = folder / f"{name}.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    provenance = result.provenance.as_dict() if result.provenance is not None else {}
    config = json.loads((result.out_dir / "training_config.json").read_text())["config"]
    entry = {
        "file": target.name, "model": config["model"]["name"], "backbone": provenance.get("backbone"),
        "backbone_trained": provenance.get("backbone_trained"), "dataset": config["data"]["dataset"],
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "monitor": result.monitor,
        "metrics": {k: v for k, v in result.best_metrics.items() if isinstance(v, (int, float))},
        "trained_in": str(result.out_dir), "notebook": notebook, "commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest = read_manifest(folder)
    manifest[name] = entry
    write_json(folder / MANIFEST, manifest)
    return target


def find_checkpoint(name: str, folder: str | Path) -> Path | None:
    """The published checkpoint `name`, or None when the manifest has no such entry or its file is gone."""
    entry = read_manifest(folder).get(name)
    if entry is None:
        return None
    path = Path(folder) / entry["file"]
    return path if path.is_file() else None


def load_or_train(name: str, folder: str | Path, config: dict[str, Any] | None = None, *, device: str | None = None,
                  notebook: str | None = None):
    """Load the published model `name`; when it is missing, train it from `config` (a TrainConfig dict) into
    `<folder>/runs/<name>`, publish it, and load that."""
    from clipseg_lab.engine.trainer import train
    from clipseg_lab.models.loading import load_model

    path = find_checkpoint(name, folder)
    if path is None:
        if config is None:
            raise FileNotFoundError(f"no published checkpoint {name!r} in {folder} (manifest: "
                                    f"{sorted(read_manifest(folder))}); run the notebook that trains it, or pass a "
                                    "training config")
        log.info("no published checkpoint %r in %s: training a quick one", name, folder)
        # the run belongs beside its checkpoint, whatever out_dir the recipe names (a relative one would land
        # in the caller's working directory, e.g. notebooks/)
        # (that folder is this function's: an earlier run of another recipe there is replaced)
        config = {**config, "out_dir": str(Path(folder) / "runs" / name), "overwrite": True}
        path = publish(train(config), name, folder, notebook=notebook)
    return load_model(path, device=device)
