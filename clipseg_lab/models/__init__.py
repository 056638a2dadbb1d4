"""Decoders on a frozen CLIP, their presets, and checkpoints."""

from clipseg_lab.models.base import ImageFeatures, TextPromptedModel
from clipseg_lab.models.checkpoint import save_model
from clipseg_lab.models.clipseg import ClipSegConfig, ClipSegDecoder
from clipseg_lab.models.loading import DEFAULT_CHECKPOINT, load_default_model, load_model
from clipseg_lab.models.registry import PRESETS, build_model, describe_models, list_models

__all__ = ["PRESETS", "ClipSegConfig", "ClipSegDecoder", "ImageFeatures", "TextPromptedModel",
           "DEFAULT_CHECKPOINT", "build_model", "describe_models", "list_models", "load_default_model", "load_model",
           "save_model"]
