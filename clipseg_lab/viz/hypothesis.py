"""Figures of the hypothesis test (seaborn): A and B distributions, per-image means, the distance profile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from clipseg_lab.stats.report import write_tables
from clipseg_lab.stats.run import HypothesisResult
from clipseg_lab.viz.figures import save_figure

POPULATION_NAMES = {"A": "A: inside an object", "B": "B: across a boundary"}
PALETTE = {POPULATION_NAMES["A"]: "tab:blue", POPULATION_NAMES["B"]: "tab:orange"}


def _panels(result: HypothesisResult) -> list[tuple[str, str]]:
    """One (dataset, split) per dataset: its "all" row when it has several splits, else its only row."""
    keys = [(r["dataset"], r["split"]) for r in result.rows]
    out = []
    for dataset in dict.fromkeys(d for d, _ in keys):
        splits = [s for d, s in keys if d == dataset]
        out.append((dataset, "all" if "all" in splits else splits[0]))
    return out


def plot_distributions(result: HypothesisResult, max_points: int = 20_000, seed: int = 0) -> plt.Figure:
    """Per dataset: the density of |dI| for A and B (top) and their ECDFs (bottom), from the subsampled pairs."""
    import pandas as pd
    import seaborn as sns

    panels = _panels(result)
    if not panels:
        raise ValueError("no dataset row to plot: every image was skipped (see result.skipped)")
    rows = {(r["dataset"], r["split"]): r for r in result.rows}
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6), squeeze=False)
    for k, key in enumerate(panels):
        parts = []
        for pop, values in zip("AB", result.samples[key]):
            if values.size > max_points:
                values = rng.choice(values, max_points, replace=False)
            parts.append(pd.DataFrame({"|dI|": values, "population": POPULATION_NAMES[pop]}))
        frame = pd.concat(parts, ignore_index=True)
        top = float(np.quantile(frame["|dI|"], 0.995)) if len(frame) else 1.0
        bins = np.linspace(0, max(top, 1.0), 41)
        sns.histplot(frame, x="|dI|", hue="population", stat="density", common_norm=False, bins=bins,
                     element="step", palette=PALETTE, ax=axes[0, k], legend=k == 0)
        sns.ecdfplot(frame, x="|dI|", hue="population", palette=PALETTE, ax=axes[1, k], legend=False)
        axes[1, k].set_xlim(0, max(top, 1.0))
        r = rows[key]
        d = f"d = {r['pair_distance']}" if r["pair_distance"] is not None else "random pairs"
        axes[0, k].set_title(f"{key[0]} ({key[1]}), {d}\nmean A {r['mean_A']:.1f}, B {r['mean_B']:.1f}; "
                             f"g = {r['hedges_g']:.2f}", fontsize=9)
        axes[1, k].set_xlabel("|I(p) - I(q)| (luma, 0-255)")
    axes[0, 0].set_ylabel("density")
    fig.suptitle("Grayscale differences of pixel pairs inside objects (A) and across boundaries (B)", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_image_means(result: HypothesisResult) -> plt.Figure:
    """Per image: mean |dI| inside (x) against across (y); above the diagonal supports the hypothesis."""
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(result.images).dropna(subset=["mean_A", "mean_B"])
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    if len(frame):
        sns.scatterplot(frame, x="mean_A", y="mean_B", hue="dataset", style="dataset", s=45, ax=ax)
        top = float(np.nanmax(frame[["mean_A", "mean_B"]].to_numpy())) * 1.05
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="A = B")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
    ax.set_xlabel("image mean |dI| inside objects (A)")
    ax.set_ylabel("image mean |dI| across boundaries (B)")
    ax.set_title("One point per image (the per-image paired test's data)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_distance_profile(rows: list[dict[str, Any]], min_pairs: int = 100) -> plt.Figure:
    """Mean |dI| of A and B against the pair distance, one panel per dataset; a mean over fewer than
    `min_pairs` pairs (e.g. B across the Pet trimap band at small d) is not drawn."""
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(rows)
    frame.loc[frame["n_A"] < min_pairs, "mean_A"] = np.nan
    frame.loc[frame["n_B"] < min_pairs, "mean_B"] = np.nan
    frame = frame[frame.groupby("dataset")["mean_B"].transform(lambda s: s.notna().any())]
    long = frame.melt(id_vars=["dataset", "pair_distance"], value_vars=["mean_A", "mean_B"], var_name="population",
                      value_name="mean |dI|")
    long["population"] = long["population"].map({"mean_A": POPULATION_NAMES["A"], "mean_B": POPULATION_NAMES["B"]})
    grid = sns.relplot(long, x="pair_distance", y="mean |dI|", hue="population", col="dataset", kind="line",
                       marker="o", palette=PALETTE, height=3, aspect=1.0, facet_kws={"sharey": False})
    ticks = sorted(frame["pair_distance"].unique())
    grid.set(xscale="log", xticks=ticks, xticklabels=[str(int(t)) for t in ticks])
    for ax in grid.axes.flat:
        ax.minorticks_off()
    grid.set_axis_labels("pair distance d (px, log scale)", "mean |dI|")
    grid.figure.suptitle("Does the answer depend on the pair distance?", fontsize=11)
    grid.figure.tight_layout(rect=(0, 0.04, 1, 1))
    return grid.figure


def write_report(result: HypothesisResult, out_dir: str | os.PathLike, *, profile: str | None = None,
                 data: str | None = None, figure: bool = True) -> dict[str, Path]:
    """`stats.report.write_tables`' JSON and CSVs, and `hypothesis_distributions.png` (+ the figures manifest),
    in `out_dir`."""
    files = write_tables(result, out_dir)
    if figure and result.rows:
        fig = plot_distributions(result)
        files["figure"] = save_figure(fig, Path(out_dir) / "hypothesis_distributions.png", provenance=None,
                                      profile=profile,
                                      data=data or ", ".join(dict.fromkeys(r["dataset"] for r in result.rows)),
                                      notes={"kind": "hypothesis test, no model"})
        plt.close(fig)
    return files
