"""The hypothesis test: populations, the statistics against scipy, calibration on synthetic images, bad input,
the dataset run (fixtures and the real samples) and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from clipseg_lab.cli import main
from clipseg_lab.data.masks import MaskError
from clipseg_lab.stats import (
    HypothesisConfig,
    NoBoundaryError,
    adjust_p,
    choose_pair_distance,
    crossing_distances,
    distance_profile,
    hedges_g,
    luma,
    object_labels,
    pair_populations,
    per_image_test,
    random_pairs,
    run_hypothesis,
    run_on_samples,
    run_sample_datasets,
    subsample,
    verdict,
    welch_from_summary,
    welch_test,
)
from clipseg_lab.stats.run import Moments, Subsample
from clipseg_lab.viz.hypothesis import write_report

# 2 x 3 grey image (R = G = B) and labels 1, 2 with one ignored pixel (255)
GRAY = np.array([[0, 10, 40],
                 [2, 12, 50]], np.uint8)
LABELS = np.array([[1, 1, 2],
                   [1, 255, 2]], np.uint8)


def grey_rgb(gray: np.ndarray) -> torch.Tensor:
    """R = G = B, as the loaders give images: a uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.repeat(np.asarray(gray)[None], 3, axis=0).round().astype(np.uint8))


# -- populations -----------------------------------------------------------------------------------------
def test_luma_is_itu_601_2():
    assert luma(grey_rgb(GRAY)).tolist() == GRAY.astype(float).tolist()  # grey pixels keep their value exactly
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ours = luma(rgb)
    np.testing.assert_allclose(ours, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], atol=1e-9)
    pil = np.asarray(Image.fromarray(rgb).convert("L"), float)  # PIL's ITU-R 601-2, rounded to integers
    assert np.abs(ours - pil).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(luma(np.moveaxis(rgb, -1, 0)), ours)  # channels first
    np.testing.assert_array_equal(luma(torch.from_numpy(np.moveaxis(rgb, -1, 0))), ours)  # a loader's tensor
    square = np.random.default_rng(1).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(luma(torch.from_numpy(square))[0], luma(np.moveaxis(square, 0, -1))[0])


def test_neighbour_populations_of_a_hand_made_image():
    pops = pair_populations(grey_rgb(GRAY), LABELS, distance=1, neighbourhood=4)
    assert sorted(pops.inside.tolist()) == [2, 10, 10] and pops.across.tolist() == [30]
    pops = pair_populations(grey_rgb(GRAY), LABELS, distance=1, neighbourhood=8)
    assert sorted(pops.inside.tolist()) == [2, 8, 10, 10] and sorted(pops.across.tolist()) == [30, 40]
    pops = pair_populations(GRAY, LABELS, distance=2)  # grayscale input; pairs two pixels apart
    assert pops.inside.size == 0 and sorted(pops.across.tolist()) == [40, 48]
    assert pops.inside.dtype == pops.across.dtype == np.float32
    described = pair_populations(GRAY, LABELS).describe()
    assert described["n_A"] == 3 and described["mean_A"] == pytest.approx(22 / 3) and described["mean_B"] == 30


def test_distance_spans_an_ignore_band():
    labels = np.zeros((12, 20), np.uint8)
    labels[:, 10:] = 1
    labels[:, 8:13] = 255  # a 5-pixel band, like a trimap's
    gray = np.where(labels == 1, 200, 20).astype(np.uint8)
    assert pair_populations(gray, labels, distance=5).across.size == 0
    across = pair_populations(gray, labels, distance=6).across
    assert across.size == 12 and set(across.tolist()) == {180}  # one pair per row, from x=7 to x=13
    choice = choose_pair_distance([object_labels(labels)])
    assert choice["distance"] == 6 and choice["median_crossing"] == 6
    touching = np.repeat([[0] * 5 + [1] * 5], 4, axis=0)
    assert choose_pair_distance([object_labels(touching)])["distance"] == 1
    assert set(crossing_distances(object_labels(touching)).tolist()) == {1.0}


