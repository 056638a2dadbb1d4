"""ReSeg-CLIP's attention masks, checked cell by cell on small grids."""

from __future__ import annotations

import pytest
import torch

from clipseg_lab.errors import ConfigError
from clipseg_lab.zeroshot.masks import (
    add_class_token,
    build_layer_masks,
    layer_plan,
    neighbourhood_mask,
    neighbourhood_patches,
    region_mask,
    region_patches,
    token_regions,
)


def _from_rows(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


def test_neighbourhood_3x3_radius_1_is_exact():
    # patches numbered row-major:  0 1 2 / 3 4 5 / 6 7 8 ; 8-connected neighbours and itself
    expected = _from_rows([
        "110110000",
        "111111000",
        "011011000",
        "110110110",
        "111111111",
        "011011011",
        "000110110",
        "000111111",
        "000011011",
    ])
    assert torch.equal(neighbourhood_patches((3, 3), 1), expected)


def test_neighbourhood_non_square_grid_and_radius_0():
    assert torch.equal(neighbourhood_patches((2, 3), 0), torch.eye(6, dtype=torch.bool))
    got = neighbourhood_patches((2, 4), 2)  # 2 x 4 grid: column distance <= 2, any row
    for i in range(8):
        for j in range(8):
            assert got[i, j] == (abs(i % 4 - j % 4) <= 2), (i, j)


def test_class_token_row_and_column():
    mask = neighbourhood_mask((2, 2), 0)
    assert mask.shape == (5, 5)
    assert mask[0].all() and mask[:, 0].all()  # CLS attends everywhere; every patch may attend CLS
    assert torch.equal(mask[1:, 1:], torch.eye(4, dtype=torch.bool))
    isolated = add_class_token(torch.eye(4, dtype=torch.bool), "isolated")
    assert isolated[0, 0] and not isolated[0, 1:].any() and not isolated[1:, 0].any()


def test_region_mask_with_uncovered_tokens():
    # 2 x 3 grid:  A A B
    #              - B -      (- = outside every SAM region)
    regions = torch.tensor([[0, 0, 1, -1, 1, -1]])
    near = neighbourhood_patches((2, 3), 1)
    got = region_patches(regions, (2, 3), outside="neighbourhood", radius=1)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    for i in range(6):
        for j in range(6):
            ri, rj = int(regions[0, i]), int(regions[0, j])
            if i == j:
                expected[i, j] = True
            elif ri >= 0:
                expected[i, j] = ri == rj  # inside a region: only the same region
            else:
                expected[i, j] = bool(near[i, j])  # uncovered: its spatial neighbourhood
    assert torch.equal(got, expected)
    assert got[0, 1] and not got[0, 2] and not got[0, 3]  # A sees A, not B nor uncovered
    assert got[2, 4] and not got[2, 5]
    assert got[3].tolist() == [True, True, False, True, True, False]  # uncovered (1,0): rows 0-1, cols 0-1

    self_only = region_patches(regions, (2, 3), outside="self")[0]
    assert self_only[3].tolist() == [False, False, False, True, False, False]
    global_ = region_patches(regions, (2, 3), outside="global")[0]
    assert global_[3].tolist() == [False, False, False, True, False, True]  # uncovered together (the seed's way)
    full = region_mask(regions, (2, 3))
    assert full.shape == (1, 7, 7) and full[0, 0].all() and full[0, :, 0].all()


def test_token_regions_takes_the_majority_per_patch():
    part = torch.full((4, 6), -1)
    part[:2, :2] = 3          # cell (0,0): all 3
    part[:2, 2:4] = 5
    part[0, 2] = -1           # cell (0,1): three 5 and one -1 -> 5
    part[0:2, 4] = 7          # cell (0,2): two 7 two -1 -> tie -> the smaller label (-1)
    part[2:, :] = 2
    got = token_regions(part, (2, 3))
    assert got.tolist() == [[3, 5, -1, 2, 2, 2]]


def test_layer_plan_counts_and_errors():
    assert layer_plan(24, 18, 2, 4) == ["full"] * 18 + ["neighbourhood"] * 2 + ["sam"] * 4
    assert layer_plan(12, None, 2, 4).count("full") == 6
    with pytest.raises(ConfigError, match="backbone has 12 blocks"):
        layer_plan(12, 18, 2, 4)


def test_build_layer_masks_per_kind():
    regions = torch.tensor([[0, 0, 1, 1], [0, 1, 2, 3]])
    masks = build_layer_masks(["full", "neighbourhood", "sam", "sam"], (2, 2), radius=0, regions=regions)
    assert masks[0] is None
    assert masks[1].shape == (1, 5, 5) and torch.equal(masks[1][0, 1:, 1:], torch.eye(4, dtype=torch.bool))
    assert masks[2].shape == (2, 5, 5) and masks[2] is masks[3]
    assert masks[2][0, 1, 2] and not masks[2][0, 1, 3] and not masks[2][1, 1, 2]
    per_layer = build_layer_masks(["sam", "sam"], (2, 2), radius=0, regions=[regions, regions.flip(0)])
    assert torch.equal(per_layer[1][0], per_layer[0][1])
