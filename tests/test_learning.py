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
        "out_dir": str(tmp_path / "learn"), "epochs": 10, "batch_size": 16, "loss": "bce+dice", "seed": 0,
        "max_seconds": 60, "snapshot_samples": 0,
        "model": {"name": "clipseg-rd64", "backbone": "tiny-random", "input_size": 224, "options": {"dropout": 0.0}},
        "data": {"dataset": "synthetic_shapes", "options": {"num_scenes": 150, **SHAPES},
                 "val_options": {"num_scenes": 30}},
        "optim": {"lr": 1e-3, "schedule": "constant"}})
    seconds = time.perf_counter() - start
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
          f"{wrong_iou:.3f}; {seconds:.0f} s including set-up")
    assert iou >= 0.6, f"IoU_FG {iou:.3f} after {seconds:.0f} s"
    assert wrong_iou < 0.5 * iou and wrong_iou < 0.3, f"the prompt must matter: {wrong_iou:.3f} vs {iou:.3f}"
    assert seconds < 90