def test_random_pairs_follow_the_objects():
    labels = np.repeat(np.repeat(np.array([[1, 2], [3, 3]]), 8, axis=0), 8, axis=1)
    value = {1: 10, 2: 50, 3: 200}
    gray = np.vectorize(value.get)(labels).astype(np.uint8)
    pops = random_pairs(gray.astype(float), object_labels(labels), n_pairs=500, seed=3)
    assert pops.n_inside == pops.n_across == 500
    assert not pops.inside.any()  # same object: same flat value
    assert set(pops.across.tolist()) <= {40, 150, 190} and len(set(pops.across.tolist())) == 3
    again = pair_populations(gray, labels, mode="random", n_pairs=500, seed=3)
    np.testing.assert_array_equal(again.across, pops.across)  # seeded
    # literal wording: each pixel of a pair is a pixel of an object; no pair joins a pixel with itself
    noise = np.random.default_rng(0).normal(100, 20, labels.shape)
    assert (random_pairs(noise, object_labels(labels), 2000, 1).inside > 0).all()


def test_components_split_a_class_into_objects():
    labels = np.array([[1, 0, 1]])
    assert object_labels(labels).tolist() == [[1, 0, 1]]
    comp = object_labels(labels, objects="components")
    assert comp[0, 0] != comp[0, 2] and len(set(comp.ravel().tolist())) == 3


