"""`transformer-decoder`: the RefCOCO re-implementation's per-patch transformer decoder.

CLIP's patch tokens in the joint space (final norm + image projection applied to every token), modulated by
FiLM from the text embedding, a stack of post-norm transformer encoder layers (8 heads, feed-forward
4 x d_model, dropout 0.1), one logit per token (class token dropped), reshaped to the patch grid and
upsampled bilinearly to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.models.film import FiLM


@dataclass
class TransformerDecoderConfig:
    extract_layers: tuple[int, ...] = (11,)  # the last block, projected
    num_layers: int = 3
    num_heads: int = 8
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.extract_layers = tuple(int(i) for i in self.extract_layers)
        if len(self.extract_layers) != 1:
            raise ValueError("the transformer decoder reads exactly one CLIP layer")


class TransformerDecoder(nn.Module):
    project_tokens = True  # ask the backbone for projected tokens

    def __init__(self, config: TransformerDecoderConfig, *, cond_dim: int, patch_size: int, **_: int):
        super().__init__()
        self.config = config
        self.patch_size = patch_size
        d = cond_dim  # projected tokens live in the text embedding's space
        if d % config.num_heads:
            raise ValueError(f"embedding width {d} is not divisible by {config.num_heads} heads")
        self.film = FiLM(cond_dim, d)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, dim_feedforward=4 * d, dropout=config.dropout,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 1)

    @property
    def extract_layers(self) -> tuple[int, ...]:
        return self.config.extract_layers

    def prepare(self, activations: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        return activations

    def forward(self, prepared: list[torch.Tensor], cond: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        tokens = self.encoder(self.film(prepared[0], cond))
        logits = self.head(tokens[:, 1:]).squeeze(-1)  # (K, h*w), class token dropped
        maps = logits.view(-1, 1, *grid)
        size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).squeeze(1)
