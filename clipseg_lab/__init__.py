"""clipseg-lab: text-prompted image segmentation on a frozen CLIP."""

from clipseg_lab.backbones import ClipBackbone, load_backbone
from clipseg_lab.errors import (ClipsegLabError, ImageReadError, PromptError, UnknownNameError, WeightsFormatError,
                                WeightsNotFoundError)

__version__ = "0.1.0"

__all__ = ["ClipBackbone", "ClipsegLabError", "ImageReadError", "PromptError", "UnknownNameError",
           "WeightsFormatError", "WeightsNotFoundError", "__version__", "load_backbone"]
