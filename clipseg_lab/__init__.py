"""clipseg-lab: text-prompted image segmentation on a frozen CLIP."""

from clipseg_lab.backbones import ClipBackbone, load_backbone
from clipseg_lab.errors import (ClipsegLabError, ImageReadError, PromptError, UnknownNameError, WeightsFormatError,
                                WeightsNotFoundError)
from clipseg_lab.models import TextPromptedModel, build_model, list_models, load_model, save_model
from clipseg_lab.segmenter import Segmenter

__version__ = "0.1.0"

__all__ = ["ClipBackbone", "ClipsegLabError", "ImageReadError", "PromptError", "Segmenter", "TextPromptedModel",
           "UnknownNameError", "WeightsFormatError", "WeightsNotFoundError", "__version__", "build_model",
           "list_models", "load_backbone", "load_model", "save_model"]
