"""Dense (per-patch) CLIP features for training-free segmentation, with optional per-block attention masks.

`DenseClip` steps the vision blocks of a frozen `ClipBackbone` itself (Hugging Face's pre-LN
`CLIPEncoderLayer`: layer_norm1 -> self_attn -> residual -> layer_norm2 -> mlp -> residual), so that each block can
take its own attention mask (ReSeg-CLIP's hierarchical masking, `clipseg_lab.zeroshot.masks`) and the last block
can be replaced by one of the training-free variants below. The last block's output goes through the vision
`post_layernorm` and `visual_projection`, as CLIP does for its class token, giving one embedding per patch in the
joint image-text space.

Last-block variants (`x` = the last block's input, `h = layer_norm1(x)`, `q, k, v` = its projections of `h`
per head, `s = head_dim ** -0.5`, `O` = the block's `out_proj`, `FFN(y) = mlp(layer_norm2(y))`):

* `vanilla`:   `y = x + O(softmax(q k^T s) v)`;  `y = y + FFN(y)`  (CLIP unchanged).
* `maskclip`:  `y = x + O(v)`;  `y = y + FFN(y)`  -- MaskCLIP (Zhou et al., ECCV 2022): the value embedding
  through the output projection in place of the attention output (every token attends only to itself), with the
  residual and the FFN kept, as MaskCLIP's released ViT code does (`v += x; v = ffn(norm2(v), identity=v)`).
* `sclip`:     `y = x + O((softmax(q q^T s) + softmax(k k^T s)) v)`;  `y = y + FFN(y)`  -- SCLIP's correlative
  self-attention (Wang et al., 2023), with the residual and the FFN kept as in SCLIP's released code.
* `clearclip`: `y = O(softmax(q q^T s) v)`  -- ClearCLIP (Lan et al., ECCV 2024): q-q attention, no residual,
  no FFN.
* `naclip`:    `y = O(softmax(k k^T s + G) v)` -- NACLIP (Hajimiri et al., WACV 2025): k-k attention plus a
  Gaussian spatial prior `G[i, j] = exp(-||p_i - p_j||^2 / (2 sigma^2))` over patch positions (in patches,
  sigma = `gaussian_std`, default 5; 0 on the class token's row and column, not truncated), no residual, no FFN
  (NACLIP's "reduced" architecture).

With a mask for the last block, every softmax above is restricted to the allowed tokens (logits of disallowed
pairs are -inf); `maskclip` has no attention, so a mask does not change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from clipseg_lab.backbones.clip_backbone import ClipBackbone
from clipseg_lab.errors import ConfigError

AttentionKind = Literal["qk", "value", "qq", "kk", "qq+kk"]


@dataclass(frozen=True)
class LastBlock:
    """How the last vision block is computed (see the module docstring)."""

    attention: AttentionKind
    residual: bool
    ffn: bool
    gaussian: bool = False


VARIANTS: dict[str, LastBlock] = {
    "vanilla": LastBlock("qk", residual=True, ffn=True),
    "maskclip": LastBlock("value", residual=True, ffn=True),
    "sclip": LastBlock("qq+kk", residual=True, ffn=True),
    "clearclip": LastBlock("qq", residual=False, ffn=False),
    "naclip": LastBlock("kk", residual=False, ffn=False, gaussian=True),
}


def check_variant(name: str) -> LastBlock:
    if name not in VARIANTS:
        raise ConfigError(f"unknown dense-feature variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclass
class DenseOutput:
    """`patches`: `(B, h, w, D)` L2-normalised patch embeddings (float32); `cls`: `(B, D)` normalised class
    token embedding of the same (modified) last block."""

    patches: torch.Tensor
    cls: torch.Tensor
    grid: tuple[int, int]


def gaussian_bias(grid: tuple[int, int], std: float, device: torch.device | str | None = None) -> torch.Tensor:
    """`(1 + N, 1 + N)` NACLIP spatial prior: exp(-d^2 / (2 std^2)) between patches, 0 for the class token."""
    from clipseg_lab.zeroshot.masks import patch_positions

    pos = patch_positions(grid, device).float()
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    n = pos.shape[0]
    out = torch.zeros(n + 1, n + 1, device=device)
    out[1:, 1:] = torch.exp(-d2 / (2 * std ** 2))
    return out


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def _sdpa_mask(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean `(B|1, T, T)` mask and/or an additive `(T, T)` bias as SDPA's `attn_mask` `(B|1, 1, T, T)`."""
    if mask is None and bias is None:
        return None
    if bias is None:
        return mask[:, None]
    bias = bias.to(dtype)[None, None]
    if mask is None:
        return bias
    return bias.masked_fill(~mask[:, None], float("-inf"))


