"""Figures: overlays and saving with provenance."""

from clipseg_lab.viz.data import plot_curves, plot_samples, plot_statistics
from clipseg_lab.viz.figures import provenance_caption, save_figure
from clipseg_lab.viz.overlay import blend, plot_model_grid, plot_prompts

__all__ = ["blend", "plot_curves", "plot_model_grid", "plot_samples", "plot_statistics", "plot_prompts",
           "provenance_caption", "save_figure"]
