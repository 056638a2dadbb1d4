"""`clipseg-lab rehearse` (`make rehearsal`): every path a GPU user of the full profile takes, on this machine.

It builds a throw-away world -- random weights of the real architectures written in the real on-disk layouts
(`clipseg_lab.rehearsal.weights`) and small datasets in the real folder layouts (`clipseg_lab.rehearsal.datasets`)
-- then runs every notebook with `params/full.yaml` unchanged except for the overlay `params/rehearsal.yaml`
(offline, CPU, the world's dataset roots, capped work). The weights carry the rehearsal's marker, so every figure
says "random weights: rehearsal". The world is deleted afterwards unless `keep`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OVERLAY = "rehearsal"


@dataclass
class Rehearsal:
    world: Path
    weights: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # one per notebook, as the run manifest has them
    seconds: dict[str, float] = field(default_factory=dict)  # world building and the notebooks

    @property
    def ok(self) -> bool:
        return bool(self.records) and all(r["status"] == "ok" for r in self.records)

    @property
    def runs(self) -> Path:
        return self.world / "runs"

    @property
    def figures(self) -> Path:
        return self.world / "figures"

    @classmethod
    def load(cls, world: Path) -> Rehearsal:
        """A finished rehearsal's record (`world/rehearsal.json`), e.g. to re-run the checks on a kept world."""
        report = json.loads((Path(world) / "rehearsal.json").read_text())
        return cls(Path(world), report["weights"], report["datasets"], report["notebooks"], report["seconds"])

    def environment(self) -> dict[str, str]:
        return {k: str(v) for k, v in (self.weights.get("env") or {}).items()}

    def report(self) -> str:
        lines = [f"rehearsal in {self.world}: world built in {self.seconds.get('world', 0):.0f} s, notebooks in "
                 f"{self.seconds.get('notebooks', 0):.0f} s"]
        for r in self.records:
            memory = f", peak {r['peak_memory_mib']} MiB" if "peak_memory_mib" in r else ""
            lines.append(f"  {r['notebook']}: {r['status']} in {r.get('seconds', 0):.0f} s{memory}"
                         + (f" -- {r.get('error')}" if r["status"] != "ok" else ""))
        return "\n".join(lines)


def build_world(world: Path, samples: Path | None = None, *, scale: str = "real") -> Rehearsal:
    """Weights, datasets and a link to the real samples under `world` (a rerun reuses what is there)."""
    from clipseg_lab.data.fallback import samples_root
    from clipseg_lab.rehearsal.datasets import build_datasets
    from clipseg_lab.rehearsal.weights import build_weights

    world.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    samples = samples if samples is not None else samples_root()
    result = Rehearsal(world)
    result.weights = build_weights(world, scale=scale)
    mark_random(world)
    # two Potsdam tiles and one Vaihingen: each costs a SAM ViT-H image embedding (~1 min on 2 cores)
    built = build_datasets(world / "data", samples if samples.is_dir() else None, sizes={"potsdam": 2, "vaihingen": 1})
    result.datasets = {"folders": {k: str(v) for k, v in built.items()}, "notes": dict(built.notes)}
    link_samples(world / "samples", samples, built)
    result.seconds["world"] = round(time.perf_counter() - start, 1)
    return result


def link_samples(link: Path, samples: Path, built: dict[str, Path]) -> None:
    """`world/samples`: the real samples folder where there is one; else a folder in its layout whose entries link
    to the world's generated datasets (the full profile never substitutes, so its 01 / 08 / 10 need samples)."""
    if link.exists() or link.is_symlink():
        return
    if samples.is_dir():
        link.symlink_to(samples.resolve(), target_is_directory=True)
        return
    layout = {"oxford_pet": "oxford_pet", "potsdam": "remote_sensing/potsdam"}
    for name, place in layout.items():
        if name in built:
            (link / place).parent.mkdir(parents=True, exist_ok=True)
            (link / place).symlink_to(Path(built[name]).resolve(), target_is_directory=True)


def mark_random(world: Path) -> list[Path]:
    """The marker every loader reads (`backbones.weights.REHEARSAL_MARKER`): in each hub snapshot and beside the
    `$CLIPSEG_LAB_WEIGHTS` files, so whatever loads them says "random weights: rehearsal"."""
    from clipseg_lab.backbones.weights import REHEARSAL_MARKER
    from clipseg_lab.files import write_json

    folders = [world / "weights", *sorted((world / "hf_home" / "hub").glob("models--*/snapshots/*"))]
    for folder in folders:
        write_json(folder / REHEARSAL_MARKER, {"written_by": "clipseg-lab rehearse",
                                               "weights": "seeded random, real architecture: not a trained model"})
    return folders


def rehearse(world: str | os.PathLike | None = None, *, keep: bool = False, only: list[str] | None = None,
             device: str = "cpu", samples: Path | None = None, root: Path | None = None,
             scale: str = "real") -> Rehearsal:
    """Build the world, run the notebooks (full profile + the rehearsal overlay) into `world/runs` and
    `world/figures`, write `world/rehearsal.json`. The world is removed afterwards unless `keep` or given."""
    from clipseg_lab.notebooks import environment_variables, find_repo_root, run_notebooks

    root = root or find_repo_root()
    own = world is None
    world = Path(world) if world is not None else Path(tempfile.mkdtemp(prefix="clipseg-lab-rehearsal-"))
    try:
        result = build_world(world, samples, scale=scale)
        with environment_variables(**result.environment()):  # the kernels inherit it; so does this process
            start = time.perf_counter()
            result.records = run_notebooks("full", only=only, device=device, run_root=result.runs,
                                           figures_root=result.figures, root=root, overlay=OVERLAY,
                                           substitutions={"world": str(world)})
            result.seconds["notebooks"] = round(time.perf_counter() - start, 1)
        from clipseg_lab.files import write_json

        write_json(world / "rehearsal.json", {"seconds": result.seconds, "notebooks": result.records,
                                              "weights": result.weights, "datasets": result.datasets})
        return result
    finally:
        if own and not keep:
            shutil.rmtree(world, ignore_errors=True)


def summary_line(result: Rehearsal) -> str:
    peak = max((r.get("peak_memory_mib", 0) for r in result.records), default=0)
    return (f"summary: ok={result.ok} notebooks={len(result.records)} world_s={result.seconds.get('world', 0):.0f} "
            f"notebooks_s={result.seconds.get('notebooks', 0):.0f} peak_memory_mib={peak}")

