"""Comparing runs and sharing them between notebooks: config merging, seeded subsets, the checkpoints manifest,
reported-vs-this-run tables, and the seeds' recipes under configs/."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from clipseg_lab.engine import TrainConfig
from clipseg_lab.engine.checkpoints import find_checkpoint, load_or_train, publish, read_manifest
from clipseg_lab.engine.compare import comparison_table, merge_config, paired_tests, train_variants
from clipseg_lab.engine.reported import CLIP_UNET_PETS, MODEL_VARIANTS_PHRASECUT, reported_vs_this_run
from tests.conftest import REPO

QUICK = {"epochs": 1, "batch_size": 8, "snapshot_samples": 0, "seed": 0,
         "model": {"name": "clipseg-rd64", "input_size": 96, "options": {"dropout": 0.0}},
         "data": {"options": {"num_scenes": 6, "size": 96}, "val_options": {"num_scenes": 4}}}


def test_merge_config_merges_nested_sections_without_touching_the_base():
    base = {"model": {"name": "a", "options": {"dropout": 0.1, "x": 1}}, "epochs": 3}
    merged = merge_config(base, {"model": {"options": {"dropout": 0.0}}, "epochs": 5})
    assert merged == {"model": {"name": "a", "options": {"dropout": 0.0, "x": 1}}, "epochs": 5}
    assert base["model"]["options"]["dropout"] == 0.1


def test_variants_train_compare_and_publish(tmp_path):
    results = train_variants(QUICK, {"a": {}, "b": {"optim": {"lr": 1e-2}}}, tmp_path / "runs")
    table = comparison_table(results)
    assert list(table.index) == ["a", "b"] and {"iou_fg", "dice", "best_epoch"} <= set(table.columns)
    tests = paired_tests(results, baseline="a")
    assert list(tests.index) == ["b"] and tests.loc["b", "images"] == len(results["a"].best_metrics["image_scores"])
    # identical configs (seeded) would give no differences to test; a different lr gives some
    assert results["a"].best_metrics["image_scores"] != results["b"].best_metrics["image_scores"]

    folder = tmp_path / "checkpoints"
    assert find_checkpoint("a", folder) is None
    path = publish(results["a"], "a", folder, notebook="test")
    entry = read_manifest(folder)["a"]
    assert path.is_file() and entry["model"] == "clipseg-rd64" and entry["backbone_trained"] is False
    assert entry["notebook"] == "test" and entry["best_epoch"] == 1
    model = load_or_train("a", folder)  # published: loaded, not trained
    assert model.name == "clipseg-rd64" and "a.safetensors" in model.provenance.decoder
    assert not (folder / "runs").exists()


def test_load_or_train_trains_when_missing_and_says_what_is_there(tmp_path):
    folder = tmp_path / "checkpoints"
    with pytest.raises(FileNotFoundError, match="no published checkpoint 'x'"):
        load_or_train("x", folder)
    model = load_or_train("x", folder, {**QUICK, "out_dir": "runs/elsewhere"})  # the recipe's out_dir is overridden
    assert find_checkpoint("x", folder) is not None and (folder / "runs" / "x" / "training_log.csv").is_file()
    assert model.provenance.untrained  # the tiny-random backbone stays labelled
    assert not Path("runs/elsewhere").exists()


def test_seeded_subsets_are_fixed_and_sized(tmp_path):
    from clipseg_lab.engine import Trainer

    config = merge_config(QUICK, {"out_dir": str(tmp_path / "r"), "data": {"train_subset": 5, "val_subset": 3}})
    first, second = Trainer(TrainConfig.from_dict(config)), Trainer(TrainConfig.from_dict(config))
    assert len(first.train_loader.dataset) == 5 and len(first.val_data) == 3
    assert first.val_data.indices == second.val_data.indices


def test_reported_and_this_run_never_mix():
    table = reported_vs_this_run(MODEL_VARIANTS_PHRASECUT, {"model0": {"dice": 0.5}, "extra": {"dice": 0.1}})
    assert table.loc[("model0", "dice"), "reported (%)"] == 24.87
    assert table.loc[("model0", "dice"), "this run (%)"] == 50.0
    assert math.isnan(table.loc[("model1", "dice"), "this run (%)"])  # not measured: empty, not copied
    assert math.isnan(table.loc[("extra", "dice"), "reported (%)"])
    pets = reported_vs_this_run(CLIP_UNET_PETS["per_class"], {}, percent=False)
    assert pets.loc[("cat", "iou"), "reported"] == 0.444


def test_the_seeds_recipes_are_the_reported_ones():
    pets = TrainConfig.from_yaml(REPO / "configs" / "pets_clip_unet.yaml")
    assert (pets.batch_size, pets.epochs, pets.optim.lr, pets.optim.weight_decay, pets.optim.schedule,
            pets.optim.poly_power, pets.patience, pets.amp, pets.model.backbone, pets.model.input_size, pets.loss) == \
        (16, 200, 0.005, 1e-4, "poly", 0.9, 15, True, "ViT-B/16", 512, "wce+dice")
    unet = TrainConfig.from_yaml(REPO / "configs" / "pets_unet.yaml")
    assert unet.model.name == "unet" and \
        merge_config(unet.to_dict(), {"model": {"name": "clip-unet"}, "out_dir": 0}) == \
        merge_config(pets.to_dict(), {"out_dir": 0})
    for k in (0, 1, 2):
        variant = TrainConfig.from_yaml(REPO / "configs" / f"phrasecut_model{k}.yaml")
        assert (variant.model.name, variant.epochs, variant.loss, variant.data.dataset) == (f"model{k}", 10, "bce",
                                                                                             "phrasecut")
    refcoco = TrainConfig.from_yaml(REPO / "configs" / "refcoco_transformer_decoder.yaml")
    assert (refcoco.optim.optimizer, refcoco.optim.lr, refcoco.loss) == ("adam", 1e-3, "bce")
    paper = TrainConfig.from_yaml(REPO / "configs" / "clipseg_paper_phrasecut.yaml")
    assert (paper.batch_size, paper.model.input_size, paper.model.name) == (64, 352, "clipseg-rd64")


def test_paired_test_signs_agree_with_the_difference():
    """b - a: a model that scores higher than the baseline gets a positive mean difference and t, and the
    numbers equal scipy's on the same scores."""
    from scipy import stats

    from clipseg_lab.engine.compare import paired_test

    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.35]
    b = [0.2, 0.25, 0.5, 0.45, 0.7, 0.3]
    out = paired_test(a, b)
    assert out["mean_difference"] > 0 and out["t"] > 0
    assert math.isclose(out["t"], stats.ttest_rel(b, a).statistic)
    assert math.isclose(out["wilcoxon_p"], stats.wilcoxon(b, a).pvalue)
    assert paired_test(b, a)["t"] == -out["t"]
