"""Dense CLIP features: every last-block variant, with and without attention masks, against a plain reference.

The reference below is written from the papers' formulas with explicit per-head matrix products and softmaxes
(no SDPA, no shared helpers), on a small random Hugging Face CLIP whose LayerNorms are randomised too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipseg_lab.backbones.clip_backbone import ClipBackbone
from clipseg_lab.errors import ConfigError
from clipseg_lab.zeroshot.dense import VARIANTS, DenseClip, gaussian_bias
from clipseg_lab.zeroshot.masks import build_layer_masks
from tests.conftest import small_hf_clip

GRID = (4, 4)  # 64 px input, patch 16


@pytest.fixture(scope="module")
def backbone() -> ClipBackbone:
    model = small_hf_clip(seed=5, image_size=64, layers=3)
    with torch.no_grad():  # q/k/v biases start at zero: make them count (q-q and k-k differ from q-k only then)
        for name, p in model.vision_model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    return ClipBackbone(model, name="small-random", source="test", trained=False)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def reference_gaussian(grid: tuple[int, int], std: float) -> torch.Tensor:
    n = grid[0] * grid[1]
    out = torch.zeros(n + 1, n + 1)
    for i in range(n):
        for j in range(n):
            (ri, ci), (rj, cj) = divmod(i, grid[1]), divmod(j, grid[1])
            out[1 + i, 1 + j] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * std ** 2))
    return out


def reference_attention(attn, h: torch.Tensor, kind: str, mask: torch.Tensor | None, bias: torch.Tensor | None):
    """Per head: weights from the formula of each method, times v; heads concatenated; output projection."""
    heads = attn.num_heads
    t, width = h.shape[-2:]
    d = width // heads
    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)

    def softmax(a: torch.Tensor, b: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        logits = a @ b.transpose(-1, -2) / math.sqrt(d)
        if extra is not None:
            logits = logits + extra
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    outs = []
    for head in range(heads):
        part = slice(head * d, (head + 1) * d)
        qh, kh, vh = q[..., part], k[..., part], v[..., part]
        if kind == "vanilla":
            weights = softmax(qh, kh)
        elif kind == "maskclip":
            weights = torch.eye(t).expand(h.shape[0], t, t)
        elif kind == "sclip":
            weights = softmax(qh, qh) + softmax(kh, kh)
        elif kind == "clearclip":
            weights = softmax(qh, qh)
        elif kind == "naclip":
            weights = softmax(kh, kh, bias)
        else:
            raise AssertionError(kind)
        outs.append(weights @ vh)
    return attn.out_proj(torch.cat(outs, dim=-1))


def reference_block(block, x, kind="vanilla", mask=None, bias=None):
    y = reference_attention(block.self_attn, block.layer_norm1(x), kind, mask, bias)
    if kind in ("vanilla", "maskclip", "sclip"):  # these keep the residual and the FFN
        y = x + y
        y = y + block.mlp(block.layer_norm2(y))
    return y  # clearclip, naclip: attention output only


def reference_dense(backbone, pixels, kind, masks=None, std=5.0):
    vision = backbone.clip.vision_model
    blocks = vision.encoder.layers
    masks = masks or [None] * len(blocks)
    x = vision.pre_layrnorm(vision.embeddings(pixels, interpolate_pos_encoding=True))
    for block, mask in zip(blocks[:-1], masks[:-1]):
        x = reference_block(block, x, "vanilla", mask)
    x = reference_block(blocks[-1], x, kind, masks[-1], reference_gaussian(GRID, std))
    emb = F.normalize(backbone.clip.visual_projection(vision.post_layernorm(x)), dim=-1)
    return emb[:, 1:].reshape(x.shape[0], *GRID, -1), emb[:, 0]


def test_gaussian_prior_matches_the_formula():
    assert torch.allclose(gaussian_bias((3, 5), 1.5), reference_gaussian((3, 5), 1.5), atol=1e-6)
    bias = gaussian_bias(GRID, 5.0)
    assert bias[0].abs().sum() == 0 and bias[:, 0].abs().sum() == 0  # nothing on the class token
    assert torch.allclose(bias[1:, 1:].diagonal(), torch.ones(16))


def test_vanilla_equals_transformers_clip(backbone, pixels):
    """Our block stepping reproduces Hugging Face's vision tower (last hidden state, projected)."""
    with torch.no_grad():
        hidden = backbone.clip.vision_model(pixel_values=pixels).last_hidden_state
        projected = backbone.clip.visual_projection(backbone.clip.vision_model.post_layernorm(hidden))
        expected = F.normalize(projected, dim=-1)
    out = DenseClip(backbone, "vanilla")(pixels)
    assert out.grid == GRID and out.patches.shape == (2, 4, 4, 32)
    assert torch.allclose(out.patches.reshape(2, 16, -1), expected[:, 1:], atol=1e-5)
    assert torch.allclose(out.cls, expected[:, 0], atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_equals_plain_reference(backbone, pixels, variant):
    out = DenseClip(backbone, variant, gaussian_std=2.0)(pixels)
    with torch.no_grad():
        patches, cls = reference_dense(backbone, pixels, variant, std=2.0)
    assert torch.allclose(out.patches, patches, atol=1e-5), (out.patches - patches).abs().max()
    assert torch.allclose(out.cls, cls, atol=1e-5)
    assert torch.allclose(out.patches.norm(dim=-1), torch.ones(2, *GRID), atol=1e-5)


def test_variants_differ(backbone, pixels):
    outs = {v: DenseClip(backbone, v)(pixels).patches for v in VARIANTS}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], atol=1e-4), (a, b)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_masked_blocks_equal_plain_reference(backbone, pixels, variant):
    """1 unrestricted, 1 neighbourhood, 1 SAM-region block (the last, with the variant), per-image regions."""
    regions = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1, 2, 2, -1, -1, 2, 2, -1, 3],
                            [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, -1, -1, -1, -1]])
    masks = build_layer_masks(["full", "neighbourhood", "sam"], GRID, radius=1, regions=regions)
    assert masks[0] is None and masks[1].shape == (1, 17, 17) and masks[2].shape == (2, 17, 17)
    out = DenseClip(backbone, variant, gaussian_std=3.0)(pixels, masks)
    with torch.no_grad():
        patches, cls = reference_dense(backbone, pixels, variant, masks, std=3.0)
    assert torch.allclose(out.patches, patches, atol=1e-5), (out.patches - patches).abs().max()
    assert torch.allclose(out.cls, cls, atol=1e-5)
    if variant != "maskclip":  # maskclip's last block has no attention: only the earlier masks act on it
        unmasked = DenseClip(backbone, variant, gaussian_std=3.0)(pixels, [None, masks[1], None])
        assert not torch.allclose(out.patches, unmasked.patches, atol=1e-4)


def test_a_mask_that_allows_everything_changes_nothing(backbone, pixels):
    everything = torch.ones(1, 17, 17, dtype=torch.bool)
    for variant in VARIANTS:
        dense = DenseClip(backbone, variant)
        assert torch.allclose(dense(pixels, [everything] * 3).patches, dense(pixels).patches, atol=1e-5)


def test_bad_arguments(backbone, pixels):
    with pytest.raises(ConfigError, match="unknown dense-feature variant 'segclip'.*sclip"):
        DenseClip(backbone, "segclip")
    with pytest.raises(ConfigError, match="gaussian_std"):
        DenseClip(backbone, "naclip", gaussian_std=0)
    with pytest.raises(ValueError, match="2 attention masks for 3 blocks"):
        DenseClip(backbone, "sclip")(pixels, [None, None])
