"""Comparing trained models: a summary table, and paired tests over per-image scores, so that "no significant
difference" is backed by a number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank and paired t-test of per-image scores of two models on the same images."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same images in the same order: {a.shape} vs {b.shape}")
    diff = b - a
    out: dict[str, Any] = {"images": int(len(a)), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                           "mean_difference": float(diff.mean())}
    if len(a) < 2 or np.allclose(diff, 0):
        out.update(wilcoxon_p=float("nan"), ttest_p=float("nan"), note="no differences to test")
        return out
    w = stats.wilcoxon(a, b, zero_method="wilcox")
    t = stats.ttest_rel(a, b)
    out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue), t=float(t.statistic),
               ttest_p=float(t.pvalue))
    return out


def summary_row(name: str, result) -> dict[str, Any]:
    """One table row from a `TrainResult`: the best epoch's headline metrics."""
    m = result.best_metrics
    keys = ("iou_fg", "miou", "dice", "ap", "pixel_accuracy", "mdice", "mf1", "mean_foreground_dice")
    return {"run": name, "best_epoch": result.best_epoch, **{k: m[k] for k in keys if k in m},
            "epochs_run": result.epochs_run}
