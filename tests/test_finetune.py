"""Fine-tuning (`model.init_from`): training starts from saved, Hugging Face or original CLIPSeg weights, with
the loaded weights' validation score as epoch 0, which is also the first candidate for the best checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import clipseg_lab as cl
from clipseg_lab.engine import ConfigError, TrainConfig, Trainer, train
from clipseg_lab.models.checkpoint import read_checkpoint_meta
from clipseg_lab.models.clipseg import decoder_state_to_hf
from clipseg_lab.models.clipseg_weights import hf_to_original_decoder
from clipseg_lab.viz.analysis import plot_epoch_strips
from tests.conftest import small_hf_clipseg

SHAPES = {"radius": [0.16, 0.25], "max_shapes": 3, "distractors": "distinct_colours"}


def _config(out, cache, *, size=96, scenes=32, epochs=15, **changes) -> dict:
    """Settings that learn in seconds on the tiny-random backbone (activations cached after the first epoch)."""
    config = {"out_dir": str(out), "epochs": epochs, "batch_size": 8, "loss": "bce+dice", "seed": 0, "device": "cpu",
              "snapshot_samples": 0, "cache_dir": str(cache),
              "model": {"name": "clipseg-rd64", "input_size": size, "options": {"dropout": 0.0}},
              "data": {"dataset": "synthetic_shapes", "options": {"num_scenes": scenes, "size": size, **SHAPES},
                       "val_options": {"num_scenes": 8}},
              "optim": {"lr": 3e-3, "schedule": "constant"}}
    config.update(changes)
    return config


def _epochs(run) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader((run / "training_log.csv").open())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A clipseg-rd64 decoder trained from scratch: its run folder (with checkpoints/best.safetensors)."""
    root = tmp_path_factory.mktemp("finetune")
    result = train(_config(root / "scratch", root / "cache"))
    assert result.best_epoch > 0 and _epochs(result.out_dir)[0] == 1  # no epoch 0 without init_from
    return root, result


def test_fine_tuning_starts_at_the_saved_score_and_resumes(trained, tmp_path):
    root, scratch = trained
    best = scratch.best_metrics["iou_fg"]

    # a fresh random decoder's epoch 0 (epochs: 0 = just the initial validation), for "not random" below
    random_file = cl.save_model(cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=96, dropout=0.0),
                                tmp_path / "random.safetensors")
    fresh = train(_config(tmp_path / "random", root / "cache", epochs=0,
                          model={"name": "clipseg-rd64", "input_size": 96, "init_from": str(random_file)}))
    assert [r["epoch"] for r in fresh.history] == [0] and fresh.epochs_run == 0 and fresh.best_epoch == 0
    random_score = fresh.history[0]["iou_fg"]

    # as `clipseg-lab train --config c.yaml --init-from X` does: set after reading the YAML
    TrainConfig.from_dict(_config(tmp_path / "ft", root / "cache", epochs=2)).to_yaml(tmp_path / "c.yaml")
    config = TrainConfig.from_yaml(tmp_path / "c.yaml")
    config.model.init_from = scratch.best_checkpoint
    tuned = train(config)
    epoch0 = tuned.history[0]
    assert epoch0["epoch"] == 0 and "train_loss" not in epoch0
    assert epoch0["iou_fg"] == pytest.approx(best, abs=1e-6), (epoch0["iou_fg"], best)
    assert best > random_score + 0.2, (best, random_score)
    assert tuned.best_metrics["iou_fg"] >= epoch0["iou_fg"]  # epoch 0 is a candidate: never worse than the start

    out = tuned.out_dir
    assert _epochs(out) == [0, 1, 2]
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["config"]["model"]["init_from"] == str(scratch.best_checkpoint)
    assert "fine-tuning from" in saved["provenance"]["decoder"]
    assert read_checkpoint_meta(tuned.best_checkpoint)["info"]["fine_tuned_from"] == str(scratch.best_checkpoint)
    assert f"fine-tuned from {scratch.best_checkpoint}" in tuned.provenance.decoder

    config.epochs, config.resume = 3, True  # resume: the epoch-0 row is kept once, training goes on at epoch 3
    resumed = train(config)
    assert _epochs(out) == [0, 1, 2, 3] and resumed.epochs_run == 3


