"""Proof that training works: a CLIPSeg decoder on the random tiny backbone learns SyntheticShapes on a CPU,
and what it learns depends on the prompt."""

from __future__ import annotations

import time

import torch

import clipseg_lab as cl
from clipseg_lab.data.synthetic import SyntheticShapes
from clipseg_lab.data.transforms import JointTransform
from clipseg_lab.engine import train
from clipseg_lab.metrics import BinaryMetrics

SHAPES = {"size": 224, "radius": [0.16, 0.25], "max_shapes": 3, "distractors": "distinct_colours"}


def test_clipseg_learns_synthetic_shapes_and_the_prompt_matters(tmp_path):
    start = time.perf_counter()
    result = train({
        "out_dir": str(tmp_path / "learn"), "epochs": 6, "batch_size": 16, "loss": "bce+dice", "seed": 0,
        "snapshot_samples": 0,
        "model": {"name": "clipseg-rd64", "backbone": "tiny-random", "input_size": 224, "options": {"dropout": 0.0}},
        "data": {"dataset": "synthetic_shapes", "options": {"num_scenes": 150, **SHAPES},
                 "val_options": {"num_scenes": 30}},
        "optim": {"lr": 1e-3, "schedule": "constant"}})
    seconds = time.perf_counter() - start
    training = sum(float(row["seconds"]) for row in result.history)  # epochs only, without set-up
    iou = result.best_metrics["iou_fg"]

    # the same scenes, each target segmented with the prompt of ANOTHER shape of its scene
    model = cl.load_model(result.best_checkpoint, device="cpu")
    val = SyntheticShapes(30, seed=1, transform=JointTransform(224), **{k: tuple(v) if isinstance(v, list) else v
                                                                      for k, v in SHAPES.items()})
    by_scene: dict[str, list[int]] = {}
    for i in range(len(val)):
        by_scene.setdefault(val[i]["name"], []).append(i)
    wrong = BinaryMetrics()
    with torch.no_grad():
        for indices in by_scene.values():
            for a, b in zip(indices, indices[1:] + indices[:1]):
                sa, sb = val[a], val[b]
                probs = model(model.preprocess([sa["image"]]), [sb["prompt"]]).sigmoid()
                wrong.update(probs, sa["mask"][None])
    wrong_iou = wrong.compute()["iou_fg"]
    print(f"learning test: IoU_FG {iou:.3f} (epoch {result.best_epoch}), with another object's prompt "
          f"{wrong_iou:.3f}; training {training:.0f} s, {seconds:.0f} s with set-up and the check")
    assert iou >= 0.6, f"IoU_FG {iou:.3f} after {training:.0f} s"
    assert wrong_iou < 0.5 * iou and wrong_iou < 0.3, f"the prompt must matter: {wrong_iou:.3f} vs {iou:.3f}"
    assert training < 90


def test_clip_unet_learns_semantic_shapes(tmp_path):
    start = time.perf_counter()
    result = train({
        "out_dir": str(tmp_path / "unet"), "epochs": 24, "batch_size": 8, "loss": "ce", "seed": 0,
        "snapshot_samples": 0,
        "model": {"name": "clip-unet", "backbone": "tiny-random", "input_size": 96,
                  "options": {"channels": [16, 32, 64], "dropout": [0.0, 0.0, 0.0]}},
        "data": {"dataset": "synthetic_shapes",
                 "options": {"num_scenes": 100, "mode": "semantic", "size": 96, "radius": [0.16, 0.25],
                             "max_shapes": 3}, "val_options": {"num_scenes": 30}},
        "optim": {"lr": 3e-3, "schedule": "constant"}})
    seconds = time.perf_counter() - start
    training = sum(float(row["seconds"]) for row in result.history)
    miou = result.best_metrics["miou"]
    per_class = {k: round(v["iou"], 3) for k, v in result.best_metrics["per_class"].items()}
    print(f"learning test: clip-unet mIoU {miou:.3f} {per_class} (epoch {result.best_epoch}), training "
          f"{training:.0f} s, {seconds:.0f} s with set-up")
    assert miou >= 0.6 and min(per_class.values()) >= 0.4, per_class
    assert training < 90
