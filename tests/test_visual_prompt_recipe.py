"""Visual prompt recipes: "clipseg-original" (the released CLIPSeg weights', timojl/clipseg) and "clipseg-lab"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

import clipseg_lab as cl
from clipseg_lab.backbones.clip_backbone import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from clipseg_lab.models import visual_prompt as vp

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)


@pytest.fixture(scope="module")
def backbone():
    return cl.load_backbone("tiny-random", device="cpu")


def _scene(size=(352, 352), box=(100, 200, 120, 180), seed=0):
    """A constant background colour, a textured object in `box` (top, bottom, left, right), its mask."""
    rng = np.random.default_rng(seed)
    image = np.empty((*size, 3), np.uint8)
    image[:] = (200, 100, 50)
    t, b, left, r = box
    image[t:b, left:r] = rng.integers(0, 256, (b - t, r - left, 3))
    mask = np.zeros(size, np.uint8)
    mask[t:b, left:r] = 1
    return image, mask


def _normalised(rgb) -> np.ndarray:
    return ((np.asarray(rgb, np.float64) / 255 - MEAN) / STD).astype(np.float32)


def _original(image, mask, mode=None, **kw):
    return vp.visual_prompt_pixels(None, [image], [mask], mode, recipe="clipseg-original", mean=IMAGENET_MEAN,
                                   std=IMAGENET_STD, **kw)[0].numpy()


def test_recipes_are_named():
    assert vp.RECIPES == ("clipseg-lab", "clipseg-original")
    assert vp.ORIGINAL_DEFAULT_MODE == "crop_blur_highlight352"
    with pytest.raises(ValueError, match="unknown visual prompt recipe"):
        vp.visual_prompt_pixels(None, [np.zeros((8, 8, 3))], [np.ones((8, 8))], recipe="nope")
    with pytest.raises(ValueError, match="unknown visual prompt mode 'highlight' for the clipseg-original"):
        _original(*_scene(), "highlight")
    with pytest.raises(ValueError, match="352 px by definition"):
        _original(*_scene(), size=224)
    image, mask = _scene()
    with pytest.raises(ValueError, match="give `mean`"):
        vp.visual_prompt_pixels(None, [image], [mask], recipe="clipseg-original")


def test_background_fades_to_the_mean_colour_and_the_crop_is_square():
    image, mask = _scene()
    out = _original(image, mask)  # crop_blur_highlight352: blur 3, bg_fac 0.1, context 0.1
    assert out.shape == (3, 352, 352)
    # crop window: rows 100..200 (+-10 px context), cols 120..180 (+-6), so 120 x 72 padded to 120 x 120
    top, bottom, left, right = vp.original_crop_box(torch.from_numpy(mask).float(), 0.1)
    assert top <= 100 - 9 and bottom >= 200 + 9 and left <= 120 - 5 and right >= 180 + 5
    assert 100 - 11 <= top and bottom <= 200 + 10 and 120 - 7 <= left and right <= 180 + 6
    side = bottom - top
    assert side > right - left  # padded left and right with zeros: the normalisation mean colour
    pad = (side - (right - left)) // 2
    pad_out = int(pad * 352 / side)
    assert np.all(out[:, :, : pad_out - 1] == 0) and np.all(out[:, :, -(pad_out - 1):] == 0)
    # the top row of the crop is 9+ px above the object, out of the 15 x 15 blur's reach: bg_fac * normalised
    bg = _normalised((200, 100, 50))
    np.testing.assert_allclose(out[:, 0, 176], 0.1 * bg, atol=1e-6)
    # the object's centre comes through unblurred and unscaled
    index = _np_nearest_index(side, 352)
    src_y, src_x = top + index[176], left - pad + index[176]
    assert 100 + 10 <= src_y < 200 - 10 and 120 + 10 <= src_x < 180 - 10
    np.testing.assert_allclose(out[:, 176, 176], _normalised(image[src_y, src_x]), atol=1e-6)


def test_blur_acts_only_on_the_background():
    image, mask = _scene()
    norm = np.moveaxis(_normalised(image), -1, 0)
    m = mask.astype(bool)
    bg = _normalised((200, 100, 50))[:, None]
    out = _original(image, mask, "blur3_highlight01")  # no crop: pixels stay where they were (then -0.01)
    np.testing.assert_allclose(out[:, m], norm[:, m] - 0.01, atol=1e-6)  # the object: untouched
    far = np.ones_like(m)
    far[100 - 8:200 + 8, 120 - 8:180 + 8] = False  # beyond the kernel's reach (7 px)
    np.testing.assert_allclose(out[:, far], np.broadcast_to(0.1 * bg - 0.01, (3, far.sum())), atol=1e-6)
    near = np.zeros_like(m)
    near[100 - 3:100, 120:180] = True  # just above the object: its colours blurred into the background
    assert np.abs(out[:, near] - (0.1 * bg - 0.01)).max() > 1e-2
    unblurred = _original(image, mask, "blur3_highlight01", blur=0)
    np.testing.assert_allclose(unblurred[:, ~m], 0.1 * np.broadcast_to(bg, (3, (~m).sum())) - 0.01, atol=1e-6)
    faded = _original(image, mask, bg_fac=0.0)  # a fully faded background is the mean colour: 0
    assert (faded[:, :10, :] == 0).all() and (faded[:, 176, 176] != 0).any()


def _np_resize_bilinear_align_corners(img: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) -> (C, size, size), bilinear, align_corners=True (the original's dataset resize)."""
    out = img
    for axis in (1, 2):
        n = out.shape[axis]
        # source coordinates in float32, as the original's F.interpolate computes them (in float64 they drift
        # by up to ~4e-5 px at the far edge, ~1e-4 in normalised values on a noise image)
        src = np.arange(size, dtype=np.float32) * (np.float32(n - 1) / np.float32(size - 1))
        i0 = np.minimum(np.floor(src).astype(int), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        frac = (src - i0).astype(np.float64).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis) * (1 - frac) + np.take(out, i1, axis) * frac
    return out


