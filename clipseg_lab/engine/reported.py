"""Numbers the seed projects and papers reported, shown beside this repository's runs as "reported" (never
mixed with "this run"), and the one function that puts the two side by side.

Values are stored as fractions in [0, 1] whatever the source printed; `SOURCE` says where each came from and
on what data, so a notebook can print it under the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# CLIP-enhanced UNet on Oxford-IIIT Pet (background / cat / dog), ViT-B/16, 512 px, the recipe in
# configs/pets_clip_unet.yaml; the seed's test-set numbers.
CLIP_UNET_PETS = {
    "pixel_accuracy": 0.818, "miou": 0.597, "mean_foreground_dice": 0.657,
    "per_class": {
        "background": {"dice": 0.894, "iou": 0.809, "precision": 0.884, "recall": 0.905},
        "cat": {"dice": 0.615, "iou": 0.444, "precision": 0.607, "recall": 0.622},
        "dog": {"dice": 0.699, "iou": 0.537, "precision": 0.730, "recall": 0.670},
    },
}

# CLIPSeg variants (configs/phrasecut_model{0,1,2}.yaml) on a PhraseCut subset, 10 epochs, BCE; validation.
MODEL_VARIANTS_PHRASECUT = {
    "model0": {"pixel_accuracy": 0.8616, "dice": 0.2487, "iou_fg": 0.1849},
    "model1": {"pixel_accuracy": 0.8620, "dice": 0.2361, "iou_fg": 0.1780},
    "model2": {"pixel_accuracy": 0.8620, "dice": 0.2475, "iou_fg": 0.1849},
}

# model0 on the same PhraseCut subset, 10 epochs, one run per loss; validation Dice and IoU.
LOSS_COMPARISON_MODEL0 = {
    "bce": {"dice": 0.2487, "iou_fg": 0.1849},
    "dice": {"dice": 0.3260, "iou_fg": 0.2370},
    "focal": {"dice": 0.2278, "iou_fg": 0.1682},
}

# The RefCOCO re-implementation's transformer decoder (configs/refcoco_transformer_decoder.yaml): Adam lr 1e-3,
# BCE; validation Dice.
REFCOCO_TRANSFORMER_DECODER = {"dice": 0.5656}

# CLIPSeg paper (Lüddecke & Ecker, CVPR 2022, Table 2): PhraseCut test, 352 px, batch 64, 20k iterations, BCE.
CLIPSEG_PAPER_PHRASECUT = {
    "CLIPSeg (PC+)": {"miou": 0.434, "iou_fg": 0.547, "ap": 0.767},
    "CLIPSeg (PC)": {"miou": 0.461, "iou_fg": 0.562, "ap": 0.782},
    "CLIPSeg (PC, D=128)": {"miou": 0.482, "iou_fg": 0.565, "ap": 0.782},
}

SOURCE = {
    "CLIP_UNET_PETS": "seed: CLIP-UNet on Oxford-IIIT Pet test split, ViT-B/16, 512 px",
    "MODEL_VARIANTS_PHRASECUT": "seed: CLIPSeg variants on a PhraseCut subset, 10 epochs, BCE, validation",
    "LOSS_COMPARISON_MODEL0": "seed: model0 on a PhraseCut subset, 10 epochs per loss, validation",
    "REFCOCO_TRANSFORMER_DECODER": "seed: transformer decoder on RefCOCO, Adam 1e-3, BCE, validation",
    "CLIPSEG_PAPER_PHRASECUT": "Lüddecke & Ecker 2022, Table 2: PhraseCut test, 352 px, 20k iterations",
}


def reported_vs_this_run(reported: Mapping[str, Mapping[str, float]], measured: Mapping[str, Mapping[str, Any]],
                         metrics: tuple[str, ...] | None = None, percent: bool = True):
    """A long table, one row per (run, metric), with a "reported" and a "this run" column.

    `reported` and `measured` map run names (a model, a loss, a class) to metric dicts. A run or a metric one
    side lacks shows as empty (NaN): a column is never filled from the other side.
    """
    import pandas as pd

    names = list(dict.fromkeys([*measured, *reported]))
    metrics = metrics or tuple(dict.fromkeys(k for row in reported.values() for k in row))
    scale, digits = (100.0, 2) if percent else (1.0, 3)
    unit = " (%)" if percent else ""
    rows = []
    for name in names:
        for m in metrics:
            rep, ours = reported.get(name, {}).get(m), measured.get(name, {}).get(m)
            rows.append({"run": name, "metric": m,
                         f"reported{unit}": None if rep is None else round(scale * rep, digits),
                         f"this run{unit}": None if ours is None else round(scale * float(ours), digits)})
    return pd.DataFrame(rows).set_index(["run", "metric"])
