"""The hypothesis test: do grayscale intensities vary less inside objects than across their boundaries?

Hypothesis (the seed's words): "Pixel intensities in a grayscale image vary smoothly within an object, as
opposed to intensities of pixel pairs that cross object boundaries or belong to different objects."

* `pairs`: the two populations of |I(p) - I(q)| (ITU-R 601-2 luma): A inside one object, B across objects;
  neighbouring pairs at a pair distance d, or random pairs at any distance.
* `significance`: Welch's t (dof, one- and two-sided p, CI, Hedges' g), Mann-Whitney U, the per-image
  paired test, subsampling, and the seed's verdict (|t| against 3.291, the 99.9 % value at infinite dof).
* `run`: the test over a registered dataset (one row per split), or over in-memory samples;
  `predicted`: over a model's predicted masks; `report`: JSON / CSV, the headline table with p-values
  adjusted across datasets (Holm, Bonferroni, Benjamini-Hochberg); the figures
  and `write_report` (tables + figure) are in `clipseg_lab.viz.hypothesis`.

Example::

    from clipseg_lab.stats import HypothesisConfig, run_hypothesis
    result = run_hypothesis("oxford_pet", "../shared/data/oxford_pet", HypothesisConfig())
    result.table()[["dataset", "split", "n_A", "n_B", "welch_t", "p_value", "hedges_g", "verdict_subsample"]]
"""

from clipseg_lab.stats.pairs import (
                                     NoBoundaryError,
                                     PairPopulations,
                                     choose_pair_distance,
                                     crossing_distances,
                                     luma,
                                     neighbour_pairs,
                                     object_labels,
                                     pair_populations,
                                     random_pairs,
)
from clipseg_lab.stats.predicted import predicted_samples, prediction_to_mask, run_on_predictions
from clipseg_lab.stats.run import (
                                     HypothesisConfig,
                                     HypothesisResult,
                                     distance_profile,
                                     iter_dataset_samples,
                                     open_splits,
                                     run_hypothesis,
                                     run_on_samples,
                                     run_sample_datasets,
                                     sample_datasets,
                                     sample_distance_profile,
)
from clipseg_lab.stats.significance import (
                                     SEED_CRITICAL,
                                     WelchResult,
                                     adjust_p,
                                     hedges_g,
                                     mann_whitney,
                                     per_image_test,
                                     subsample,
                                     verdict,
                                     welch_dof,
                                     welch_from_summary,
                                     welch_test,
)

__all__ = [
    "HypothesisConfig", "HypothesisResult", "NoBoundaryError", "PairPopulations", "SEED_CRITICAL", "WelchResult",
    "adjust_p", "choose_pair_distance", "crossing_distances", "distance_profile", "hedges_g", "iter_dataset_samples",
    "luma", "mann_whitney", "neighbour_pairs", "object_labels", "open_splits", "pair_populations", "per_image_test",
    "predicted_samples", "prediction_to_mask", "random_pairs", "run_hypothesis", "run_on_predictions",
    "run_on_samples", "run_sample_datasets", "sample_datasets", "sample_distance_profile", "subsample", "verdict",
    "welch_dof", "welch_from_summary", "welch_test",
]
