"""Joint image / mask transforms (torchvision.transforms.v2: masks resized with nearest neighbour), prompt
templates and CLIPSeg-style negative prompts."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from clipseg_lab.data.base import Sample

# CLIPSeg's training templates (a subset of CLIP's ImageNet prompt ensemble)
CLIPSEG_TEMPLATES = ("a photo of a {}.", "a photograph of a {}.", "an image of a {}.", "{}.",
                     "a cropped photo of a {}.", "a good photo of a {}.", "a photo of one {}.", "a bad photo of a {}.",
                     "a photo of the {}.")

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def swap_left_right(prompt: str) -> str:
    """'the cup on the left' -> 'the cup on the right': what a horizontal flip does to a referring phrase."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", prompt)


class JointTransform:
    """Resize image and mask together to `size` (square, as the backbone sees them), with optional
    horizontal flips (the prompt's left / right swapped to match) and colour jitter (image only).

    Random draws come from torch's RNG, as torchvision's own transforms do: `seed_everything` fixes them, each
    DataLoader worker gets its own stream, and a resumed run continues the stream the trainer saved."""

    def __init__(self, size: int | tuple[int, int], *, flip: float = 0.0, colour_jitter: float = 0.0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.flip = flip
        self.resize = v2.Resize(self.size, antialias=True)  # tv_tensors.Mask gets nearest neighbour
        self.jitter = v2.ColorJitter(colour_jitter, colour_jitter, colour_jitter) if colour_jitter else None

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image = tv_tensors.Image(sample["image"])
        mask = tv_tensors.Mask(sample["mask"]) if "mask" in sample else None
        image, mask = self.resize(image, mask) if mask is not None else (self.resize(image), None)
        if self.flip and float(torch.rand(())) < self.flip:
            image = v2.functional.horizontal_flip(image)
            mask = v2.functional.horizontal_flip(mask) if mask is not None else None
            if "prompt" in out:
                out["prompt"] = swap_left_right(out["prompt"])
        if self.jitter is not None:
            image = self.jitter(image)
        out["image"] = image.as_subclass(torch.Tensor)
        if mask is not None:
            out["mask"] = mask.as_subclass(torch.Tensor)
        out["original_size"] = tuple(sample["image"].shape[-2:])
        return out


class RandomTemplate:
    """Replace a class-name prompt ("cat") by a random template filled with it ("a bad photo of a cat."),
    as CLIPSeg trains; drawn from torch's RNG (see JointTransform)."""

    def __init__(self, templates: Sequence[str] = CLIPSEG_TEMPLATES):
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("every template needs a '{}' where the class name goes")
        self.templates = tuple(templates)

    def __call__(self, sample: Sample) -> Sample:
        template = self.templates[int(torch.randint(len(self.templates), ()))]
        return {**sample, "prompt": template.format(sample["prompt"]), "class_prompt": sample["prompt"]}


class WithNegatives(Dataset):
    """Wrap a referring dataset: with probability `rate`, a sample's prompt is replaced by another sample's
    prompt and its mask by an empty one, as CLIPSeg trains (the prompt names something that is, most likely,
    not in the image). Deterministic for a given (seed, index). `is_negative` marks them."""

    def __init__(self, dataset: Dataset, rate: float = 0.2, seed: int = 0, prompts: Sequence[str] | None = None):
        if not 0 <= rate < 1:
            raise ValueError(f"negative rate must lie in [0, 1), not {rate}")
        self.dataset, self.rate, self.seed = dataset, rate, seed
        self.prompts = list(prompts) if prompts is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = dict(self.dataset[index])
        rng = np.random.default_rng([self.seed, index])
        sample["is_negative"] = False
        if rng.random() < self.rate:
            own = sample["prompt"]
            for _ in range(10):
                other = (self.prompts[int(rng.integers(len(self.prompts)))] if self.prompts
                         else self.dataset[int(rng.integers(len(self.dataset)))]["prompt"])
                if other != own:
                    sample.update(prompt=other, mask=torch.zeros_like(sample["mask"]), is_negative=True)
                    break
        return sample
