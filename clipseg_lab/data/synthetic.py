"""SyntheticShapes: seeded scenes of coloured shapes with exact masks and referring prompts.

Every scene holds two or more shapes, so a model that ignores the prompt cannot score well. With
`distractors="shared"` (default) the shapes of a scene share a colour or a kind with another one as often as
possible, so a model must read both words of "the red circle" to find it; with `"distinct_colours"` every
shape has its own colour, so the colour word alone finds it (an easier task, learnable by a decoder on the
random `tiny-random` backbone in about a minute on a CPU, which the learning test relies on). Two modes:

* `referring` (default): one sample per shape (and, with `negative_rate`, prompts for absent shapes with an
  empty mask, as CLIPSeg trains); `mask` is binary.
* `semantic`: one sample per scene; `mask` holds one class per shape kind (background 0, circle 1, square 2,
  triangle 3), optionally with an ignore band (255) `ignore_band` pixels wide around every shape's edge.

Scenes are a pure function of (seed, index): the dataset is the same on every machine, in any order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from clipseg_lab.labels import IGNORE_INDEX

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
KINDS = ("circle", "square", "triangle")
CLASS_NAMES = ("background",) + KINDS


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cy: float
    cx: float
    radius: float

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.kind}"


def _shape_mask(shape: Shape, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - shape.cy, xx - shape.cx
    if shape.kind == "circle":
        return dy**2 + dx**2 <= shape.radius**2
    if shape.kind == "square":
        return (np.abs(dy) <= shape.radius * 0.85) & (np.abs(dx) <= shape.radius * 0.85)
    # upright triangle: apex at the top, base at the bottom
    r = shape.radius
    inside_y = (dy >= -r) & (dy <= r * 0.8)
    half_width = (dy + r) / (1.8 * r) * r
    return inside_y & (np.abs(dx) <= half_width)


class SyntheticShapes(Dataset):
    """`num_scenes` seeded scenes of `size` x `size` pixels. See the module docstring."""

    def __init__(self, num_scenes: int = 200, size: int = 128, seed: int = 0, mode: str = "referring",
                 min_shapes: int = 2, max_shapes: int = 4, negative_rate: float = 0.0, ignore_band: int = 0,
                 radius: tuple[float, float] = (0.11, 0.18), distractors: str = "shared", transform=None):
        if mode not in ("referring", "semantic"):
            raise ValueError(f"mode must be 'referring' or 'semantic', not {mode!r}")
        if not 2 <= min_shapes <= max_shapes <= 6:
            raise ValueError("need 2 <= min_shapes <= max_shapes <= 6 (every scene holds distractors)")
        if distractors not in ("shared", "distinct_colours"):
            raise ValueError(f"distractors must be 'shared' or 'distinct_colours', not {distractors!r}")
        if distractors == "distinct_colours" and max_shapes > len(COLOURS):
            raise ValueError(f"distinct_colours allows at most {len(COLOURS)} shapes per scene")
        self.distractors = distractors
        self.num_scenes, self.size, self.seed, self.mode = num_scenes, size, seed, mode
        self.min_shapes, self.max_shapes = min_shapes, max_shapes
        self.negative_rate, self.ignore_band, self.transform = negative_rate, ignore_band, transform
        self.radius = tuple(radius)  # shape radius range, as a share of the image size
        self.class_names = CLASS_NAMES
        # scenes are pure functions of their index: render each once (a few MB for typical sizes)
        self.scene = functools.lru_cache(maxsize=max(num_scenes, 1))(self.scene)
        # index -> (scene, shape index or -1 for a negative prompt); a pure function of the seed
        self._index: list[tuple[int, int]] = []
        if mode == "referring":
            rng = np.random.default_rng([seed, 1_000_003])
            for scene in range(num_scenes):
                n = self._num_shapes(scene)
                self._index += [(scene, k) for k in range(n)]
                if negative_rate and rng.random() < negative_rate * n:
                    self._index.append((scene, -1))
        else:
            self._index = [(scene, 0) for scene in range(num_scenes)]

    def __len__(self) -> int:
        return len(self._index)

    def _num_shapes(self, scene: int) -> int:
        return int(np.random.default_rng([self.seed, scene, 7]).integers(self.min_shapes, self.max_shapes + 1))

    def scene(self, scene: int) -> tuple[np.ndarray, list[Shape], np.ndarray]:
        """Image `(H, W, 3)` uint8, the shapes, and a label map (-1 background, k = visible part of shape k)."""
        rng = np.random.default_rng([self.seed, scene])
        n = self._num_shapes(scene)
        s = self.size
        if self.distractors == "shared":
            # distractors that share a colour or a kind with the target: pick from a small palette of each
            colours = rng.choice(list(COLOURS), size=2, replace=False)
            kinds = rng.choice(KINDS, size=2, replace=False)
            combos = [(k, c) for k in kinds for c in colours]
            rng.shuffle(combos)
            extra = [(k, c) for k in KINDS for c in COLOURS if (k, c) not in combos]
            rng.shuffle(extra)
            chosen = (combos + extra)[:n]
        else:  # every shape its own colour: the colour word alone finds the target
            colours = rng.choice(list(COLOURS), size=n, replace=False)
            chosen = [(str(rng.choice(KINDS)), str(c)) for c in colours]
        shapes: list[Shape] = []
        for kind, colour in chosen:
            for _ in range(50):  # place without heavy overlap: centres at least one radius apart
                radius = rng.uniform(*self.radius) * s
                cy, cx = rng.uniform(radius, s - radius, size=2)
                if all(np.hypot(cy - o.cy, cx - o.cx) > radius + o.radius * 0.6 for o in shapes):
                    break
            shapes.append(Shape(str(kind), str(colour), float(cy), float(cx), float(radius)))
        base = rng.uniform(20, 90, size=3)
        yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
        image = base + 40 * yy * rng.uniform(-1, 1, size=3) + rng.normal(0, 6, size=(s, s, 3))
        labels = np.full((s, s), -1, np.int16)
        for k, shape in enumerate(shapes):  # later shapes are drawn over earlier ones
            m = _shape_mask(shape, s)
            image[m] = np.array(COLOURS[shape.colour]) + rng.normal(0, 8, size=(int(m.sum()), 3))
            labels[m] = k
        return np.clip(image, 0, 255).astype(np.uint8), shapes, labels

    def _prompt(self, shapes: list[Shape], target: Shape, rng: np.random.Generator) -> str:
        prompt = f"the {target.phrase}"
        if rng.random() < 0.3:
            others = [s for s in shapes if s is not target]
            if all(target.cx < o.cx for o in others):
                prompt += " on the left"
            elif all(target.cx > o.cx for o in others):
                prompt += " on the right"
        return prompt if rng.random() < 0.5 else "a " + prompt[4:]

    def __getitem__(self, index: int) -> dict:
        scene, k = self._index[index]
        image, shapes, labels = self.scene(scene)
        rng = np.random.default_rng([self.seed, scene, k + 11])
        name = f"shapes_{self.seed}_{scene:05d}"
        if self.mode == "semantic":
            mask = np.zeros(labels.shape, np.uint8)
            for j, shape in enumerate(shapes):
                mask[labels == j] = KINDS.index(shape.kind) + 1
            if self.ignore_band:
                mask[_edges(labels, self.ignore_band)] = IGNORE_INDEX
            prompt = ", ".join(sorted({s.kind for s in shapes}))
        elif k >= 0:
            mask = (labels == k).astype(np.uint8)
            prompt = self._prompt(shapes, shapes[k], rng)
        else:  # a negative: a colour-kind pair absent from the scene
            present = {(s.kind, s.colour) for s in shapes}
            absent = [(kd, c) for kd in KINDS for c in COLOURS if (kd, c) not in present]
            kind, colour = absent[int(rng.integers(len(absent)))]
            mask, prompt = np.zeros(labels.shape, np.uint8), f"the {colour} {kind}"
        sample = {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "mask": torch.from_numpy(mask),
                  "prompt": prompt, "name": name, "source": f"SyntheticShapes(seed={self.seed})#{scene}",
                  "dataset": "synthetic_shapes", "target": k}
        return self.transform(sample) if self.transform is not None else sample


def _edges(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of a change of label (4-neighbourhood, dilated)."""
    from scipy import ndimage

    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    return ndimage.binary_dilation(edge, iterations=max(width - 1, 0)) if width > 1 else edge
