"""The hypothesis test on a model's predicted masks instead of ground truth.

A prediction is just another label mask: `prediction_to_mask` turns a `Segmenter`'s probabilities into one
(a multi-class model's most probable class is one already),
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


def _predict_mask(predictor: Any, image: Any, prompts: Sequence[str] | None, threshold: float):
    """(mask, uint8 image): a `Segmenter` (prompt model) thresholds its prompts' probabilities; a multi-class
    model (`clip-unet`, `unet`) gives its most probable class per pixel."""
    if hasattr(predictor, "set_image"):
        predictor.set_image(image)
        return prediction_to_mask(predictor.predict(list(prompts)), threshold), predictor.image
    from clipseg_lab.images import load_rgb
    from clipseg_lab.segmenter import predict_sample

    image = load_rgb(image)
    return predict_sample(predictor, image).argmax(0).numpy().astype(np.uint8), image


def predicted_samples(segmenter: Any, samples: Iterable[Any], prompts: str | Sequence[str] | None = None,
                      threshold: float = 0.5) -> Iterator[Any]:
    """Each sample (a loader's dict with "image", or a bare image) with its "mask" replaced by the prediction:
    of a `Segmenter` for `prompts` (default: the sample's own "prompt"), or of a multi-class model (no prompts).
    Samples that cannot be predicted (load failures given as `(name, exception)`, placeholder images) are
    passed on unchanged, so the run reports them as skipped."""
    caption = segmenter.provenance.caption() if hasattr(segmenter, "provenance") else "model"
    prompted = hasattr(segmenter, "set_image")
    for index, sample in enumerate(samples):
        if isinstance(sample, tuple) or (isinstance(sample, dict) and sample.get("placeholder")):
            yield sample
            continue
        record = sample if isinstance(sample, dict) else {"image": sample}
        wanted = prompts if prompts is not None else record.get("prompt")
        if prompted and not wanted:
            raise ValueError(f"sample {record.get('name', index)}: no prompts given and the sample has no 'prompt'")
        mask, image = _predict_mask(segmenter, record["image"], [wanted] if isinstance(wanted, str) else wanted,
                                    threshold)
        yield {"image": image, "mask": mask, "name": str(record.get("name", index)),
               "source": str(record.get("source", record.get("name", index))), "model": caption}


def run_on_predictions(segmenter: Any, samples: Iterable[Any], prompts: str | Sequence[str] | None = None, *,
                       label: str | None = None, split: str = "all", threshold: float = 0.5,
                       config: HypothesisConfig | None = None) -> HypothesisResult:
    """`run_on_samples` on the segmenter's predicted masks. The default label names the model's provenance
    (e.g. "predicted: clipseg-rd64 | backbone tiny-random (untrained backbone) | ...")."""
    caption = segmenter.provenance.caption() if hasattr(segmenter, "provenance") else "model"
    return run_on_samples(predicted_samples(segmenter, samples, prompts, threshold), label or f"predicted: {caption}",
                          split, config)