def _np_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # torch's nearest (F.interpolate's default): floor(i * (in / out)), with that scale in float32
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(int), n_in - 1)


def _np_gaussian_blur(img: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur(img, (k, k), sigma): separable, BORDER_REFLECT_101 (numpy's 'reflect')."""
    x = np.arange(k) - (k - 1) / 2
    kern = np.exp(-x ** 2 / (2 * sigma ** 2))
    kern /= kern.sum()
    r = k // 2
    p = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = img.shape[1:]
    rows = sum(kern[i] * p[:, i:i + h, :] for i in range(k))
    return sum(kern[i] * rows[:, :, i:i + w] for i in range(k))


def _np_original_crop_blur_highlight352(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """timojl/clipseg's arithmetic, written out: phrasecut.load_sample, then img_preprocess(blur=3,
    center_context=0.1, bg_fac=0.1, image_size=352): crop_mask, pad_to_square, nearest interpolate."""
    s = 352
    img = _np_resize_bilinear_align_corners(np.moveaxis(image.astype(np.float64), -1, 0), s) / 255.0
    img = (img - MEAN[:, None, None]) / STD[:, None, None]
    iy, ix = _np_nearest_index(mask.shape[0], s), _np_nearest_index(mask.shape[1], s)
    seg = mask[iy][:, ix].astype(np.float64)
    img_bl = _np_gaussian_blur(img, 15, 3.0)
    inp = img * seg + 0.1 * img_bl * (1 - seg)
    # crop_mask(square=False), literally (its "height" is the x extent, "width" the y extent)
    context = 0.1
    bbox = [int(seg.max(0).argmax()), seg.shape[0] - int(seg.max(0)[::-1].argmax())]
    bbox += [int(seg.max(1).argmax()), seg.shape[1] - int(seg.max(1)[::-1].argmax())]
    width, height = bbox[3] - bbox[2], bbox[1] - bbox[0]
    bbox[0] = int(max(0, bbox[0] - context * height))
    bbox[1] = int(min(seg.shape[0], bbox[1] + context * height))
    bbox[2] = int(max(0, bbox[2] - context * width))
    bbox[3] = int(min(seg.shape[1], bbox[3] + context * width))
    crop = inp[:, bbox[2]:bbox[3], bbox[0]:bbox[1]]
    h, w = crop.shape[1:]
    px1 = py1 = px2 = py2 = 0
    if h > w:
        px1 = (h - w) // 2
        px2 = h - w - px1
    elif w > h:
        py1 = (w - h) // 2
        py2 = w - h - py1
    crop = np.pad(crop, ((0, 0), (py1, py2), (px1, px2)))
    n = crop.shape[1]
    return crop[:, _np_nearest_index(n, s)][:, :, _np_nearest_index(n, s)]


@pytest.mark.parametrize("shape, box", [((300, 410), (40, 170, 200, 260)), ((352, 352), (0, 90, 10, 352))])
def test_matches_an_independent_numpy_version_of_the_original(shape, box):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    t, b, left, r = box
    yy, xx = np.mgrid[: shape[0], : shape[1]]  # an ellipse in the box, not just a rectangle
    mask[((yy - (t + b) / 2) / ((b - t) / 2)) ** 2 + ((xx - (left + r) / 2) / ((r - left) / 2)) ** 2 <= 1] = 255
    got = _original(image, mask)
    expected = _np_original_crop_blur_highlight352(image, mask > 127)
    assert got.shape == expected.shape == (3, 352, 352)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _old_lab_pixels(image, mask, size=224):
    """The clipseg-lab recipe as it was: uint8 blend (blur sigma 5, kernel 21, background x0.1, crop with
    10 % margin made square, zero padded), then resized (antialiased) and normalised with CLIP's statistics."""
    rgb = torch.from_numpy(image).permute(2, 0, 1).float()
    m = torch.from_numpy(mask).float()
    out = rgb * m + TF.gaussian_blur(rgb, [21, 21], [5.0, 5.0]) * (1 - m)
    out = out * m + out * (1 - m) * 0.1
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0) * 1.2
    top, left = int(round((y0 + y1) / 2 - side / 2)), int(round((x0 + x1) / 2 - side / 2))
    out = TF.crop(out, top, left, int(round(side)), int(round(side))).round().clamp(0, 255).to(torch.uint8)
    pixels = TF.resize(out, [size, size], antialias=True).float()[None] / 255.0
    return (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def test_clipseg_lab_is_unchanged(backbone):
    image, mask = _scene(size=(120, 90), box=(30, 70, 20, 50), seed=3)
    expected = _old_lab_pixels(image, mask)
    got = vp.visual_prompt_pixels(backbone, [image], [mask])
    assert got.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    emb = vp.visual_prompt_embeddings(backbone, [image], [mask])
    torch.testing.assert_close(emb, backbone.encode_image(expected, pooled=True).pooled, rtol=0, atol=1e-5)
    named = vp.visual_prompt_embeddings(backbone, [image], [mask], "crop_blur_highlight", recipe="clipseg-lab",
                                        mean=CLIP_MEAN, std=CLIP_STD)
    torch.testing.assert_close(named, emb, rtol=0, atol=0)


def test_original_prompts_encode_at_352_with_interpolated_positions(backbone):
    (a, ma), (b, mb) = _scene(seed=1), _scene(size=(200, 260), box=(20, 120, 40, 200), seed=2)
    images, masks = [a, b], [ma, mb]
    pixels = vp.visual_prompt_pixels(backbone, images, masks, recipe="clipseg-original", mean=IMAGENET_MEAN,
                                     std=IMAGENET_STD)
    assert pixels.shape == (2, 3, 352, 352)
    emb = vp.visual_prompt_embeddings(backbone, images, masks, recipe="clipseg-original", mean=IMAGENET_MEAN,
                                      std=IMAGENET_STD)
    assert emb.shape == (2, backbone.embed_dim) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb, backbone.encode_image(pixels, pooled=True).pooled, rtol=0, atol=1e-5)
    # the default normalisation is the backbone's (CLIP statistics for tiny-random)
    default = vp.visual_prompt_pixels(backbone, images[:1], masks[:1], recipe="clipseg-original")
    clip_stats = vp.visual_prompt_pixels(None, images[:1], masks[:1], recipe="clipseg-original", mean=CLIP_MEAN,
                                         std=CLIP_STD)
    torch.testing.assert_close(default, clip_stats, rtol=0, atol=0)
    # CLIPDenseBase.visual_forward at 352: patch embedding + [class position, bicubic(align_corners=False)
    # resize of the 14 x 14 patch positions to 22 x 22] -- what encode_image's embeddings compute
    emb_layer = backbone.clip.vision_model.embeddings
    with torch.no_grad():
        patches = emb_layer.patch_embedding(pixels).flatten(2).transpose(1, 2)
        tokens = torch.cat([emb_layer.class_embedding.expand(2, 1, -1), patches], dim=1)
        pos = emb_layer.position_embedding.weight
        native = backbone.image_size // backbone.patch_size  # 14 for tiny-random; 352 px is 22 x 22 patches
        grid = pos[1:].T.reshape(1, -1, native, native)
        grid = F.interpolate(grid, (22, 22), mode="bicubic", align_corners=False).reshape(pos.shape[1], -1).T
        expected = tokens + torch.cat([pos[:1], grid])
        got = emb_layer(pixels, interpolate_pos_encoding=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
