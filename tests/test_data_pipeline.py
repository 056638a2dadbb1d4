"""Joint transforms, negative prompts and the activation cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import clipseg_lab as cl
from clipseg_lab.data.cache import ActivationCache
from clipseg_lab.data.synthetic import SyntheticShapes
from clipseg_lab.data.transforms import JointTransform, WithNegatives, swap_left_right


def test_joint_resize_keeps_mask_values_and_flip_swaps_sides():
    sample = SyntheticShapes(4, size=100, mode="semantic", ignore_band=2)[0]
    out = JointTransform(64)(sample)
    assert out["image"].shape == (3, 64, 64) and out["mask"].shape == (64, 64)
    assert set(out["mask"].unique().tolist()) <= set(sample["mask"].unique().tolist())  # nearest: no new values
    assert out["original_size"] == (100, 100)
    flipped = JointTransform(100, flip=1.0)({**sample, "prompt": "the cup on the left"})
    assert flipped["prompt"] == "the cup on the right"
    assert torch.equal(flipped["mask"], sample["mask"].flip(-1))
    assert swap_left_right("left of the right one") == "right of the left one"


def test_negatives_are_empty_and_deterministic():
    data = SyntheticShapes(10, seed=2)
    neg = WithNegatives(data, rate=0.5, seed=1)
    flags = [neg[i]["is_negative"] for i in range(len(neg))]
    assert 0 < sum(flags) < len(flags) and flags == [neg[i]["is_negative"] for i in range(len(neg))]
    for i in range(len(neg)):
        if flags[i]:
            assert not neg[i]["mask"].any() and neg[i]["prompt"] != data[i]["prompt"]


def test_activation_cache_hits_invalidates_and_matches(tmp_path, tiny_backbone):
    model = cl.build_model("clipseg-rd64", backbone=tiny_backbone)
    images = [SyntheticShapes(3, size=96)[i]["image"] for i in range(3)]
    cache = ActivationCache.for_model(model, tmp_path / "c")
    first, grid = cache.encode(images)
    assert (cache.stats.hits, cache.stats.misses) == (0, 3) and grid == (22, 22)
    again, _ = cache.encode(images[::-1])
    assert (cache.stats.hits, cache.stats.misses) == (3, 3)
    torch.testing.assert_close(again[0], first[0].flip(0))
    direct = tiny_backbone.encode_image(model.preprocess(images), layers=[3, 6, 9], pooled=False).activations
    for a, b in zip(first, direct):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)  # float16 storage
    assert not list((tmp_path / "c").rglob(".*"))  # no temporary files left
    for changed in (dict(layers=(3, 6)), dict(size=224), dict(storage_dtype=torch.float32)):
        options = dict(layers=(3, 6, 9), size=352, storage_dtype=torch.float16) | changed
        other = ActivationCache(tmp_path / "c", tiny_backbone, **options)
        other.encode(images[:1])
        assert other.stats.misses == 1, f"{changed} must not reuse the cached entry"
    touched = images[0].clone()
    touched[0, 0, 0] ^= 1
    cache.encode([touched])
    assert cache.stats.misses == 4
    assert "hit rate 43%" in cache.report()


def test_cached_training_features_equal_online_features(tmp_path, tiny_backbone):
    model = cl.build_model("clipseg-rd64", backbone=tiny_backbone)
    images = [SyntheticShapes(2, size=64)[i]["image"] for i in range(2)]
    cache = ActivationCache.for_model(model, tmp_path, storage_dtype=torch.float32)
    acts, grid = cache.encode(images)
    with torch.no_grad():
        cached = model.decode(model.features_from_activations(acts, grid), model.prompt_embeddings(["a", "b"]))
        online = model(model.preprocess(images), ["a", "b"])
    torch.testing.assert_close(cached, online, atol=1e-5, rtol=0)


def test_prepare_writes_a_whole_copy(samples, tmp_path):
    from clipseg_lab.cli import main
    from clipseg_lab.data.prepare import prepare_dataset

    out = tmp_path / "pets"
    manifest = prepare_dataset("oxford_pet", samples / "oxford_pet", out, network_size=64, backbone_size=32)
    counts = {split: info["samples"] for split, info in manifest["splits"].items()}
    assert sum(counts.values()) == 18 and counts["Val"] >= 1
    mask = np.asarray(Image.open(next((out / "Train" / "masks").glob("*.png"))))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 2, 255}  # nearest: no blended labels
    assert Image.open(next((out / "Train" / "images_clip").glob("*.png"))).size == (32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
    from clipseg_lab.errors import OutputDirError

    with pytest.raises(OutputDirError, match="holds another run of `clipseg-lab prepare` .*--overwrite"):
        prepare_dataset("oxford_pet", samples / "oxford_pet", out)  # other sizes: another run
    assert prepare_dataset("oxford_pet", samples / "oxford_pet", out, network_size=64, backbone_size=32) == manifest
    code = main(["prepare", "--dataset", "refcoco", "--data", str(samples / "refcoco" / "refcoco.json"), "--out",
                 str(tmp_path / "refs"), "--placeholder-images", "--network-size", "32", "--backbone-size", "32"])
    assert code == 0 and (tmp_path / "refs" / "Val" / "samples.csv").read_text().count(",True") >= 1


def test_random_template_fills_class_names():
    from clipseg_lab.data.transforms import CLIPSEG_TEMPLATES, RandomTemplate

    torch.manual_seed(4)
    t = RandomTemplate()
    prompts = {t({"prompt": "cat"})["prompt"] for _ in range(40)}
    assert len(prompts) > 3 and prompts <= {x.format("cat") for x in CLIPSEG_TEMPLATES}
    with pytest.raises(ValueError, match="'{}'"):
        RandomTemplate(["a photo"])