def attend(attn: torch.nn.Module, h: torch.Tensor, kind: AttentionKind = "qk", mask: torch.Tensor | None = None,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """One (possibly modified) multi-head attention of a `CLIPAttention` on normalised tokens `h` `(B, T, C)`."""
    heads, scale = attn.num_heads, attn.scale
    v = _split_heads(attn.v_proj(h), heads)
    if kind == "value":
        out = v
    else:
        attn_mask = _sdpa_mask(mask, bias, h.dtype)
        if kind == "qk":
            out = F.scaled_dot_product_attention(_split_heads(attn.q_proj(h), heads),
                                                 _split_heads(attn.k_proj(h), heads),
                                                 v, attn_mask=attn_mask, scale=scale)
        elif kind in ("qq", "kk"):
            x = _split_heads((attn.q_proj if kind == "qq" else attn.k_proj)(h), heads)
            out = F.scaled_dot_product_attention(x, x, v, attn_mask=attn_mask, scale=scale)
        elif kind == "qq+kk":
            q, k = _split_heads(attn.q_proj(h), heads), _split_heads(attn.k_proj(h), heads)
            out = (F.scaled_dot_product_attention(q, q, v, attn_mask=attn_mask, scale=scale)
                   + F.scaled_dot_product_attention(k, k, v, attn_mask=attn_mask, scale=scale))
        else:
            raise ValueError(f"unknown attention kind {kind!r}")
    b, _, t, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def run_block(block: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A standard CLIP encoder block with an optional boolean attention mask `(B|1, T, T)`."""
    x = x + attend(block.self_attn, block.layer_norm1(x), "qk", mask)
    return x + block.mlp(block.layer_norm2(x))


def run_last_block(block: torch.nn.Module, x: torch.Tensor, spec: LastBlock, mask: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    y = attend(block.self_attn, block.layer_norm1(x), spec.attention, mask, bias if spec.gaussian else None)
    if spec.residual:
        y = x + y
    if spec.ffn:
        y = y + block.mlp(block.layer_norm2(y))
    return y


class DenseClip:
    """Patch embeddings of a frozen CLIP with a chosen last-block variant and per-block attention masks."""

    def __init__(self, backbone: ClipBackbone, variant: str = "sclip", *, gaussian_std: float = 5.0):
        self.backbone = backbone
        self.variant = variant
        self.spec = check_variant(variant)
        if gaussian_std <= 0:
            raise ConfigError(f"gaussian_std must be > 0, got {gaussian_std}")
        self.gaussian_std = gaussian_std
        self._bias: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def grid(self, size: int | tuple[int, int]) -> tuple[int, int]:
        return self.backbone.patch_grid(size)

    def _gaussian(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid not in self._bias:
            self._bias[grid] = gaussian_bias(grid, self.gaussian_std, self.backbone.device)
        return self._bias[grid]

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, masks: Sequence[torch.Tensor | None] | None = None) -> DenseOutput:
        """`pixels`: `(B, 3, H, W)` normalised (as `ClipBackbone.preprocess` gives), H and W multiples of the patch
        size. `masks`: None, or one entry per block (None = unrestricted, else a boolean `(B|1, T, T)`)."""
        bb = self.backbone
        blocks = bb.clip.vision_model.encoder.layers
        if masks is None:
            masks = [None] * len(blocks)
        if len(masks) != len(blocks):
            raise ValueError(f"{len(masks)} attention masks for {len(blocks)} blocks")
        vision = bb.clip.vision_model
        grid = bb.patch_grid(tuple(pixels.shape[-2:]))
        x = vision.embeddings(pixels.to(bb.device, bb.dtype), interpolate_pos_encoding=True)
        x = vision.pre_layrnorm(x)
        masks = [m.to(x.device) if m is not None else None for m in masks]
        for block, mask in zip(blocks[:-1], masks[:-1]):
            x = run_block(block, x, mask)
        bias = self._gaussian(grid) if self.spec.gaussian else None
        x = run_last_block(blocks[-1], x, self.spec, masks[-1], bias)
        emb = bb.clip.visual_projection(vision.post_layernorm(x)).float()
        emb = F.normalize(emb, dim=-1)
        b = emb.shape[0]
        return DenseOutput(emb[:, 1:].reshape(b, grid[0], grid[1], -1), emb[:, 0], grid)

