"""The hypothesis test on a model's predicted masks instead of ground truth.

A prediction is just another label mask: `prediction_to_mask` turns a `Segmenter`'s probabilities into one,
`predicted_samples` does it for every sample of a dataset (or any images), and `run_on_predictions` runs the
test on them. The result's label carries the model's provenance caption, so a run with an untrained
(`tiny-random`) backbone says so in every row and figure.

Example::

    seg = cl.Segmenter(cl.load_model("checkpoints/pets.pt"))
    data = open_dataset("oxford_pet", "../shared/data/oxford_pet", "test")
    result = run_on_predictions(seg, (data[i] for i in range(len(data))), ["a cat", "a dog"])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from clipseg_lab.stats.run import HypothesisConfig, HypothesisResult, run_on_samples


def prediction_to_mask(probs: Any, threshold: float = 0.5) -> np.ndarray:
    """A uint8 label mask from `(K, H, W)` (or `(H, W)`) probabilities: with one prompt, 1 where the probability
    exceeds `threshold`, else 0; with K prompts, k + 1 for the most probable prompt k where its probability
    exceeds `threshold`, else 0 (background)."""
    array = probs.detach().cpu().float().numpy() if hasattr(probs, "detach") else np.asarray(probs, np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"expected probabilities (K, H, W) or (H, W), got shape {array.shape}")
    if array.shape[0] > 254:
        raise ValueError(f"{array.shape[0]} prompts do not fit a uint8 mask (at most 254)")
    best = array.argmax(0)
    confident = np.take_along_axis(array, best[None], 0)[0] > threshold
    return np.where(confident, best + 1, 0).astype(np.uint8)


def predicted_samples(segmenter: Any, samples: Iterable[Any], prompts: str | Sequence[str] | None = None,
                      threshold: float = 0.5) -> Iterator[Any]:
    """Each sample (a loader's dict with "image", or a bare image) with its "mask" replaced by the segmenter's
    prediction for `prompts` (default: the sample's own "prompt"). Samples that cannot be predicted (load
    failures given as `(name, exception)`, placeholder images) are passed on unchanged, so the run reports
    them as skipped."""
    caption = segmenter.provenance.caption() if hasattr(segmenter, "provenance") else "model"
    for index, sample in enumerate(samples):
        if isinstance(sample, tuple) or (isinstance(sample, dict) and sample.get("placeholder")):
            yield sample
            continue
        record = sample if isinstance(sample, dict) else {"image": sample}
        wanted = prompts if prompts is not None else record.get("prompt")
        if not wanted:
            raise ValueError(f"sample {record.get('name', index)}: no prompts given and the sample has no 'prompt'")
        segmenter.set_image(record["image"])
        mask = prediction_to_mask(segmenter.predict([wanted] if isinstance(wanted, str) else list(wanted)), threshold)
        yield {"image": segmenter.image, "mask": mask, "name": str(record.get("name", index)),
               "source": str(record.get("source", record.get("name", index))), "model": caption}


def run_on_predictions(segmenter: Any, samples: Iterable[Any], prompts: str | Sequence[str] | None = None, *,
                       label: str | None = None, split: str = "all", threshold: float = 0.5,
                       config: HypothesisConfig | None = None) -> HypothesisResult:
    """`run_on_samples` on the segmenter's predicted masks. The default label names the model's provenance
    (e.g. "predicted: clipseg-rd64 | backbone tiny-random (untrained backbone) | ...")."""
    caption = segmenter.provenance.caption() if hasattr(segmenter, "provenance") else "model"
    return run_on_samples(predicted_samples(segmenter, samples, prompts, threshold), label or f"predicted: {caption}",
                          split, config)
