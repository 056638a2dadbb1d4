"""The CLIPSeg decoder (Lüddecke & Ecker, CVPR 2022) with all of its knobs.

Activations of chosen CLIP blocks are projected to a small width D ("reduce dim"), added up from the
deepest layer to the shallowest with a post-norm transformer block after each, conditioned on the prompt
embedding by FiLM, and turned into a mask by a transposed convolution over the patch grid.

Parameter names follow transformers' `CLIPSegDecoder` (reduces, layers.i.self_attn.q_proj, ...), except
FiLM, which is `film.mul` / `film.add` (transformers: `film_mul` / `film_add`), or `films.i.*` when every
step is conditioned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipseg_lab.models.film import FiLM


@dataclass
class ClipSegConfig:
    extract_layers: tuple[int, ...] = (3, 6, 9)  # CLIP blocks read, 0-based (the released weights: 3, 6, 9)
    reduce_dim: int = 64  # D
    num_heads: int = 4
    intermediate_size: int = 2048  # feed-forward width (nn.TransformerEncoderLayer's default, kept by CLIPSeg)
    film: Literal["first", "all"] = "first"  # "first": once, at the deepest layer (CLIPSeg); "all": every step
    complex_trans_conv: bool = False  # the "refined" head: conv + two transposed convs
    dropout: float = 0.1  # as the original's nn.TransformerEncoderLayer; off in eval mode

    def __post_init__(self) -> None:
        self.extract_layers = tuple(int(i) for i in self.extract_layers)
        if not self.extract_layers:
            raise ValueError("extract_layers must name at least one CLIP block")
        if self.film not in ("first", "all"):
            raise ValueError(f"film must be 'first' or 'all', not {self.film!r}")
        if self.reduce_dim % self.num_heads:
            raise ValueError(f"reduce_dim {self.reduce_dim} is not divisible by num_heads {self.num_heads}")


class DecoderAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class DecoderMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.dropout = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class DecoderBlock(nn.Module):
    """A post-norm transformer encoder layer (ReLU), as CLIPSeg's nn.TransformerEncoderLayer."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.self_attn = DecoderAttention(dim, heads, dropout)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.mlp = DecoderMLP(dim, hidden, dropout)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm1(x + self.dropout(self.self_attn(x)))
        return self.layer_norm2(x + self.dropout(self.mlp(x)))


class ClipSegDecoder(nn.Module):
    """Decoder half of CLIPSeg. `prepare` runs once per image; `forward` once per batch of prompts."""

    def __init__(self, config: ClipSegConfig, *, backbone_width: int, cond_dim: int, patch_size: int):
        super().__init__()
        self.config = config
        d, depth = config.reduce_dim, len(config.extract_layers)
        self.reduces = nn.ModuleList(nn.Linear(backbone_width, d) for _ in range(depth))
        self.layers = nn.ModuleList(DecoderBlock(d, config.num_heads, config.intermediate_size, config.dropout)
                                    for _ in range(depth))
        if config.film == "first":
            self.film = FiLM(cond_dim, d)
        else:
            self.films = nn.ModuleList(FiLM(cond_dim, d) for _ in range(depth))
        if config.complex_trans_conv:
            k = patch_size // 4  # as the released refined model: two x4 steps for patch 16
            self.transposed_convolution = nn.Sequential(
                nn.Conv2d(d, d, kernel_size=3, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(d, d // 2, kernel_size=k, stride=k), nn.ReLU(),
                nn.ConvTranspose2d(d // 2, 1, kernel_size=k, stride=k),
            )
        else:
            self.transposed_convolution = nn.ConvTranspose2d(d, 1, kernel_size=patch_size, stride=patch_size)

    @property
    def extract_layers(self) -> tuple[int, ...]:
        return self.config.extract_layers

    def prepare(self, activations: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        """Project each layer's tokens to D, deepest layer first. Depends on the image only: cache it."""
        return [reduce(a) for a, reduce in zip(activations[::-1], self.reduces)]

    def forward(self, reduced: list[torch.Tensor], cond: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Mask logits `(K, h*patch, w*patch)` for K conditionals; `reduced` has batch K or 1 (broadcast)."""
        out: torch.Tensor | None = None
        for i, (r, layer) in enumerate(zip(reduced, self.layers)):
            out = r if out is None else out + r
            if self.config.film == "all":
                out = self.films[i](out, cond)
            elif i == 0:
                out = self.film(out, cond)
            out = layer(out)
        assert out is not None
        h, w = grid
        maps = out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, h, w)  # drop the class token
        return self.transposed_convolution(maps).squeeze(1)


# transformers' CLIPSegDecoder names FiLM `film_mul` / `film_add`; everything else matches one to one.
_HF_FILM = {"film_mul.": "film.mul.", "film_add.": "film.add."}


def _rename_prefixes(state: dict[str, torch.Tensor], table: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        old = next((o for o in table if key.startswith(o)), None)
        out[table[old] + key[len(old):] if old else key] = value
    return out


def decoder_state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`CLIPSegForImageSegmentation`'s `decoder.*` weights (prefix stripped) in this decoder's names."""
    return _rename_prefixes(state, _HF_FILM)


def decoder_state_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `decoder_state_from_hf` (for the `film='first'` layout transformers supports)."""
    return _rename_prefixes(state, {ours: hf for hf, ours in _HF_FILM.items()})
