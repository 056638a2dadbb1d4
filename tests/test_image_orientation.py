"""Principle 5: images are read as people see them. A photo's EXIF orientation is applied for user photos (the
Segmenter, the explorer, `segment`); dataset loaders keep the stored pixel grid their masks are drawn in. NaN
pixels and URLs are refused with one message naming the input."""

from __future__ import annotations

import socket

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

import clipseg_lab as cl
from clipseg_lab.cli import main
from clipseg_lab.data.folder import FolderReferring
from clipseg_lab.errors import ImageReadError
from clipseg_lab.images import load_rgb

TINY = ["--backbone", "tiny-random", "--device", "cpu", "--no-progress"]
H, W = 40, 64  # as stored; orientation 6 (turn 90 degrees clockwise) shows it W tall and H wide


def stored_pixels() -> np.ndarray:
    """Blocks of 8 px (so JPEG keeps them): red top-left quadrant, a green bar along the stored top edge."""
    pixels = np.full((H, W, 3), 200, np.uint8)
    pixels[:H // 2, :W // 2] = (220, 30, 30)
    pixels[:8, W // 2:] = (30, 200, 30)
    return pixels


def exif_photo(path, orientation: int = 6):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored_pixels()).save(path, exif=exif, quality=95)
    return path


@pytest.fixture(scope="module")
def model(tiny_backbone):
    return cl.build_model("clipseg-rd64", backbone=tiny_backbone)


def test_exif_orientation_applied_only_when_asked(tmp_path):
    photo = exif_photo(tmp_path / "photo.jpg")
    stored, shown = load_rgb(photo), load_rgb(photo, orientation="exif")
    assert stored.shape == (3, H, W) and shown.shape == (3, W, H)
    # what a viewer shows: the stored pixels turned 90 degrees clockwise (the green bar now on the right edge)
    turned = np.rot90(stored.permute(1, 2, 0).numpy(), k=-1)
    assert np.array_equal(shown.permute(1, 2, 0).numpy(), turned)
    assert shown[0, W // 2, -4] < 100 and shown[0, W // 2, 4] > 150  # green bar (red 30) right, grey (200) left
    # a PIL image carries its EXIF too; orientation 1 and PNGs without EXIF are left as they are
    assert torch.equal(load_rgb(Image.open(photo), orientation="exif"), shown)
    upright = exif_photo(tmp_path / "upright.jpg", orientation=1)
    assert load_rgb(upright, orientation="exif").shape == (3, H, W)
    with pytest.raises(ValueError, match="orientation"):
        load_rgb(photo, orientation="sideways")


def test_segmenter_maps_match_the_displayed_photo(model, tmp_path):
    photo = exif_photo(tmp_path / "photo.jpg")
    upright = load_rgb(photo, orientation="exif")
    seg = cl.Segmenter(model)
    seg.set_image(photo)
    probs = seg.predict(["a cat", "a dog"])
    assert seg.image.shape == (3, W, H) and probs.shape == (2, W, H)
    seg.set_image(Image.open(photo))
    assert torch.equal(seg.predict(["a cat", "a dog"]), probs)
    seg.set_image(upright.permute(1, 2, 0).numpy())  # the same photo, already upright: the same maps
    assert torch.equal(seg.predict(["a cat", "a dog"]), probs)


def test_segment_masks_match_the_displayed_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    exif_photo(photos / "turned.jpg")
    upright = load_rgb(photos / "turned.jpg", orientation="exif").permute(1, 2, 0).numpy()
    Image.fromarray(upright).save(photos / "upright.png")  # the pixels a viewer shows, stored upright (lossless)
    out = tmp_path / "out"
    assert main(["segment", str(photos), "a cat", "a dog", "--out", str(out), *TINY]) == 0
    for mask in ("00_a-cat.png", "01_a-dog.png"):
        turned, straight = Image.open(out / "turned" / mask), Image.open(out / "upright" / mask)
        assert turned.size == (H, W)  # PIL: (width, height) of the displayed photo
        assert np.array_equal(np.asarray(turned), np.asarray(straight))


def test_explorer_shows_the_photo_upright(model, tmp_path):
    pytest.importorskip("ipywidgets")
    from clipseg_lab.interactive import PromptExplorer

    photo = exif_photo(tmp_path / "photo.jpg")
    explorer = PromptExplorer({"rd64": model}, {"photo": photo}, prompts="a cat")
    assert explorer.images["photo"].shape == (3, W, H) and explorer.probabilities().shape == (1, W, H)
    explorer.add_image("again", Image.open(photo))  # an upload arrives as a PIL image
    assert explorer.images["again"].shape == (3, W, H)


def test_folder_dataset_keeps_the_stored_orientation(tmp_path):
    """The `folder` loader reads images as stored: its masks must be the size of the stored image (checked from
    the file headers at indexing) and are read as stored, so image and mask stay in the same pixel grid."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    exif_photo(root / "images" / "photo.jpg")
    mask = np.zeros((H, W), np.uint8)
    mask[:H // 2, :W // 2] = 255  # the red quadrant, in stored coordinates
    Image.fromarray(mask).save(root / "masks" / "photo.png")
    (root / "prompts.csv").write_text("image,mask,prompt\nphoto.jpg,photo.png,the red corner\n")
    sample = FolderReferring(root, "all")[0]
    assert sample["image"].shape == (3, H, W) and sample["mask"].shape == (H, W)
    assert torch.equal(sample["image"], load_rgb(root / "images" / "photo.jpg", orientation="stored"))
    red = sample["image"][0].float() - sample["image"][1].float() > 100
    # the same pixel grid: the mask covers the red quadrant (JPEG blurs its 20-px edge, which is off the 8-px blocks)
    assert (red == sample["mask"].bool()).float().mean() > 0.97


def test_nan_pixels_are_refused(model):
    array = np.full((8, 10, 3), 0.5, np.float32)
    array[2, 3] = np.nan
    with pytest.raises(ImageReadError, match=r"float32 array of shape \(8, 10, 3\): 3 of its 240 values are NaN"):
        load_rgb(array)
    seg = cl.Segmenter(model)
    with pytest.raises(ImageReadError, match=r"float32 tensor of shape \(3, 8, 10\).*NaN"):
        seg.set_image(torch.from_numpy(array).permute(2, 0, 1))
    with pytest.raises(ImageReadError, match=r"mode F.*NaN"):
        load_rgb(Image.fromarray(array[..., 0]))
    assert load_rgb(np.nan_to_num(array)).shape == (3, 8, 10)  # filled first: fine


@pytest.mark.parametrize("url", ["https://example.com/cats/cat.jpg", "HTTP://example.com/cat.png?size=large"])
def test_urls_are_refused_without_network(model, url, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ImageReadError, match="URL; images are not fetched") as caught:
        load_rgb(url)
    assert str(caught.value).startswith(url) and "Download the file first" in str(caught.value)
    with pytest.raises(ImageReadError, match="not fetched"):
        cl.Segmenter(model).set_image(url)
