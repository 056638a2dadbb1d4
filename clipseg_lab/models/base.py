"""A frozen CLIP backbone plus a trainable, text-conditioned decoder: the shape every prompt model shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.backbones.clip_backbone import ClipBackbone, Normalization
from clipseg_lab.backbones.tokenizer import check_prompts
from clipseg_lab.provenance import Provenance

TEXT_CACHE_SIZE = 4096


@dataclass
class ImageFeatures:
    """What the decoder needs from one batch of images, computed once and reused for any prompts."""

    prepared: list[torch.Tensor]  # decoder-specific, e.g. CLIPSeg's reduced activations
    grid: tuple[int, int]
    input_size: tuple[int, int]  # the network resolution the logits come out at

    def __len__(self) -> int:
        return self.prepared[0].shape[0]


class TextPromptedModel(nn.Module):
    """`backbone` (frozen CLIP) + `decoder`. Only the decoder is trained and saved in checkpoints."""

    def __init__(self, backbone: ClipBackbone, decoder: nn.Module, *, name: str, config: Any, input_size: int):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.name = name
        self.config = config  # the decoder's dataclass config
        self.input_size = input_size
        self.provenance = Provenance.of_backbone(name, backbone)
        # The pixels' normalisation and the visual-prompt recipe belong to the weights: a loader sets them from
        # the checkpoint (ImageNet statistics and the original recipe for the released CLIPSeg decoders).
        self.normalization: Normalization = backbone.normalization
        self.visual_prompt_recipe = "clipseg-lab"
        self.checkpoint: str | None = None  # the file or folder the weights were read from (load_model sets it)
        self._text_cache: dict[str, torch.Tensor] = {}

    def preprocess(self, images) -> torch.Tensor:
        """Images to the decoder's input pixels: resized to `input_size`, normalised as the weights expect."""
        return self.backbone.preprocess(images, size=self.input_size, normalization=self.normalization)

    def backbone_activations(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """The frozen backbone run to the deepest layer the decoder reads: its activations and the patch grid."""
        encoding = self.backbone.encode_image(pixels, layers=self.decoder.extract_layers, pooled=False,
                                              project=self.projects_tokens)
        return encoding.activations, encoding.grid

    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        """The backbone's activations, then the image-only decoder part."""
        return self.features_from_activations(*self.backbone_activations(pixels))

    @property
    def projects_tokens(self) -> bool:
        """Whether the decoder reads tokens in the joint space (final norm + image projection applied)."""
        return getattr(self.decoder, "project_tokens", False)

    def features_from_activations(self, activations: list[torch.Tensor], grid: tuple[int, int]) -> ImageFeatures:
        """The decoder's image-only part on backbone activations (e.g. read from an `ActivationCache`)."""
        dtype = next(self.decoder.parameters()).dtype
        # backbone outputs are inference tensors: copy them before autograd may need them (training)
        activations = [a.to(dtype).clone() if torch.is_grad_enabled() and a.is_inference() else a.to(dtype)
                       for a in activations]
        size = (grid[0] * self.backbone.patch_size, grid[1] * self.backbone.patch_size)
        return ImageFeatures(self.decoder.prepare(activations, grid), grid, size)

    def prompt_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings `(K, embed_dim)`. The text tower is frozen, so each distinct prompt is encoded once
        and remembered (up to `TEXT_CACHE_SIZE` prompts): epochs and slider moves reuse them."""
        prompts = check_prompts(prompts)
        new = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if new:
            if len(self._text_cache) + len(new) > TEXT_CACHE_SIZE:
                self._text_cache.clear()
            self._text_cache.update(zip(new, self.backbone.encode_text(new).float().cpu()))
        dtype = next(self.decoder.parameters()).dtype
        emb = torch.stack([self._text_cache[p] for p in prompts]).to(self.backbone.device, dtype)
        return emb

    def visual_prompt_embeddings(self, images, masks, mode: str | None = None, *, recipe: str | None = None,
                                 **options) -> torch.Tensor:
        """Conditional embeddings from (image, mask) examples; see `clipseg_lab.models.visual_prompt`.

        `recipe` defaults to the weights' own (`visual_prompt_recipe`: "clipseg-original" for the released
        decoders, "clipseg-lab" for ours), blended with the model's normalisation."""
        from clipseg_lab.models.visual_prompt import visual_prompt_embeddings

        emb = visual_prompt_embeddings(self.backbone, images, masks, mode, recipe=recipe or self.visual_prompt_recipe,
                                       mean=self.normalization.mean, std=self.normalization.std, **options)
        dtype = next(self.decoder.parameters()).dtype
        return emb.to(dtype).clone() if torch.is_grad_enabled() else emb.to(dtype)

    def decode(self, features: ImageFeatures, cond: torch.Tensor) -> torch.Tensor:
        """Logits `(K, H, W)` at the network resolution; features of one image broadcast over K prompts."""
        if len(features) not in (1, cond.shape[0]):
            raise ValueError(f"{len(features)} images and {cond.shape[0]} prompts: pass one image, or one prompt "
                             "per image")
        logits = self.decoder(features.prepared, cond, features.grid)
        if tuple(logits.shape[-2:]) != features.input_size:  # e.g. a refined head on a patch size other than 16
            logits = F.interpolate(logits[:, None], size=features.input_size, mode="bilinear",
                                   align_corners=False)[:, 0]
        return logits

    def forward(self, pixels: torch.Tensor, prompts: list[str] | torch.Tensor) -> torch.Tensor:
        """Logits `(B, H, W)` for B (image, prompt) pairs, or for one image and B prompts."""
        cond = prompts if isinstance(prompts, torch.Tensor) else self.prompt_embeddings(prompts)
        return self.decode(self.image_features(pixels), cond)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoder's weights: what a checkpoint stores (the backbone is loaded by name)."""
        return self.decoder.state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]):
        return self.decoder.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> TextPromptedModel:
        super().train(mode)
        self.backbone.train(False)
        return self
