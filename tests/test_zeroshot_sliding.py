"""Sliding windows: placement, exact reassembly with an identity model, averaging of overlaps, errors."""

from __future__ import annotations

import pytest
import torch

from clipseg_lab.errors import ConfigError
from clipseg_lab.zeroshot.sliding import SlidingWindow, resize_short_side, slide, window_boxes, window_starts

SIZES = [1, 2, 3, 5, 7, 8, 11, 16, 17]


def identity(crops, boxes):
    return crops


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 8])
def test_identity_model_reproduces_the_tile_exactly(window):
    """Every stride <= window, square and non-square tiles, sizes that are and are not multiples of the stride,
    tiles smaller than the window (padded), and batch sizes that do not divide the number of windows."""
    g = torch.Generator().manual_seed(window)
    checked = 0
    for stride in range(1, window + 1):
        for height in SIZES:
            for width in (SIZES[(SIZES.index(height) * 3 + stride) % len(SIZES)], height):
                image = torch.rand(2, height, width, generator=g)  # arbitrary float32 values, not round numbers
                spec = SlidingWindow(window, stride, batch_size=1 + (height + width) % 4)
                out = slide(image, identity, spec, pad_value=float("nan"))  # padding must never reach the output
                assert out.dtype == torch.float64 and out.shape == (2, height, width)
                assert torch.equal(out, image.double()), (window, stride, height, width)
                checked += 1
    assert checked == window * len(SIZES) * 2


def test_boxes_cover_the_tile_and_the_last_window_ends_at_the_border():
    for window, stride, size in [(224, 112, 448), (224, 112, 500), (224, 224, 500), (224, 100, 300), (5, 3, 4)]:
        starts = window_starts(size, window, stride)
        assert starts[0] == 0 and starts == sorted(set(starts))
        if size > window:
            assert starts[-1] == size - window
            assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    assert window_starts(448, 224, 112) == [0, 112, 224]  # SegEarth-OV: 448 short side, 224 / 112 -> 3 x 3
    assert window_starts(500, 224, 112) == [0, 112, 224, 276]
    boxes = window_boxes(3, 10, 4, 4)  # a tile lower than the window: one clipped row of windows
    assert boxes == [(0, 0, 3, 4), (0, 4, 3, 8), (0, 6, 3, 10)]


def test_overlaps_are_averaged():
    """A model that answers each window's index: every pixel gets the mean index of the windows covering it."""
    spec = SlidingWindow(window=4, stride=2, batch_size=3)
    height, width = 7, 9
    boxes = spec.boxes(height, width)
    seen: list = []

    def model(crops, batch):
        first = len(seen)
        seen.extend(batch)
        index = torch.arange(first, first + len(batch), dtype=torch.float32)
        return index[:, None, None, None].expand(len(batch), 1, 4, 4).clone()

    out = slide(torch.zeros(3, height, width), model, spec)
    assert seen == boxes
    for y in range(height):
        for x in range(width):
            covering = [i for i, (y0, x0, y1, x1) in enumerate(boxes) if y0 <= y < y1 and x0 <= x < x1]
            assert out[0, y, x].item() == pytest.approx(sum(covering) / len(covering), abs=1e-12)


def test_batched_and_one_window_at_a_time_agree():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)

    def model(crops, boxes):
        with torch.no_grad():
            return conv(crops)

    image = torch.randn(3, 23, 31)
    one = slide(image, model, SlidingWindow(8, 5, batch_size=1))
    many = slide(image, model, SlidingWindow(8, 5, batch_size=64))
    assert one.shape == (5, 23, 31) and torch.allclose(one, many, atol=1e-6)


@pytest.mark.parametrize("window,stride", [(224, 225), (4, 8), (1, 2)])
def test_stride_larger_than_the_window_is_rejected(window, stride):
    with pytest.raises(ConfigError, match=rf"stride {stride} is larger than the window {window}.*gaps"):
        SlidingWindow(window, stride)
    with pytest.raises(ConfigError, match="gaps"):
        window_boxes(500, 500, window, stride)


def test_other_bad_settings():
    with pytest.raises(ConfigError, match="must be positive"):
        SlidingWindow(0, 0)
    with pytest.raises(ConfigError, match="batch_size"):
        SlidingWindow(8, 4, batch_size=0)
    with pytest.raises(ValueError, match="returned"):
        slide(torch.zeros(3, 8, 8), lambda crops, boxes: crops[:, :, :2], SlidingWindow(4, 4))
    with pytest.raises(ValueError, match=r"one \(C, H, W\) image"):
        slide(torch.zeros(1, 3, 8, 8), identity, SlidingWindow(4, 4))


def test_resize_short_side():
    image = torch.randint(0, 255, (3, 512, 1024), dtype=torch.uint8)
    assert resize_short_side(image, 448).shape == (3, 448, 896)
    assert resize_short_side(image, None) is image
    assert resize_short_side(image, 512) is image
