"""clipseg-lab: text-prompted image segmentation on a frozen CLIP.

The public names are imported on first use, so `clipseg-lab --help` and light submodules start without
loading torch and transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_backbone": "clipseg_lab.backbones",
    "ClipBackbone": "clipseg_lab.backbones",
    "build_model": "clipseg_lab.models",
    "list_models": "clipseg_lab.models",
    "load_model": "clipseg_lab.models",
    "save_model": "clipseg_lab.models",
    "TextPromptedModel": "clipseg_lab.models",
    "Segmenter": "clipseg_lab.segmenter",
    "ClipsegLabError": "clipseg_lab.errors",
    "ImageReadError": "clipseg_lab.errors",
    "PromptError": "clipseg_lab.errors",
    "UnknownNameError": "clipseg_lab.errors",
    "WeightsFormatError": "clipseg_lab.errors",
    "WeightsNotFoundError": "clipseg_lab.errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def _submodules() -> list[str]:
    """Every subpackage and module of clipseg_lab: `cl.zeroshot`, `cl.engine`, `cl.stats`, ... work without an
    import of their own."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"clipseg_lab.{name}") is not None:
        value = importlib.import_module(f"clipseg_lab.{name}")
    else:
        raise AttributeError(f"module 'clipseg_lab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(_submodules()))


if TYPE_CHECKING:  # for editors and type checkers
    from clipseg_lab.backbones import ClipBackbone, load_backbone
    from clipseg_lab.errors import (
        ClipsegLabError,
        ImageReadError,
        PromptError,
        UnknownNameError,
        WeightsFormatError,
        WeightsNotFoundError,
    )
    from clipseg_lab.models import TextPromptedModel, build_model, list_models, load_model, save_model
    from clipseg_lab.segmenter import Segmenter