# -- statistics against scipy ------------------------------------------------------------------------------
def test_welch_equals_scipy_on_the_same_samples():
    rng = np.random.default_rng(5)
    inside, across = rng.gamma(2.0, 5.0, 700).astype(np.float32), rng.gamma(2.5, 6.0, 90).astype(np.float32)
    ours = welch_test(across, inside)
    ref = stats.ttest_ind(across.astype(float), inside.astype(float), equal_var=False)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-12) and ours.dof == pytest.approx(ref.df, rel=1e-12)
    assert ours.p_two_sided == pytest.approx(ref.pvalue, rel=1e-10)
    one = stats.ttest_ind(across.astype(float), inside.astype(float), equal_var=False, alternative="greater")
    assert ours.p_one_sided == pytest.approx(one.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # the same test from summary statistics (how every pair of a dataset is tested) gives the same numbers
    summary = welch_from_summary(ours.n_A, ours.mean_A, ours.sd_A, ours.n_B, ours.mean_B, ours.sd_B)
    for field in ("t", "dof", "p_two_sided", "p_one_sided", "ci_low", "ci_high", "hedges_g"):
        assert getattr(summary, field) == pytest.approx(getattr(ours, field), rel=1e-9), field
    # Hedges' g: pooled-sd Cohen's d with the small-sample correction
    pooled = np.sqrt(((699) * inside.var(ddof=1) + 89 * across.var(ddof=1)) / 788)
    d = (across.mean() - inside.mean()) / pooled
    assert ours.hedges_g == pytest.approx(d * (1 - 3 / (4 * 790 - 9)), rel=1e-5)
    assert math.isnan(welch_test(across[:1], inside).t)  # too few pairs: NaN, not an exception


def test_verdict_in_the_seed_style():
    v = verdict(5.0, 1e6, p_value=1e-7)
    assert v["critical_inf"] == 3.291 and v["critical_exact"] == pytest.approx(3.2905, abs=1e-3)
    assert v["reject"] and "supports the hypothesis" in v["verdict"] and "3.291" in v["verdict"]
    assert verdict(3.3, 20)["reject"] is False  # 3.3 < t.ppf(0.9995, 20) = 3.85
    assert "contradicts" in verdict(-9.0, 50)["verdict"]
    assert "p < 1e-300" in verdict(80.0, 1e4, p_value=0.0)["verdict"]


def test_subsampling():
    values = np.arange(100)
    assert subsample(values, "every:10").tolist() == list(range(0, 100, 10))
    picked = subsample(values, "random:7", seed=1)
    assert picked.size == 7 and np.array_equal(picked, subsample(values, "random:7", seed=1))
    assert subsample(values, "random:500").size == 100 and subsample(values, "none").size == 100
    assert np.array_equal(subsample(values, "7", seed=1), picked)  # digits: N random pairs
    with pytest.raises(ValueError, match="every:K"):
        subsample(values, "half")
    # the pipeline's random subsample is uniform over all pairs of all images (smallest uniform keys)
    sub, rng = Subsample("random:300"), np.random.default_rng(0)
    for part in np.array_split(np.arange(3000, dtype=np.float32), [100, 2900]):  # very unequal images
        sub.add(part, rng)
    kept = sub.array()
    assert kept.size == 300 and np.unique(kept).size == 300 and 1000 < kept.mean() < 2000


def test_p_value_adjustment_across_datasets():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005])
    holm = adjust_p(p, "holm")  # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running maximum
    np.testing.assert_allclose(holm[[4, 0, 3, 1]], [0.02, 0.03, 0.06, 0.06])
    assert math.isnan(holm[2])
    np.testing.assert_allclose(adjust_p(p, "bonferroni")[[0, 1, 3, 4]], [0.04, 0.16, 0.12, 0.02])
    bh = stats.false_discovery_control([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjust_p(p, "bh")[[0, 1, 3, 4]], bh)
    assert (holm[np.isfinite(p)] <= adjust_p(p, "bonferroni")[np.isfinite(p)]).all()
    assert np.isnan(adjust_p([np.nan])).all()
    with pytest.raises(ValueError, match="holm"):
        adjust_p(p, "sidak")


def test_moments_merge_exactly():
    rng = np.random.default_rng(2)
    parts = [rng.normal(m, 3, n).astype(np.float32) for m, n in ((1, 50), (9, 4000), (4, 3))]
    total = Moments()
    for p in parts:
        total.add(p)
    every = np.concatenate(parts).astype(float)
    assert total.n == every.size and total.mean == pytest.approx(every.mean())
    assert total.sd == pytest.approx(every.std(ddof=1))


# -- calibration: a huge effect, and no effect -------------------------------------------------------------
def _flat_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((48, 64), np.uint8)
    labels[8:30, 6:30] = 1
    labels[20:44, 36:60] = 2
    gray = np.choose(labels, [30.0, 120.0, 220.0]) + rng.normal(0, 1.0, labels.shape)
    return grey_rgb(np.clip(gray, 0, 255)), labels


def test_flat_objects_with_sharp_edges_give_a_huge_effect():
    image, labels = _flat_scene(0)
    pops = pair_populations(image, labels)
    w = welch_test(pops.across, pops.inside)
    assert pops.inside.mean() < 2 and pops.across.mean() > 80
    assert w.t > 20 and w.hedges_g > 10 and w.p_one_sided < 1e-80
    assert verdict(w.t, w.dof)["reject"]


def test_pure_noise_with_a_random_mask_rejects_at_the_nominal_rate():
    """Over 200 seeds, the pipeline's subsampled Welch test (and Mann-Whitney U) at alpha 0.05 rejects 2-9 % of
    the time on pure noise with a random block mask (64 x 64, 8 x 8 blocks of 3 labels, 100 random pairs per
    population: Welch 4.0 % and Mann-Whitney 3.5 % on these 200 seeds, 4.7 % and 5.1 % over 1000). The subsample
    must be sparse: A and B pairs that share a pixel are positively correlated, which makes the test
    conservative when most of the B pairs are drawn (40 x 40 images with 150 pairs: 1 % on 200 seeds)."""
    rejections = {"sub_p_value": 0, "mwu_p_two_sided": 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        gray = rng.normal(128, 30, (64, 64))
        labels = np.kron(rng.integers(0, 3, (8, 8)), np.ones((8, 8), int)).astype(np.uint8)
        row = run_on_samples([{"image": gray, "mask": labels, "name": f"noise{seed}"}], label="noise",
                             config=HypothesisConfig(pair_distance=1, subsample="random:100", seed=seed)).rows[0]
        assert row["sub_n_A"] == row["sub_n_B"] == 100
        for key in rejections:
            rejections[key] += row[key] < 0.05
    for key, count in rejections.items():
        assert 0.02 <= count / 200 <= 0.09, (key, count)


# -- per-image test ----------------------------------------------------------------------------------------
def test_per_image_test_handles_images_without_boundary_pairs():
    inside = np.array([5.0, 6.0, 4.0, 7.0, 5.5])
    across = np.array([9.0, np.nan, 8.5, 12.0, 10.0])  # image 2: no boundary pair at this distance
    out = per_image_test(inside, across)
    assert out["images_used"] == 4 and out["images_without_pairs"] == 1
    ref = stats.ttest_rel(across[[0, 2, 3, 4]], inside[[0, 2, 3, 4]])
    assert out["image_t"] == pytest.approx(ref.statistic) and out["image_p_two_sided"] == pytest.approx(ref.pvalue)
    used = [0, 2, 3, 4]
    assert out["wilcoxon_p_two_sided"] == pytest.approx(stats.wilcoxon(across[used], inside[used]).pvalue)
    single = per_image_test(np.array([1.0, 2.0]), np.array([np.nan, 3.0]))
    assert math.isnan(single["image_t"]) and "at least 2" in single["image_note"]
    # through the dataset run: a mask whose boundary band is wider than the pair distance
    banded = np.zeros((20, 20), np.uint8)
    banded[:, 10:] = 1
    banded[:, 7:13] = 255
    samples = [dict(zip(("image", "mask"), _flat_scene(s)), name=f"flat{s}") for s in range(3)]
    samples.append({"image": grey_rgb(np.full((20, 20), 90, np.uint8)), "mask": banded, "name": "banded"})
    result = run_on_samples(samples, config=HypothesisConfig(pair_distance=2))
    row = result.rows[0]
    assert row["images"] == 4 and row["images_used"] == 3 and row["images_without_pairs"] == 1
    assert row["image_t"] > 0 and row["skipped"] == 0


# -- bad input ----------------------------------------------------------------------------------------------
def test_bad_input_gets_clear_messages():
    with pytest.raises(MaskError, match=r"cat\.png: mask is 3x2 \(WxH\) but the image is 4x2"):
        pair_populations(np.zeros((2, 4)), LABELS, source="cat.png")
    with pytest.raises(NoBoundaryError, match="single object label"):
        pair_populations(np.zeros((2, 3)), np.ones((2, 3)), source="one.png")
    with pytest.raises(NoBoundaryError, match="every pixel of the mask is ignored"):
        pair_populations(np.zeros((2, 3)), np.full((2, 3), 255))
    with pytest.raises(ValueError, match="neighbourhood must be 4 or 8"):
        pair_populations(GRAY, LABELS, neighbourhood=6)
    with pytest.raises(ValueError, match="pair_distance"):
        HypothesisConfig(pair_distance=0)


def test_the_run_continues_past_bad_images_and_reports_them():
    good = [dict(zip(("image", "mask"), _flat_scene(s)), name=f"good{s}") for s in range(2)]
    bad = [{"image": grey_rgb(GRAY), "mask": np.zeros((3, 3), np.uint8), "name": "wrong_size"},
           {"image": grey_rgb(GRAY), "mask": np.ones((2, 3), np.uint8), "name": "single_label"},
           {"image": grey_rgb(GRAY), "mask": np.full((2, 3), 255, np.uint8), "name": "all_ignore"},
           {"image": grey_rgb(GRAY), "mask": LABELS, "name": "placeholder", "placeholder": True}]
    result = run_on_samples(good[:1] + bad + good[1:], label="mixed", config=HypothesisConfig(pair_distance=1))
    assert result.rows[0]["images"] == 2 and result.rows[0]["skipped"] == 4
    reasons = {s["name"]: s["reason"] for s in result.skipped}
    assert "same size" in reasons["wrong_size"] and "single object label" in reasons["single_label"]
    assert "ignored" in reasons["all_ignore"] and "placeholder" in reasons["placeholder"]


def _pet_fixture(root):
    """Oxford Pet layout (list.txt, no split files; trimaps 1 pet, 2 background, 3 boundary band) with three good
    images and four bad ones: a trimap of the wrong size, an all-boundary (all-ignore) trimap, an all-background
    (single-label) trimap, and a missing trimap."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    names = ["Abyssinian_1", "Bengal_2", "beagle_3", "Sphynx_4", "boxer_5", "pug_6", "Persian_7"]
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        trimap = np.full((40, 50), 2, np.uint8)
        trimap[10:30, 12:38] = 3
        trimap[13:27, 15:35] = 1  # the pet, inside a 3-pixel band
        gray = np.where(trimap == 1, 180.0, 40.0) + rng.normal(0, 3, trimap.shape)
        Image.fromarray(np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, -1)).save(
            root / "images" / f"{name}.jpg", quality=95)
        if name == "Sphynx_4":
            trimap = trimap[:, :45]  # wrong size
        elif name == "boxer_5":
            trimap[:] = 3  # all boundary: every pixel ignored
        elif name == "pug_6":
            trimap[:] = 2  # background only: no boundary
        if name != "Persian_7":
            Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    lines = [f"{n} {k + 1} {1 if n[0].isupper() else 2} 1" for k, n in enumerate(names)]
    (root / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(lines) + "\n")
    return root


def test_a_dataset_run_continues_past_bad_files_and_reports_them(tmp_path, capsys):
    root = _pet_fixture(tmp_path / "pet")
    result = run_hypothesis("oxford_pet", root, HypothesisConfig(subsample="random:500"), splits=["all"])
    row = result.rows[0]
    assert row["images"] == 3 and row["skipped"] == 4 and row["pair_distance"] == 4  # spans the 3-px band
    assert row["mean_B"] > 100 and row["mean_A"] < 10 and row["reject_subsample"]
    reasons = {s["name"].rsplit("/", 1)[-1]: s["reason"] for s in result.skipped}
    assert "Sphynx_4.png: mask is 45x40" in reasons["Sphynx_4"] and "is 50x40" in reasons["Sphynx_4"]
    assert "every pixel of the mask is ignored" in reasons["boxer_5"]
    assert "single object label" in reasons["pug_6"]
    assert reasons["Persian_7.png"] == "not loaded: trimap missing"
    code = main(["hypothesis", "--dataset", "oxford_pet", "--data", str(root), "--out", str(tmp_path / "out"),
                 "--split", "all", "--subsample", "500"])
    err = capsys.readouterr().err
    assert code == 0 and "skipped 4 image(s)" in err and "1 x not loaded: trimap missing" in err
    assert len((tmp_path / "out" / "hypothesis_skipped.csv").read_text().splitlines()) == 5


def test_referring_datasets_with_images(tmp_path, samples):
    """PhraseCut (a fixture in its format) and RefCOCO (the real annotations, one COCO image stood in by a picture
    of the right size): a referred object vs the rest of the image; missing images are skipped and reported."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_data_loaders import _phrasecut_fixture

    result = run_hypothesis("phrasecut", _phrasecut_fixture(tmp_path), HypothesisConfig(subsample="none"))
    assert [r["split"] for r in result.rows] == ["val"] and result.rows[0]["images"] == 2
    assert result.skipped[0]["reason"] == "not loaded: image file missing"
    assert any("phrasecut train: not available" in n for n in result.notes)

    annotations = samples / "refcoco" / "refcoco.json"
    info = next(iter(json.loads(annotations.read_text())["coco_anns"].values()))["info"]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (info["height"], info["width"], 3), dtype=np.uint8)).save(
        tmp_path / info["file_name"])
    result = run_hypothesis("refcoco", annotations, HypothesisConfig(limit=None), image_dir=tmp_path)
    assert result.rows and sum(r["images"] for r in result.rows if r["split"] != "all") >= 1
    assert all(r["n_B"] > 0 for r in result.rows)
    assert {s["reason"].split(":")[0] for s in result.skipped} <= {
        "placeholder image", "the same image and mask as an earlier sample (another prompt for one object)"}


