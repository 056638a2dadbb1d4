"""SAM's image embedding is computed once per tile and shared by all parameter sets, with the same masks."""

from __future__ import annotations

import numpy as np
import torch

from clipseg_lab.zeroshot.sam import LoadedSam, SamRegionGenerator, tiny_random_sam

SETS = [{"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.5},
        {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}]


def test_one_image_embedding_serves_every_parameter_set():
    from segment_anything import SamAutomaticMaskGenerator

    sam = tiny_random_sam()
    loaded = sam if isinstance(sam, LoadedSam) else LoadedSam(sam, "tiny-random", "tiny-random", "test", False)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    encodes = {"n": 0}
    encoder = loaded.model.image_encoder
    hook = encoder.register_forward_hook(lambda *a: encodes.__setitem__("n", encodes["n"] + 1))
    try:
        # today's behaviour, one generator per set, each encoding the tile itself: the reference masks
        with torch.inference_mode():
            separate = [[np.asarray(r["segmentation"], bool) for r in SamAutomaticMaskGenerator(loaded.model, **p)
                         .generate(image)] for p in SETS]
        assert encodes["n"] == len(SETS)
        encodes["n"] = 0
        regions = SamRegionGenerator(loaded, SETS)
        shared = regions.raw_masks(image)
        assert encodes["n"] == 1 and regions.embedding.encodes == 1
        other = np.ascontiguousarray(image[::-1])
        regions.raw_masks(other)  # a new tile is encoded (once)
        assert encodes["n"] == 2
    finally:
        hook.remove()
    assert [len(group) for group in shared] == [len(group) for group in separate]
    for mine, theirs in zip(shared, separate):
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))
