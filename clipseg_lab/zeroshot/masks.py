"""Attention masks for ReSeg-CLIP's hierarchical masking of a CLIP ViT.

Every mask here is a boolean "may attend" matrix over the `1 + N` tokens of one image (the class token first,
then the `N = h * w` patch tokens in row-major order): `allowed[i, j]` is True when token `i` may take
information from token `j`. `torch.nn.functional.scaled_dot_product_attention` reads such a boolean mask
directly (True = take part in attention).

Decisions (the same for every mask):

* Class token: its row is all True (the class token attends to every token, as in an unmasked layer, so the
  image-level embedding stays global) and its column is all True (every patch may attend to the class token,
  which carries the global context CLIP's patch tokens are used to). ReSeg-CLIP's reference code isolated the
  class token instead (it attended only to itself and no patch attended to it); `cls="isolated"` reproduces that.
* Every token may always attend to itself, so no row is empty and softmax never sees only -inf.
* Neighbourhood: patch `i` may attend patch `j` when both lie within `radius` patches of each other along rows
  and along columns (a `(2 * radius + 1)^2` square window, Chebyshev distance), clipped at the image border.
* SAM regions: patch `i` may attend patch `j` when both belong to the same region of the region partition.
  A patch outside every SAM region (label -1) is handled by `outside`:
  - `"neighbourhood"` (default): it attends its spatial neighbourhood (the same window as the neighbourhood
    layers, covered or not), as it did in the neighbourhood layers; patches inside a region still attend only
    within their region, so nothing from an uncovered patch leaks into a region;
  - `"self"`: it attends only itself (and the class token);
  - `"global"`: it attends every uncovered patch (ReSeg-CLIP's reference code lumped all uncovered pixels into
    one region, which is this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from clipseg_lab.errors import ConfigError

Outside = Literal["neighbourhood", "self", "global"]
ClsMode = Literal["global", "isolated"]
OUTSIDE_POLICIES = ("neighbourhood", "self", "global")
UNCOVERED = -1


def patch_positions(grid: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """`(N, 2)` row and column of every patch, row-major."""
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack([rows, cols], dim=1)


def neighbourhood_patches(grid: tuple[int, int], radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`(N, N)` boolean: patch i may attend patch j iff |row_i - row_j| <= radius and |col_i - col_j| <= radius."""
    if radius < 0:
        raise ConfigError(f"neighbourhood radius must be >= 0, got {radius}")
    pos = patch_positions(grid, device)
    diff = (pos[:, None, :] - pos[None, :, :]).abs()
    return (diff <= radius).all(-1)


def add_class_token(patch_allowed: torch.Tensor, cls: ClsMode = "global") -> torch.Tensor:
    """`(..., N, N)` patch mask -> `(..., 1 + N, 1 + N)` token mask with the class token's row and column."""
    *lead, n, _ = patch_allowed.shape
    out = torch.ones(*lead, n + 1, n + 1, dtype=torch.bool, device=patch_allowed.device)
    out[..., 1:, 1:] = patch_allowed
    if cls == "isolated":
        out[..., 0, 1:] = False
        out[..., 1:, 0] = False
    elif cls != "global":
        raise ConfigError(f"class-token policy must be 'global' or 'isolated', not {cls!r}")
    return out


def neighbourhood_mask(grid: tuple[int, int], radius: int, *, cls: ClsMode = "global",
                       device: torch.device | str | None = None) -> torch.Tensor:
    """`(1 + N, 1 + N)` mask for a neighbourhood-attention layer."""
    return add_class_token(neighbourhood_patches(grid, radius, device), cls)


def region_patches(token_regions: torch.Tensor, grid: tuple[int, int], *, outside: Outside = "neighbourhood",
                   radius: int = 1) -> torch.Tensor:
    """`(B, N)` region label per patch (-1 = outside every region) -> `(B, N, N)` patch mask (see module doc)."""
    if outside not in OUTSIDE_POLICIES:
        raise ConfigError(f"outside_regions must be one of {OUTSIDE_POLICIES}, not {outside!r}")
    if token_regions.ndim == 1:
        token_regions = token_regions[None]
    labels = token_regions.long()
    n = labels.shape[1]
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} region labels for a {grid[0]}x{grid[1]} patch grid")
    covered = labels != UNCOVERED
    same = (labels[:, :, None] == labels[:, None, :]) & covered[:, :, None]
    uncovered_pair = ~covered[:, :, None] & ~covered[:, None, :]
    if outside == "global":
        same = same | uncovered_pair
    elif outside == "neighbourhood":
        near = neighbourhood_patches(grid, radius, labels.device)
        same = same | (~covered[:, :, None] & near)
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    return same | eye


