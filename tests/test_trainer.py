"""The trainer: configs, outputs, resume, NaN handling, early stopping, cached vs online training."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from clipseg_lab.cli import main
from clipseg_lab.engine import ConfigError, TrainConfig, Trainer, train
from clipseg_lab.viz.analysis import plot_epoch_strips
from tests.conftest import REPO


def _config(tmp_path, **changes) -> dict:
    config = {"out_dir": str(tmp_path / "run"), "epochs": 2, "batch_size": 8,
              "model": {"input_size": 96, "options": {"dropout": 0.0}},
              "data": {"options": {"num_scenes": 8, "size": 96}}, "snapshot_samples": 2}
    for key, value in changes.items():
        config[key] = value
    return config


def test_unknown_config_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        TrainConfig.from_dict({"optim": {"lrr": 0.1}})
    (tmp_path / "c.yaml").write_text("epochs: 2\nbatchsize: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key\(s\): batchsize"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"does not fit clipseg-rd64 \(binary targets\)"):
        Trainer(TrainConfig.from_dict(_config(tmp_path, loss="wce+dice")))


def test_repository_configs_parse():
    for path in (REPO / "configs").glob("*.yaml"):
        TrainConfig.from_yaml(path)


def test_training_writes_everything_and_resumes(tmp_path):
    result = train(_config(tmp_path))
    out = result.out_dir
    for name in ("training_config.json", "training_log.csv", "evaluation_results.json", "checkpoints/best.safetensors",
                 "checkpoints/last.safetensors", "checkpoints/trainer_state.pt", "snapshots/epoch_002.npz"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[1]["lr"]) < float(rows[0]["lr"])  # poly decay
    assert json.loads((out / "training_config.json").read_text())["provenance"]["backbone_trained"] is False
    assert "hit rate" in json.loads((out / "evaluation_results.json").read_text())["cache"]
    resumed = train(_config(tmp_path, epochs=3, resume=True))
    assert [int(r["epoch"]) for r in csv.DictReader((out / "training_log.csv").open())] == [1, 2, 3]
    assert resumed.epochs_run == 3
    fig = plot_epoch_strips(out)  # the "over the epochs" strips: image | truth | epochs 1..3, one row per sample
    assert len(fig.axes) == 2 * (2 + 3) and fig.axes[4].get_title() == "epoch 3"
    other = _config(tmp_path, epochs=4, resume=True)
    other["model"] = {**other["model"], "name": "model0"}
    with pytest.raises(ConfigError, match="resume: .* holds clipseg-rd64"):
        train(other)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(TrainConfig.from_dict(_config(tmp_path, epochs=3)))
    calls = {"n": 0}
    real = trainer.loss_fn

    def flaky(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] > 3 else loss  # epoch 1 = 1 train step + val, then NaN

    trainer.loss_fn = flaky
    result = trainer.fit()
    assert "NaN" in result.stopped or "nan" in result.stopped
    assert "last good checkpoint" in result.stopped and result.epochs_run == 1
    assert (result.out_dir / "checkpoints" / "last.safetensors").is_file()


def test_early_stopping(tmp_path):
    config = _config(tmp_path, epochs=6, patience=1)
    config["optim"] = {"lr": 1e-30}  # nothing improves after the first epoch (lr must be > 0: steps lost in rounding)
    result = train(config)
    assert result.stopped.startswith("early stop") and result.epochs_run == 2


def test_cached_and_online_training_agree(tmp_path):
    cached = train(_config(tmp_path / "a", epochs=1, use_cache=True))
    online = train(_config(tmp_path / "b", epochs=1, use_cache=False))
    a, b = cached.history[0], online.history[0]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-2  # the cache stores float16 activations


def test_cli_train(tmp_path, capsys):
    config = TrainConfig.from_dict(_config(tmp_path, epochs=1))
    config.to_yaml(tmp_path / "c.yaml")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cli")]) == 0
    assert "best epoch 1" in capsys.readouterr().out and (tmp_path / "cli" / "training_log.csv").is_file()
    (tmp_path / "bad.yaml").write_text("epochz: 1\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "epochz" in capsys.readouterr().err


def test_cli_evaluate(tmp_path, capsys):
    result = train(_config(tmp_path, epochs=1))
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(result.best_checkpoint), "--dataset", "synthetic_shapes", "--split",
                 "val", "--out", str(out), "--visualize-samples", "2", "--device", "cpu", "--limit", "6"])
    assert code == 0
    printed = capsys.readouterr()
    assert "IoU_FG" in printed.out and "untrained" in printed.err
    per_image = list(csv.DictReader((out / "evaluation_per_image.csv").open()))
    overall = json.loads((out / "evaluation.json").read_text())["overall"]
    assert len(per_image) == json.loads((out / "evaluation.json").read_text())["samples"] == 6
    assert 0 <= overall["iou_fg"] <= 1
    for stem in ("samples", "confidence", "errors", "gradcam"):  # each PNG says where it came from
        description = Image.open(out / f"{stem}.png").text["Description"]
        assert "untrained backbone" in description and "data: synthetic_shapes val" in description, stem


def test_semantic_training_of_clip_unet_and_unet(tmp_path):
    for name in ("clip-unet", "unet"):
        result = train({
            "out_dir": str(tmp_path / name), "epochs": 1, "batch_size": 4, "loss": "wce+dice", "snapshot_samples": 1,
            "model": {"name": name, "input_size": 64,
                      "options": {"channels": [8, 16, 32], "dropout": [0.05, 0.1, 0.05]}},
            "data": {"dataset": "synthetic_shapes", "options": {"num_scenes": 6, "size": 64, "mode": "semantic"}}})
        assert result.monitor == "miou" and 0 <= result.best_metrics["miou"] <= 1
        assert set(result.best_metrics["per_class"]) == {"background", "circle", "square", "triangle"}
        assert (result.out_dir / "snapshots" / "epoch_001.npz").is_file()
        assert len(result.best_metrics["image_miou"]) == 6  # one score per validation image, for paired tests
    out = tmp_path / "eval"  # evaluate the last one (unet) from the CLI: overall, per-class and per-image tables
    assert main(["evaluate", "--checkpoint", str(result.best_checkpoint), "--dataset", "synthetic_shapes", "--split",
                 "val", "--out", str(out), "--visualize-samples", "2", "--device", "cpu", "--limit", "4"]) == 0
    per_class = list(csv.DictReader((out / "evaluation_per_class.csv").open()))
    assert [row["class"] for row in per_class] == ["background", "circle", "square", "triangle"]
    assert {"dice", "iou", "precision", "recall", "f1"} <= set(per_class[0])
    assert len(list(csv.DictReader((out / "evaluation_per_image.csv").open()))) == 4
    for stem in ("samples", "confidence", "errors", "gradcam"):
        assert (out / f"{stem}.png").is_file(), stem
    with pytest.raises(ConfigError, match="does not fit clip-unet"):
        Trainer(TrainConfig.from_dict({"out_dir": str(tmp_path / "x"), "loss": "bce",
                                       "model": {"name": "clip-unet", "input_size": 64},
                                       "data": {"options": {"num_scenes": 2, "size": 64, "mode": "semantic"}}}))


def test_evaluation_leaves_the_callers_dataset_as_it_was(tiny_backbone):
    """evaluate_model and referring_table read the dataset at the model's size through a copy: a training
    augmentation the caller set stays on the caller's dataset."""
    import clipseg_lab as cl
    from clipseg_lab.data.synthetic import SyntheticShapes
    from clipseg_lab.data.transforms import JointTransform
    from clipseg_lab.engine.evaluate import evaluate_model
    from clipseg_lab.viz.evaluation import referring_table

    model = cl.build_model("clipseg-rd16", backbone=tiny_backbone, input_size=64)
    augment = JointTransform(48, flip=0.5)
    data = SyntheticShapes(num_scenes=3, size=80, transform=augment)
    result = evaluate_model(model, data, batch_size=2)
    assert data.transform is augment and result["samples"] == len(data)
    fig, table = referring_table(model, data, count=2)
    assert data.transform is augment and len(table) == 2
    assert tuple(data[0]["mask"].shape) == (48, 48)  # still the caller's transform


