"""Numbers the seed projects and papers reported, shown beside this repository's runs as "reported" (never
mixed with "this run"). Percentages as reported."""

from __future__ import annotations

# CLIPSeg variants on a PhraseCut subset, 10 epochs, model0 (FiLM at every step, layers 2,4,6,8,10, D=128)
# trained with each loss; the metric columns are Dice and IoU on the validation split.
LOSS_COMPARISON_MODEL0 = {
    "bce": {"dice": 24.87, "iou": 18.49},
    "dice": {"dice": 32.60, "iou": 23.70},
    "focal": {"dice": 22.78, "iou": 16.82},
}