def region_mask(token_regions: torch.Tensor, grid: tuple[int, int], *, outside: Outside = "neighbourhood",
                radius: int = 1, cls: ClsMode = "global") -> torch.Tensor:
    """`(B, 1 + N, 1 + N)` mask for a SAM-region attention layer."""
    return add_class_token(region_patches(token_regions, grid, outside=outside, radius=radius), cls)


def token_regions(partition: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Region label of every patch token: the most frequent pixel label in the patch's cell.

    `partition`: `(H, W)` or `(B, H, W)` integer pixel labels (-1 = outside every region) of the model's input;
    the cells are the `grid` split of `(H, W)` (adaptive pooling bins, exact when H and W are multiples of the
    grid). Ties go to the smaller label (so a cell half uncovered counts as uncovered). Returns `(B, N)` long.
    """
    if partition.ndim == 2:
        partition = partition[None]
    out = []
    for labels in partition:
        values, inverse = torch.unique(labels.long(), return_inverse=True)
        onehot = torch.nn.functional.one_hot(inverse, len(values)).permute(2, 0, 1).float()
        share = torch.nn.functional.adaptive_avg_pool2d(onehot[None], grid)[0]  # (U, gh, gw)
        out.append(values[share.argmax(0)].flatten())
    return torch.stack(out)


def layer_plan(num_layers: int, num_initial: int | None, num_neighbour: int, num_sam: int) -> list[str]:
    """Which kind of attention each block uses: 'full' x N, then 'neighbourhood' x M, then 'sam' x L.

    `num_initial=None` means "every block before the masked ones". The counts must add up to the backbone's
    depth (ReSeg-CLIP with ViT-L/14: 18 + 2 + 4 = 24).
    """
    if min(num_neighbour, num_sam) < 0 or (num_initial is not None and num_initial < 0):
        raise ConfigError("attention layer counts must be >= 0")
    if num_initial is None:
        num_initial = num_layers - num_neighbour - num_sam
        if num_initial < 0:
            raise ConfigError(f"{num_neighbour} neighbourhood + {num_sam} SAM layers exceed the backbone's "
                              f"{num_layers} blocks")
    total = num_initial + num_neighbour + num_sam
    if total != num_layers:
        raise ConfigError(
            f"attention layers {num_initial} initial + {num_neighbour} neighbourhood + {num_sam} SAM = {total}, but "
            f"the backbone has {num_layers} blocks. "
            f"Set attention.num_initial_layers to {num_layers - num_neighbour - num_sam} "
            f"(or null for 'the rest'), or pass --layers N,M,L on the command line.")
    return ["full"] * num_initial + ["neighbourhood"] * num_neighbour + ["sam"] * num_sam


def build_layer_masks(plan: Sequence[str], grid: tuple[int, int], *, radius: int, outside: Outside = "neighbourhood",
                      cls: ClsMode = "global", regions: torch.Tensor | Sequence[torch.Tensor] | None = None,
                      device: torch.device | str | None = None) -> list[torch.Tensor | None]:
    """One mask per block for a batch of windows: None (unrestricted), `(1, T, T)` or `(B, T, T)` booleans.

    `regions`: `(B, N)` token region labels, or one such tensor per SAM layer (ReSeg-CLIP's per-layer parameter
    sets); required when the plan has SAM layers.
    """
    masks: list[torch.Tensor | None] = []
    near = None
    sam_masks: list[torch.Tensor] = []
    sam_index = 0
    for kind in plan:
        if kind == "full":
            masks.append(None)
        elif kind == "neighbourhood":
            if near is None:
                near = neighbourhood_mask(grid, radius, cls=cls, device=device)[None]
            masks.append(near)
        elif kind == "sam":
            if regions is None:
                raise ValueError("the attention plan has SAM layers but no region labels were given")
            per_layer = [regions] if isinstance(regions, torch.Tensor) else list(regions)
            if not sam_masks:
                sam_masks = [region_mask(r.to(device) if device is not None else r, grid, outside=outside,
                                         radius=radius, cls=cls) for r in per_layer]
            masks.append(sam_masks[sam_index % len(sam_masks)])
            sam_index += 1
        else:
            raise ValueError(f"unknown attention kind {kind!r}")
    return masks
