"""Every image a user may hand over becomes RGB uint8, or fails with a message naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg_lab import ImageReadError
from clipseg_lab.images import load_rgb


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: no such image file"):
        load_rgb(tmp_path / "nope.png")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg: not a readable image"):
        load_rgb(bad)
    with pytest.raises(ImageReadError, match="is a directory"):
        load_rgb(tmp_path)
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="truncated.png"):
        load_rgb(truncated)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "1", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (20, 10), (200, 100, 50))
    image = rgb.convert(mode) if mode != "I;16" else Image.fromarray(np.full((10, 20), 51400, np.uint16))
    path = tmp_path / f"img.{'tif' if mode == 'CMYK' else 'png'}"
    image.save(path)
    out = load_rgb(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 10, 20)
    if mode == "I;16":
        assert out.unique().tolist() == [51400 // 257]  # 16-bit range mapped to 8 bits, not clipped


def test_rgba_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    out = load_rgb(Image.fromarray(rgba, "RGBA"))
    assert out[:, 0, 0].tolist() == [255, 255, 255] and out[:, 0, 3].tolist() == [255, 0, 0]


def test_arrays_and_tensors():
    assert load_rgb(np.zeros((5, 6), np.uint8)).shape == (3, 5, 6)
    assert load_rgb(np.ones((5, 6, 3), np.float32))[0, 0, 0] == 255
    assert load_rgb(torch.zeros(3, 5, 6, dtype=torch.uint8)).shape == (3, 5, 6)
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        load_rgb(np.full((5, 6, 3), 7.0))
    with pytest.raises(ImageReadError, match="shape"):
        load_rgb(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(ImageReadError, match="dict"):
        load_rgb({"not": "an image"})