def test_a_trainer_from_parts_needs_no_dataset_on_disk(tmp_path, tiny_backbone):
    """Model and datasets given: the config names no dataset that is read, and the run trains on what it was given
    (a folder dataset whose root does not exist would fail if it were opened)."""
    import clipseg_lab as cl
    from clipseg_lab.data.synthetic import SyntheticShapes
    from clipseg_lab.data.transforms import JointTransform

    model = cl.build_model("clipseg-rd16", backbone=tiny_backbone, input_size=64)
    train_data = SyntheticShapes(num_scenes=4, size=64, transform=JointTransform(64))
    val_data = SyntheticShapes(num_scenes=2, size=64, seed=1, transform=JointTransform(64))
    config = TrainConfig.from_dict({"out_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 4,
                                    "snapshot_samples": 0, "model": {"name": "clipseg-rd16"},
                                    "data": {"dataset": "folder", "root": str(tmp_path / "nowhere")}})
    trainer = Trainer(config, model=model, train_data=train_data, val_data=val_data)
    assert trainer.model is model and trainer.val_data is val_data
    result = trainer.fit()
    assert len(result.history) == 1 and (tmp_path / "run" / "training_log.csv").is_file()
    with pytest.raises(ValueError, match="both train_data and val_data"):
        Trainer(config, model=model, train_data=train_data)
