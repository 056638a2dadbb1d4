"""`conv-unet-decoder`: a UNet-like convolutional decoder over a pyramid built from several CLIP layers.

A ViT has one scale, so each chosen layer's patch tokens are reassembled into a feature map at its own
stride (shallow layers finer, the deepest coarser: 4, 8, 16, 32 pixels by default), as DPT does. The decoder
climbs from the coarsest map with transposed convolutions, concatenating each finer map as a skip
connection; the prompt modulates every level by FiLM. The image-only part (reassembly) runs once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.models.film import FiLM


@dataclass
class ConvDecoderConfig:
    extract_layers: tuple[int, ...] = (2, 5, 8, 11)  # shallow to deep, one per pyramid level
    strides: tuple[int, ...] = (4, 8, 16, 32)  # pixels per feature-map cell at each level
    channels: tuple[int, ...] = (32, 64, 96, 128)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.extract_layers, self.strides, self.channels = (tuple(int(v) for v in x) for x in
                                                            (self.extract_layers, self.strides, self.channels))
        if not len(self.extract_layers) == len(self.strides) == len(self.channels) >= 2:
            raise ValueError("extract_layers, strides and channels need one entry per level (at least two)")
        if list(self.strides) != sorted(self.strides):
            raise ValueError(f"strides must grow from the shallowest to the deepest level: {self.strides}")


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvUNetDecoder(nn.Module):
    def __init__(self, config: ConvDecoderConfig, *, backbone_width: int, cond_dim: int, patch_size: int):
        super().__init__()
        self.config = config
        self.patch_size = patch_size
        ch = config.channels
        self.reassemble = nn.ModuleList(nn.Sequential(nn.Conv2d(backbone_width, c, 1), nn.Conv2d(c, c, 3, padding=1))
                                        for c in ch)
        self.films = nn.ModuleList(FiLM(cond_dim, c) for c in ch)
        # up[i] takes level i+1 to level i
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], kernel_size=2, stride=2)
                                for i in range(len(ch) - 1))
        self.blocks = nn.ModuleList(_conv_block(2 * ch[i], ch[i]) for i in range(len(ch) - 1))
        self.dropout = nn.Dropout2d(config.dropout)
        self.head = nn.Conv2d(ch[0], 1, kernel_size=1)

    @property
    def extract_layers(self) -> tuple[int, ...]:
        return self.config.extract_layers

    def prepare(self, activations: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        """Patch tokens of each layer -> a feature map at that level's stride (class token dropped)."""
        maps = []
        h, w = grid
        for tokens, reassemble, stride in zip(activations, self.reassemble, self.config.strides):
            b, _, c = tokens.shape
            grid = tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w)
            size = (max(1, round(h * self.patch_size / stride)), max(1, round(w * self.patch_size / stride)))
            maps.append(reassemble(F.interpolate(grid, size=size, mode="bilinear", align_corners=False)))
        return maps

    def forward(self, maps: list[torch.Tensor], cond: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.films[-1](maps[-1], cond, channels_first=True)
        for level in range(len(maps) - 2, -1, -1):
            skip = maps[level]
            x = self.up[level](x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: align to the skip connection
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.blocks[level](torch.cat([x, skip.expand(x.shape[0], -1, -1, -1)], dim=1))
            x = self.films[level](self.dropout(x), cond, channels_first=True)
        size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False).squeeze(1)
