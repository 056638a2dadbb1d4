"""Feature-wise linear modulation (FiLM): text embeddings scale and shift visual tokens."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """`x * mul(c) + add(c)`, with `x` `(B or 1, ..., dim)` tokens or `(B, dim, h, w)` maps and `c` `(B, cond_dim)`.

    A batch of one image broadcasts against a batch of K conditionals: this is how one image is
    segmented for K prompts without copying its activations K times.
    """

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.mul = nn.Linear(cond_dim, dim)
        self.add = nn.Linear(cond_dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        gamma, beta = self.mul(cond), self.add(cond)
        if channels_first:  # (B, dim, h, w)
            return x * gamma[:, :, None, None] + beta[:, :, None, None]
        shape = (cond.shape[0],) + (1,) * (x.ndim - 2) + (gamma.shape[-1],)
        return x * gamma.view(shape) + beta.view(shape)
