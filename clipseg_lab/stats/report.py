"""A hypothesis result as JSON (everything) and CSV tables, its headline table and its summary text (the
figures and `write_report`, tables plus figure, are in `viz.hypothesis`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from clipseg_lab.files import json_safe, write_csv, write_json
from clipseg_lab.stats.run import HypothesisResult
from clipseg_lab.stats.significance import adjust_p

# the CSV's leading columns, in this order; every other row field follows
CSV_COLUMNS = ["dataset", "split", "images", "skipped", "pair_distance", "n_A", "n_B", "mean_A", "sd_A", "mean_B",
               "sd_B", "difference", "welch_t", "dof", "p_value", "p_one_sided", "ci_low", "ci_high", "hedges_g",
               "sub_n_A", "sub_n_B", "sub_welch_t", "sub_dof", "sub_p_value", "sub_hedges_g", "mwu_U",
               "mwu_p_two_sided", "mwu_prob_B_greater", "images_used", "image_t", "image_dof", "image_p_two_sided",
               "wilcoxon_p_two_sided", "critical_99_9_inf", "critical_exact", "verdict_all_pairs",
               "verdict_subsample", "verdict_per_image"]


def write_tables(result: HypothesisResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """`hypothesis.json`, `hypothesis.csv` (one row per dataset and split), `hypothesis_images.csv` and
    `hypothesis_skipped.csv` in `out_dir` (`viz.hypothesis.write_report` adds the figure)."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "hypothesis.json"}
    write_json(files["json"], json_safe(result.as_dict()))
    table = result.table()
    if len(table):
        table = table[[c for c in CSV_COLUMNS if c in table] + [c for c in table if c not in CSV_COLUMNS]]
    files["csv"] = write_csv(table, out / "hypothesis.csv")
    files["images_csv"] = write_csv(pd.DataFrame(result.images), out / "hypothesis_images.csv")
    files["skipped_csv"] = write_csv(pd.DataFrame(result.skipped, columns=["dataset", "split", "name", "reason"]),
                                      out / "hypothesis_skipped.csv")
    return files


def format_p(p: float | None, name: str = "p") -> str:
    """"p = 0.0011", "p < 1e-300" (0 in floating point) or "p n/a" (no test)."""
    if p is None or not math.isfinite(p):
        return f"{name} n/a"
    return f"{name} = {p:.2g}" if p > 0 else f"{name} < 1e-300"


def summarise(result: HypothesisResult) -> str:
    """One plain-language paragraph per table row: the effect, and what each test says."""
    lines = []
    for r in result.rows:
        d = f"pairs {r['pair_distance']} px apart" if r["pair_distance"] is not None else "random pairs"
        per_image = (f"the per-image paired t over {r['images_used']} images gives "
                     f"{format_p(r['image_p_two_sided'])}"
                     if r["images_used"] >= 2 and r["image_p_two_sided"] is not None
                     and math.isfinite(r["image_p_two_sided"])
                     else f"the per-image test needs at least 2 images with boundary pairs ({r['images_used']} here)")
        lines.append(
            f"{r['dataset']} ({r['split']}, {r['images']} image(s), {d}): mean |dI| {r['mean_A']:.1f} inside vs "
            f"{r['mean_B']:.1f} across (Hedges' g {r['hedges_g']:.2f}; P(B > A) = {r['mwu_prob_B_greater']:.2f}). "
            f"All {r['n_A'] + r['n_B']:,} pairs: t = {r['welch_t']:.1f}; {r['sub_n_A'] + r['sub_n_B']:,} subsampled "
            f"pairs: t = {r['sub_welch_t']:.1f}, {format_p(r['sub_p_value'])}; {per_image}.")
    return "\n".join(lines)


HEADLINE = ["dataset", "split", "images", "skipped", "pair_distance", "n_A", "n_B", "mean_A", "mean_B", "hedges_g",
            "welch_t", "dof", "p_value", "sub_welch_t", "sub_p_value", "mwu_p_two_sided", "mwu_prob_B_greater",
            "images_used", "image_p_two_sided", "wilcoxon_p_two_sided", "reject_subsample"]


def headline_table(result: HypothesisResult):
    """One row per dataset (its "all" row where it has splits), the key columns, and the subsampled and
    per-image p-values adjusted for testing several datasets (the family is these rows; NaN = not testable):
    Holm (`*_holm`), Bonferroni (`*_bonferroni`) and Benjamini-Hochberg (`*_bh`); see `adjust_p`."""
    import pandas as pd

    table = result.table()
    if not len(table):
        return table
    multi = table.groupby("dataset")["split"].transform(lambda s: (s == "all").any())
    table = table[~multi | (table["split"] == "all")][[c for c in HEADLINE if c in table]].reset_index(drop=True)
    for column in ("sub_p_value", "image_p_two_sided"):
        p = table[column].to_numpy(float)
        for method in ("holm", "bonferroni", "bh"):
            table[f"{column}_{method}"] = adjust_p(p, method)
    return pd.DataFrame(table)


def data_description(result: HypothesisResult, samples_dir: Any = None) -> str:
    """What data a figure of this result shows, for its caption."""
    names = list(dict.fromkeys(r["dataset"] for r in result.rows))
    real = [n for n in names if n != "synthetic_shapes"]
    where = f" ({samples_dir})" if samples_dir is not None else ""
    parts = [f"real samples{where}: {', '.join(real)}"] if real else []
    if "synthetic_shapes" in names:
        parts.append("SyntheticShapes (synthetic scenes, no real samples found)")
    return "; ".join(parts) or "no data"
