"""Comparing trained models: one training run per variant of a base config, a summary table, and paired tests
over per-image scores, so that "no significant difference" is backed by a number."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank and paired t-test of per-image scores of two models on the same images; the
    difference is b - a, so t > 0 (and mean_difference > 0) when b scores higher."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same images in the same order: {a.shape} vs {b.shape}")
    diff = b - a
    out: dict[str, Any] = {"images": int(len(a)), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                           "mean_difference": float(diff.mean())}
    if len(a) < 2 or np.allclose(diff, 0):
        out.update(wilcoxon_p=float("nan"), ttest_p=float("nan"), note="no differences to test")
        return out
    w = stats.wilcoxon(b, a, zero_method="wilcox")
    t = stats.ttest_rel(b, a)
    out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue), t=float(t.statistic),
               ttest_p=float(t.pvalue))
    return out


def summary_row(name: str, result) -> dict[str, Any]:
    """One table row from a `TrainResult`: the best epoch's headline metrics."""
    m = result.best_metrics
    keys = ("iou_fg", "miou", "dice", "ap", "pixel_accuracy", "mdice", "mf1", "mean_foreground_dice")
    return {"run": name, "best_epoch": result.best_epoch, **{k: m[k] for k in keys if k in m},
            "epochs_run": result.epochs_run}


def merge_config(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; nested dicts (model, data, optim, ...) are merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def train_variants(base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]], out_dir: str | Path, *,
                   overwrite: bool = False) -> dict:
    """One training run per variant (a name and the config changes it makes to `base`), each into
    `out_dir/<name>`; returns name -> TrainResult in the variants' order. A variant whose folder holds the same run
    resumes (a finished one only reloads); one holding another run is refused unless `overwrite` (the notebooks,
    which own their run folders, retrain it in place)."""
    from clipseg_lab.engine.trainer import train

    out_dir = Path(out_dir)
    return {name: train(merge_config(base, {**changes, "out_dir": str(out_dir / name.replace("+", "_")),
                                            "overwrite": overwrite}))
            for name, changes in variants.items()}


def comparison_table(results: Mapping[str, Any]):
    """One row per run: the best epoch's headline metrics (a pandas DataFrame indexed by run name)."""
    import pandas as pd

    return pd.DataFrame([summary_row(name, r) for name, r in results.items()]).set_index("run")


def paired_tests(results: Mapping[str, Any], baseline: str, key: str = "image_scores"):
    """Each run's per-image scores at its best epoch against `baseline`'s, on the same validation images."""
    import pandas as pd

    base = results[baseline].best_metrics[key]
    return pd.DataFrame({name: paired_test(base, r.best_metrics[key]) for name, r in results.items()
                         if name != baseline}).T
