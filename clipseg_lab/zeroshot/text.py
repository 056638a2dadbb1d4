"""The text side of training-free segmentation: queries per class, prompt templates, class scores.

* `text_queries`: the prompts CLIP compares every patch with, several per class ("road", "parking lot", or whole
  sentences such as "Aerial photo of a building in the city").
* `query_to_class`: which class each query stands for. This is NOT the data loaders' `label_to_class`, which maps
  ground-truth label values to the same classes.
* Templates: each query is written into every template ("a photo of a {}.") and the normalised text embeddings
  are averaged and renormalised (CLIP's prompt ensembling); `none` keeps the query as it is.
* Class scores (SegEarth-OV / SCLIP): `softmax(logit_scale * cosine)` over all queries, then each class takes the
  maximum probability over its queries. Background / clutter threshold: a pixel whose best class probability is
  below `threshold` is given the background class (SegEarth-OV's `prob_thd` with `bg_idx`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipseg_lab.errors import ConfigError

OPENAI_IMAGENET_80 = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "none": ("{}",),
    # the 80 ImageNet templates of CLIP's paper, as SCLIP / ClearCLIP / SegEarth-OV ensemble them
    "openai-imagenet-80": OPENAI_IMAGENET_80,
    # the 7 templates CLIP's prompt-engineering notebook selected
    "imagenet-7": ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                   "a {} in a video game.", "art of the {}.", "a photo of the small {}."),
    "aerial": ("an aerial photo of {}.", "a satellite image of {}.", "a remote sensing image of {}.",
               "an aerial view of the {}.", "a top-down photo of {}."),
}


def resolve_templates(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """A template set name, or a list of templates each holding one `{}`."""
    if spec is None:
        return TEMPLATE_SETS["none"]
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            return TEMPLATE_SETS[spec]
        if "{}" in spec:
            spec = [spec]
        else:
            raise ConfigError(f"unknown template set {spec!r}; known: {', '.join(TEMPLATE_SETS)}, or a list of "
                              "templates with '{}' where the query goes")
    templates = tuple(str(t) for t in spec)
    if not templates:
        raise ConfigError("templates is empty: give at least one, e.g. '{}' to use the queries as written")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ConfigError(f"templates must hold exactly one '{{}}' (where the query goes): {bad}")
    return templates


@dataclass(frozen=True)
class QuerySet:
    """Classes, the text queries, and the class index of each query."""

    classes: tuple[str, ...]
    queries: tuple[str, ...]
    query_class: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def queries_of(self, cls: int | str) -> list[str]:
        index = self.classes.index(cls) if isinstance(cls, str) else cls
        return [q for q, c in zip(self.queries, self.query_class) if c == index]


def build_query_set(classes: Sequence[str], text_queries: Sequence[str] | Mapping[str, Sequence[str]],
                    query_to_class: Mapping | None = None, *, background: str | None = None,
                    where: str = "config") -> QuerySet:
    """Check and index the queries.

    `text_queries` is a list (then `query_to_class` maps each query -- by its text, or by its 0-based position as
    the ReSeg-CLIP seed's `class_mapping` did -- to a class name or index), or a mapping `{class: [queries]}`
    (then `query_to_class` must be left out). Errors name the offending query or class and `where`.
    """
    classes = tuple(str(c) for c in classes)
    if not classes:
        raise ConfigError(f"{where}: classes is empty")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{where}: classes has duplicates: {list(classes)}")

    def class_index(value, query: str) -> int:
        if isinstance(value, bool):
            value = str(value)
        if isinstance(value, int):
            if not 0 <= value < len(classes):
                raise ConfigError(f"{where}: query_to_class maps {query!r} to class index {value}, outside "
                                  f"0..{len(classes) - 1}")
            return value
        if str(value) not in classes:
            raise ConfigError(f"{where}: query_to_class maps {query!r} to unknown class {value!r}; the classes are "
                              f"{list(classes)}")
        return classes.index(str(value))

    if isinstance(text_queries, Mapping):
        if query_to_class:
            raise ConfigError(f"{where}: text_queries is a {{class: [queries]}} mapping, so query_to_class must be "
                              "left out (it is implied)")
        queries, owners = [], []
        for cls, items in text_queries.items():
            items = [items] if isinstance(items, str) else list(items)
            for q in items:
                queries.append(str(q))
                owners.append(class_index(str(cls), str(q)))
    else:
        queries = [str(q) for q in text_queries]
        if not query_to_class:
            raise ConfigError(f"{where}: query_to_class is missing: map every text query to one of the classes "
                              f"{list(classes)}")
        resolved: dict[int, int] = {}
        for key, value in query_to_class.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and key not in queries):
                pos = int(key)
                if not 0 <= pos < len(queries):
                    raise ConfigError(f"{where}: query_to_class names query #{pos}, but text_queries has "
                                      f"{len(queries)} queries (0..{len(queries) - 1})")
            else:
                if str(key) not in queries:
                    raise ConfigError(f"{where}: query_to_class names the query {str(key)!r}, which is not in "
                                      f"text_queries {queries}. Add it to text_queries or fix its spelling.")
                pos = queries.index(str(key))
            if pos in resolved:
                raise ConfigError(f"{where}: query {queries[pos]!r} is mapped twice in query_to_class")
            resolved[pos] = class_index(value, queries[pos])
        unmapped = [q for i, q in enumerate(queries) if i not in resolved]
        if unmapped:
            raise ConfigError(f"{where}: these text queries have no class in query_to_class: {unmapped}")
        owners = [resolved[i] for i in range(len(queries))]
    if not queries:
        raise ConfigError(f"{where}: text_queries is empty")
    empty = [q for q in queries if not q.strip()]
    if empty:
        raise ConfigError(f"{where}: text_queries holds an empty query")
    dupes = sorted({q for q in queries if queries.count(q) > 1})
    if dupes:
        raise ConfigError(f"{where}: text_queries has duplicates: {dupes}")
    missing = [c for i, c in enumerate(classes) if i not in owners and c != background]
    if missing:
        raise ConfigError(f"{where}: no text query for the class(es) {missing}: add a query for each, or make the "
                          "class the background class (predicted where no class is confident)")
    return QuerySet(classes, tuple(queries), tuple(owners))


@torch.inference_mode()
def encode_queries(backbone, queries: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """`(Q, D)` float32 unit-norm text embeddings: per query, the mean of its normalised templated embeddings."""
    prompts = [t.format(q) for q in queries for t in templates]
    emb = F.normalize(backbone.encode_text(prompts).float(), dim=-1)
    emb = emb.view(len(queries), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


def class_probabilities(logits: torch.Tensor, query_class: Sequence[int] | torch.Tensor, num_classes: int,
                        logit_scale: float = 50.0) -> torch.Tensor:
    """Query cosine similarities `(Q, ...)` -> class probabilities `(C, ...)`: softmax over the queries of
    `logit_scale * logits`, then the maximum over each class's queries (0 for a class without queries)."""
    index = torch.as_tensor(query_class, device=logits.device, dtype=torch.long)
    probs = (logits.float() * logit_scale).softmax(0)
    out = torch.zeros((num_classes, *probs.shape[1:]), dtype=probs.dtype, device=probs.device)
    for c in range(num_classes):
        members = (index == c).nonzero().flatten()
        if len(members):
            out[c] = probs[members].amax(0)
    return out


def predict_classes(probs: torch.Tensor, background: int | None = None, threshold: float = 0.0) -> torch.Tensor:
    """Class probabilities `(C, H, W)` -> class indices `(H, W)`; below `threshold`, the background class."""
    best, pred = probs.max(0)
    if background is not None and threshold > 0:
        pred = torch.where(best < threshold, torch.full_like(pred, background), pred)
    return pred