def test_fine_tuning_from_a_hugging_face_clipseg_directory(tmp_path):
    hf = tmp_path / "hf_clipseg"
    small_hf_clipseg().save_pretrained(hf)  # reduce_dim 16, layers 1,2,3, its own 64 px CLIP (patch 16)
    config = _config(tmp_path / "run", tmp_path / "cache", size=64, scenes=4, epochs=1,
                     model={"name": "clipseg-rd16", "input_size": 64, "options": {"dropout": 0.0},
                            "init_from": str(hf)})
    trainer = Trainer(TrainConfig.from_dict(config))
    loaded = cl.load_model(hf, device="cpu")
    assert trainer.model.backbone.source == loaded.backbone.source  # the directory's own CLIP, not tiny-random
    assert trainer.model.backbone.name == str(hf.resolve())  # named by what loads it again
    assert trainer.model.config.extract_layers == (1, 2, 3) and trainer.model.input_size == 64
    assert getattr(trainer.model, "normalization", None) == getattr(loaded, "normalization", None)  # kept
    for key, value in loaded.decoder.state_dict().items():
        assert torch.equal(trainer.model.decoder.state_dict()[key], value), key
    result = trainer.fit()
    assert [r["epoch"] for r in result.history] == [0, 1]
    again = cl.load_model(result.best_checkpoint, device="cpu")  # its CLIP is found again by the stored name
    assert again.config.extract_layers == (1, 2, 3) and again.input_size == 64
    norm = [getattr(getattr(m, "normalization", None), "mean", None) for m in (again, loaded)]
    assert norm[0] == norm[1]  # and the preprocessing it was fine-tuned with
    assert torch.equal(again.backbone.clip.visual_projection.weight, loaded.backbone.clip.visual_projection.weight)

    config["model"]["backbone"] = "ViT-L/14"  # a CLIPSeg model brings its own CLIP (ViT-B/16): one clear error
    with pytest.raises(ConfigError, match="brings its own CLIP"):
        Trainer(TrainConfig.from_dict(config))


def test_fine_tuning_from_an_original_clipseg_pth(tmp_path):
    source = cl.build_model("clipseg-rd64", backbone="tiny-random", seed=5)  # reads the released layers 3, 6, 9
    pth = tmp_path / "rd64-uni.pth"
    torch.save(hf_to_original_decoder(decoder_state_to_hf(source.decoder.state_dict())), pth)
    config = _config(tmp_path / "run", tmp_path / "cache", scenes=4, epochs=1, snapshot_samples=2,
                     model={"name": "clipseg-rd64", "input_size": 96, "init_from": str(pth)})
    trainer = Trainer(TrainConfig.from_dict(config))
    for key, value in source.decoder.state_dict().items():
        assert torch.equal(trainer.model.decoder.state_dict()[key], value), key
    result = trainer.fit()
    assert [r["epoch"] for r in result.history] == [0, 1] and "rd64-uni.pth" in result.provenance.decoder
    fig = plot_epoch_strips(result.out_dir)  # the strips start at the loaded weights' predictions
    assert [ax.get_title() for ax in fig.axes[2:4]] == ["epoch 0", "epoch 1"]


def test_a_config_that_contradicts_the_checkpoint_is_one_clear_error(trained, tmp_path):
    _, scratch = trained
    model = {"name": "model0", "input_size": 96, "init_from": str(scratch.best_checkpoint)}
    with pytest.raises(ConfigError, match=r"holds a clipseg-rd64 decoder, but model.name is 'model0'.*"
                                          r"set model.name: clipseg-rd64"):
        Trainer(TrainConfig.from_dict(_config(tmp_path / "a", tmp_path / "cache", model=model)))
    model = {"name": "clipseg-rd64", "init_from": str(scratch.best_checkpoint), "options": {"reduce_dim": 16}}
    with pytest.raises(ConfigError, match=r"reduce_dim: 16 \(stored: 64\)"):
        Trainer(TrainConfig.from_dict(_config(tmp_path / "b", tmp_path / "cache", model=model)))
    # model1 is the same decoder as clipseg-rd64 under another name: accepted, and named as the config says
    model = {"name": "model1", "input_size": 96, "init_from": str(scratch.best_checkpoint)}
    trainer = Trainer(TrainConfig.from_dict(_config(tmp_path / "c", tmp_path / "cache", scenes=2, model=model)))
    assert trainer.model.name == trainer.model.provenance.model == "model1"
