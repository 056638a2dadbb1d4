"""Where results came from: model weights, code version, package versions."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

UNTRAINED_BACKBONE = "untrained backbone"


@dataclass
class Provenance:
    """Where a model's weights came from; every figure and output carries it."""

    model: str
    backbone: str
    backbone_trained: bool
    backbone_source: str
    decoder: str = "untrained (random init)"
    extra: dict[str, Any] = field(default_factory=dict)
    backbone_note: str = ""  # why an untrained backbone is random, e.g. "random weights: rehearsal"

    @property
    def untrained(self) -> bool:
        """True when the backbone or a decoder has random weights: outputs show no learned skill."""
        return not self.backbone_trained or "untrained" in self.decoder

    @classmethod
    def of_backbone(cls, model: str, backbone, decoder: str = "untrained (random init)") -> Provenance:
        """The provenance of something made on `backbone` (a `ClipBackbone`), its random-weights note included."""
        return cls(model, backbone.name, backbone.trained, backbone.source, decoder,
                   backbone_note=getattr(backbone, "untrained_note", ""))

    @classmethod
    def combined(cls, provenances: Mapping[str, Provenance], model: str | None = None) -> Provenance:
        """One provenance for a figure of several models (a new object: the models' own are left alone). Each
        model's decoder is named; the backbone once when they share it."""
        items = list(provenances.items())
        if not items:
            raise ValueError("combined() needs at least one provenance")

        def each(field: str) -> str:
            values = {getattr(p, field) for _, p in items}
            return values.pop() if len(values) == 1 else "; ".join(f"{k}: {getattr(p, field)}" for k, p in items)

        return cls(model or " vs ".join(k for k, _ in items), each("backbone"),
                   all(p.backbone_trained for _, p in items), each("backbone_source"),
                   "; ".join(f"{k}: {p.decoder}" for k, p in items),
                   backbone_note=each("backbone_note") if any(p.backbone_note for _, p in items) else "")

    def caption(self) -> str:
        note = self.backbone_note or UNTRAINED_BACKBONE
        backbone = self.backbone if self.backbone_trained else f"{self.backbone} ({note})"
        return f"{self.model} | backbone {backbone} | decoder {self.decoder}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The repository's commit (with '+dirty' for uncommitted changes), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        # generated outputs (figures/, papermill_runs/) do not make the code that writes them dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!figures", ":!papermill_runs"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = ("clipseg-lab", "torch", "torchvision", "transformers", "numpy",
                                               "papermill")) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
