"""Frozen CLIP backbones: loading, weight resolution, format conversion and the tokenizer."""

from clipseg_lab.backbones.clip_backbone import ClipBackbone, ImageEncoding
from clipseg_lab.backbones.convert import hf_to_openai, openai_config, openai_to_hf
from clipseg_lab.backbones.loading import load_backbone, tiny_random_config
from clipseg_lab.backbones.names import KNOWN_BACKBONES, TINY_RANDOM
from clipseg_lab.backbones.weights import ENV_WEIGHTS, resolve_weights

__all__ = ["ENV_WEIGHTS", "KNOWN_BACKBONES", "TINY_RANDOM", "ClipBackbone", "ImageEncoding", "hf_to_openai",
           "load_backbone", "openai_config", "openai_to_hf", "resolve_weights", "tiny_random_config"]