# -- model-predicted masks ---------------------------------------------------------------------------------
def test_predicted_masks_work_directly():
    """A "prediction" (a thresholded probability map, no CLIP needed) is just another mask."""
    image, truth = _flat_scene(1)
    probability = np.clip(luma(image) / 255 + np.random.default_rng(0).normal(0, 0.02, truth.shape), 0, 1)
    predicted = (probability > 0.3).astype(np.uint8)  # a binary "object" mask from thresholding
    result = run_on_samples([{"image": image, "mask": predicted, "name": "pred"}], label="predicted")
    row = result.rows[0]
    assert row["dataset"] == "predicted" and row["pair_distance"] == 1 and row["n_B"] > 0
    assert row["reject_all_pairs"] and row["hedges_g"] > 3


def test_a_segmenter_s_predictions(tiny_backbone):
    """The masks a (tiny-random, untrained) CLIPSeg model predicts go through the same test, labelled as such."""
    import clipseg_lab as cl
    from clipseg_lab.stats import prediction_to_mask, run_on_predictions
    from clipseg_lab.stats.predicted import predicted_samples

    probs = torch.tensor([[[0.9, 0.2], [0.6, 0.1]], [[0.3, 0.7], [0.8, 0.4]]])
    assert prediction_to_mask(probs).tolist() == [[1, 2], [2, 0]]
    assert prediction_to_mask(probs[0], 0.5).tolist() == [[1, 0], [1, 0]]
    segmenter = cl.Segmenter(cl.build_model("clipseg-rd64", backbone=tiny_backbone))
    samples = [{"image": _flat_scene(s)[0], "name": f"scene{s}", "prompt": "a square"} for s in range(2)]
    samples.append(("broken.png", OSError("unreadable")))
    # threshold 0: every pixel goes to its most probable prompt, so the masks have two labels whatever the model
    result = run_on_predictions(segmenter, samples, ["a square", "the background"], threshold=0.0,
                                config=HypothesisConfig(pair_distance=1, subsample="none"))
    assert "untrained backbone" in result.rows[0]["dataset"] and result.rows[0]["images"] == 2
    assert result.skipped[0]["name"] == "broken.png" and result.rows[0]["n_B"] > 0
    # a multi-class model needs no prompt: its most probable class per pixel is the mask
    unet = cl.build_model("clip-unet", backbone=tiny_backbone, num_classes=3, input_size=64, channels=[8, 16],
                          dropout=[0, 0])
    masks = list(predicted_samples(unet, samples[:2]))
    assert masks[0]["mask"].shape == (48, 64) and masks[0]["mask"].max() <= 2 and "clip-unet" in masks[0]["model"]


