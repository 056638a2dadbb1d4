"""`clip-unet`: a UNet for multi-class segmentation with CLIP patch tokens fused at the bottleneck, and the
plain `unet` baseline without CLIP.

The UNet sees the image at the network size (512 px in the Oxford Pet recipe); the frozen backbone sees it at
its own resolution. The backbone's patch tokens of one layer (default: the last) are laid out on their grid,
resized to the bottleneck's grid, concatenated with the bottleneck features and mixed by a 1x1 convolution,
whose input width follows the backbone (768 for ViT-B/16 and B/32, 1024 for L/14). The encoder's spatial
dropout rises with depth and falls again towards the bottleneck, as in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.backbones.clip_backbone import IMAGENET_MEAN, IMAGENET_STD, ClipBackbone
from clipseg_lab.provenance import Provenance


@dataclass
class ClipUNetConfig:
    num_classes: int = 3  # Oxford Pet: background, cat, dog
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # encoder widths; the last is the bottleneck
    dropout: tuple[float, ...] = (0.05, 0.1, 0.2, 0.1, 0.05)  # spatial dropout per level: rising, then falling
    use_clip: bool = True
    clip_layer: int = -1  # which backbone block's patch tokens are fused (-1: the last)
    input_size: int = 512

    def __post_init__(self) -> None:
        self.channels, self.dropout = tuple(int(c) for c in self.channels), tuple(float(d) for d in self.dropout)
        if len(self.channels) != len(self.dropout) or len(self.channels) < 2:
            raise ValueError("channels and dropout need one entry per level (at least two)")
        if self.input_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"input_size {self.input_size} must be divisible by {2 ** (len(self.channels) - 1)}")


def _block(cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
              nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class ClipUNet(nn.Module):
    """Logits `(B, num_classes, S, S)` at the network size S. Only the UNet (and the fusion) train."""

    def __init__(self, config: ClipUNetConfig, backbone: ClipBackbone | None, *, name: str = "clip-unet"):
        super().__init__()
        if config.use_clip and backbone is None:
            raise ValueError(f"{name} fuses CLIP tokens: give it a backbone (or use the plain 'unet')")
        self.config, self.name, self.input_size = config, name, config.input_size
        self.backbone = backbone if config.use_clip else None
        ch = config.channels
        self.encoder = nn.ModuleList(_block(3 if i == 0 else ch[i - 1], c, d)
                                     for i, (c, d) in enumerate(zip(ch, config.dropout)))
        if self.backbone is not None:
            self.fusion = nn.Sequential(nn.Conv2d(ch[-1] + self.backbone.width, ch[-1], 1, bias=False),
                                        nn.BatchNorm2d(ch[-1]), nn.ReLU(inplace=True))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(len(ch) - 1))
        self.decoder = nn.ModuleList(_block(2 * ch[i], ch[i]) for i in range(len(ch) - 1))
        self.head = nn.Conv2d(ch[0], config.num_classes, 1)
        if self.backbone is not None:
            self.provenance = Provenance.of_backbone(name, backbone)
        else:
            self.provenance = Provenance(name, "none (no CLIP)", True, "-")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- inputs -------------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `(B, 3, H, W)` -> normalised float at the network size (ImageNet statistics for the UNet)."""
        x = F.interpolate(images.float() / 255.0, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        return (x.to(self.mean.device) - self.mean) / self.std

    def clip_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """The fused layer's activations `(B, 1 + h*w, width)` at the backbone's native size, and the grid."""
        if self.backbone is None:
            return None
        layer = self.config.clip_layer % self.backbone.num_layers
        encoding = self.backbone.encode_image(self.backbone.preprocess(list(images)), layers=[layer], pooled=False)
        return encoding.activations[0], encoding.grid

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, tokens: tuple[torch.Tensor, tuple[int, int]] | None = None) -> torch.Tensor:
        skips, x = [], pixels
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        if self.backbone is not None:
            if tokens is None:
                raise ValueError("clip-unet needs the CLIP tokens: pass model.clip_tokens(images)")
            acts, (h, w) = tokens
            grid = acts[:, 1:].transpose(1, 2).reshape(acts.shape[0], -1, h, w).to(x.dtype)
            grid = F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fusion(torch.cat([x, grid], dim=1))
        for i in range(len(self.up) - 1, -1, -1):
            x = self.decoder[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images `(B, 3, H, W)` -> logits at the network size."""
        return self(self.preprocess(images), self.clip_tokens(images))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone."))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone: what a checkpoint stores."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]):
        missing, unexpected = self.load_state_dict(state, strict=False)
        return [k for k in missing if not k.startswith("backbone.")], unexpected

    def train(self, mode: bool = True) -> ClipUNet:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.train(False)
        return self
