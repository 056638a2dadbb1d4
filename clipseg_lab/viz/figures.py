"""Saving figures with their provenance: in the caption, in the PNG's metadata, and in a manifest."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from clipseg_lab.files import atomic_path, compact_png, write_json
from clipseg_lab.provenance import Provenance, git_commit

MANIFEST = "manifest.json"


def provenance_caption(provenance: Provenance | None, profile: str | None = None, data: str | None = None) -> str:
    """One line for the bottom of a figure: model, backbone (flagged when untrained), data, profile, commit."""
    parts = [provenance.caption()] if provenance is not None else []
    if data:
        parts.append(f"data: {data}")
    if profile:
        parts.append(f"profile {profile}")
    parts.append(f"commit {git_commit()}")
    return " | ".join(parts)


def save_figure(fig: plt.Figure, path: str | os.PathLike, *, provenance: Provenance | None = None,
                profile: str | None = None, data: str | None = None, notes: dict[str, Any] | None = None,
                caption: bool = True) -> Path:
    """Write `fig` as PNG with its provenance, and record it in `manifest.json` beside it.

    The caption goes under the axes; an untrained backbone or decoder is said in red.
    """
    path = Path(path)
    text = provenance_caption(provenance, profile, data)
    if caption:
        untrained = provenance is not None and provenance.untrained
        # hung below the figure (bbox_inches="tight" grows the PNG to hold it), so it never covers an axis
        fig.text(0.5, -0.005, text, ha="center", va="top", fontsize=7, wrap=True,
                 color="firebrick" if untrained else "dimgray")
    record = {
        "figure": path.name,
        "caption": text,
        "provenance": provenance.as_dict() if provenance is not None else None,
        "untrained": bool(provenance and provenance.untrained),
        "profile": profile,
        "data": data,
        "commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(notes or {}),
    }
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight",
                    metadata={"Title": path.stem, "Description": text, "Software": "clipseg-lab",
                              "Comment": json.dumps(record, default=str)})
        if profile == "smoke":  # committed with the repository: 256 colours, full size, about a third of the bytes
            tmp.write_bytes(compact_png(tmp.read_bytes()))
    _update_manifest(path.parent / MANIFEST, record)
    return path


def _update_manifest(manifest: Path, record: dict[str, Any]) -> None:
    entries: dict[str, Any] = {}
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            entries = {}
    entries[record["figure"]] = record
    write_json(manifest, dict(sorted(entries.items())))