# -- the dataset run and its outputs ------------------------------------------------------------------------
def _pennfudan_fixture(root, count=4):
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for k in range(count):
        image, labels = _flat_scene(k)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "PNGImages" / f"P{k}.png")
        Image.fromarray(labels).save(root / "PedMasks" / f"P{k}_mask.png")
    Image.fromarray(np.ones((48, 64), np.uint8)).save(root / "PedMasks" / f"P{count - 1}_mask.png")  # one label


def test_write_report_and_figure(tmp_path):
    _pennfudan_fixture(tmp_path / "pf")
    result = run_hypothesis("pennfudan", tmp_path / "pf", HypothesisConfig(subsample="every:3"))
    assert [r["split"] for r in result.rows] == ["all"] and result.rows[0]["images"] == 3
    assert len(result.skipped) == 1 and "single object label" in result.skipped[0]["reason"]
    files = write_report(result, tmp_path / "out", profile="test")
    record = json.loads(files["json"].read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert record["rows"][0]["n_A"] > 0 and record["skipped"][0]["name"] == "P3"
    assert files["figure"].is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["hypothesis_distributions.png"]["data"] == "pennfudan"


def test_cli_hypothesis(tmp_path, capsys):
    _pennfudan_fixture(tmp_path / "pf")
    out = tmp_path / "out"
    code = main(["hypothesis", "--dataset", "pennfudan", "--data", str(tmp_path / "pf"), "--out", str(out),
                 "--pair-distance", "2", "--subsample", "random:500"])
    captured = capsys.readouterr()
    assert code == 0 and "supports the hypothesis" in captured.out and "skipped 1 image" in captured.err
    import pandas as pd

    table = pd.read_csv(out / "hypothesis.csv")
    required = ["dataset", "n_A", "n_B", "mean_A", "sd_A", "mean_B", "sd_B", "welch_t", "dof", "p_value", "ci_low",
                "ci_high", "hedges_g", "mwu_U", "mwu_p_two_sided", "image_p_two_sided", "critical_99_9_inf"]
    assert set(required) <= set(table.columns) and table.loc[0, "pair_distance"] == 2
    assert table.loc[0, "sub_n_A"] == 500
    assert (out / "hypothesis_distributions.png").is_file() and (out / "hypothesis_skipped.csv").is_file()
    assert main(["hypothesis", "--dataset", "pennfudan", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o2")]) == 1
    assert "PNGImages" in capsys.readouterr().err
    assert main(["hypothesis", "--dataset", "nope", "--data", ".", "--out", str(tmp_path / "o3")]) == 2
    capsys.readouterr()
    for flag, value, message in [("--subsample", "half", "every:K"), ("--pair-distance", "x", "pair_distance")]:
        assert main(["hypothesis", "--dataset", "pennfudan", "--data", str(tmp_path / "pf"), "--out",
                     str(tmp_path / "o4"), flag, value]) == 2
        assert message in capsys.readouterr().err


# -- the real samples --------------------------------------------------------------------------------------
REAL = [("oxford_pet", "oxford_pet"), ("potsdam", "remote_sensing/potsdam"), ("loveda", "remote_sensing/loveda"),
        ("cityscapes", "cityscapes"), ("pennfudan", "pennfudan")]


@pytest.mark.parametrize("name,folder", REAL, ids=[n for n, _ in REAL])
def test_real_samples_support_the_hypothesis(samples, name, folder):
    config = HypothesisConfig(limit=4, subsample="random:3000")
    result = run_hypothesis(name, samples / folder, config)
    assert result.rows and not result.skipped, result.notes
    row = result.rows[-1]
    assert row["n_B"] > 0 and row["mean_B"] > row["mean_A"] and row["reject_subsample"]
    if name == "oxford_pet":  # the trimap band: d = 1 would find (almost) no boundary pair
        assert result.distances[name]["distance"] >= 15 and [r["split"] for r in result.rows][-1] == "all"


def test_real_refcoco_sample_has_no_images_and_is_skipped(samples):
    result = run_hypothesis("refcoco", samples / "refcoco" / "refcoco.json")
    assert not result.rows and result.skipped
    assert all("placeholder" in s["reason"] for s in result.skipped)
    assert any("no usable image" in n for n in result.notes)


def test_distance_profile_on_a_real_sample(samples):
    from clipseg_lab.data.pennfudan import PennFudan

    data = PennFudan(samples / "pennfudan")
    rows = distance_profile([data[0]], [1, 4], "pennfudan")
    assert [r["pair_distance"] for r in rows] == [1, 4] and all(r["mean_B"] > r["mean_A"] for r in rows)
    assert rows[1]["mean_A"] > rows[0]["mean_A"]  # farther pairs differ more, even inside an object
    assert hedges_g(1.0, 1.0, 10, 2.0, 1.0, 10) > 0


def test_random_mode_headline_and_summary(tmp_path):
    from clipseg_lab.stats.report import data_description, headline_table, summarise

    _pennfudan_fixture(tmp_path / "pf")
    result = run_hypothesis("pennfudan", tmp_path / "pf", HypothesisConfig(mode="random", random_pairs=300))
    row = result.rows[0]
    assert row["pair_distance"] is None and row["n_A"] == row["n_B"] == 900 and row["hedges_g"] > 1
    table = headline_table(result)
    assert {"sub_p_value_holm", "sub_p_value_bonferroni", "sub_p_value_bh", "image_p_two_sided_holm"} <= set(
        table.columns)
    assert "pennfudan (all, 3 image(s), random pairs)" in summarise(result)
    assert data_description(result, "x") == "real samples (x): pennfudan"


def test_without_samples_the_folder_run_falls_back_to_synthetic_shapes(tmp_path):
    from clipseg_lab.stats import sample_distance_profile
    from clipseg_lab.stats.report import data_description

    result = run_sample_datasets(tmp_path / "none", HypothesisConfig(), synthetic_fallback=3)
    assert [r["dataset"] for r in result.rows] == ["synthetic_shapes"] and "SyntheticShapes" in result.notes[-1]
    assert "synthetic" in data_description(result)
    assert not run_sample_datasets(tmp_path / "none").rows  # no fallback unless asked
    rows = sample_distance_profile(tmp_path / "none", [1, 3], synthetic_fallback=2)
    assert [r["pair_distance"] for r in rows] == [1, 3]


def test_cli_hypothesis_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "clipseg_lab.cli", "hypothesis", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--pair-distance" in out.stdout and "--subsample" in out.stdout
