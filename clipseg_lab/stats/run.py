"""The hypothesis test over a dataset: per-image populations, skipped images with reasons, one table row per
dataset and split.

Memory stays bounded whatever the dataset size: each image's A and B are reduced to their moments (n, mean,
sum of squared deviations; merged exactly with Chan's formula) and its per-image means, plus the subsample
the subsampled tests use ("random:N": a uniform random sample of N pairs of the whole split, kept as the N
smallest of a uniform key per pair; "every:K": every K-th pair of each image). The all-pairs Welch test is
computed from the moments, so it covers every pair without keeping them.

Which mask is "the objects": a sample's `instance_mask` (int, -1 = ignore) when the loader gives one
(Cityscapes, Penn-Fudan), else its `mask` with 255 = ignore. For semantic masks an object is a class region
(`objects="components"` splits it into connected components). RefCOCO / PhraseCut masks are binary: the
referred object vs the rest of the image. Samples whose image is a placeholder (RefCOCO without COCO
images) are skipped and reported, and repeated (image, mask) samples (several sentences for one object)
are counted once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipseg_lab.data.masks import IGNORE_INDEX
from clipseg_lab.stats.pairs import MODES, PairPopulations, choose_pair_distance, object_labels, pair_populations
from clipseg_lab.stats.significance import (
    hedges_g,
    mann_whitney,
    parse_subsample,
    per_image_test,
    verdict,
    welch_from_summary,
    welch_test,
)

log = logging.getLogger(__name__)

# where each dataset sits in a samples folder (../shared/data, $CLIPSEG_LAB_SAMPLES), in the order reported
SAMPLE_FOLDERS = {"oxford_pet": "oxford_pet", "potsdam": "remote_sensing/potsdam", "loveda": "remote_sensing/loveda",
                  "cityscapes": "cityscapes", "pennfudan": "pennfudan", "refcoco": "refcoco/refcoco.json",
                  "phrasecut": "phrasecut"}
# datasets without an official split: one row over every image
DEFAULT_SPLITS = {"pennfudan": ["all"]}
# loaders that stop without their images unless told to use placeholders (which are then skipped)
PLACEHOLDER_OPTION = {"refcoco", "refcoco+", "refcocog"}


@dataclass
class HypothesisConfig:
    """How pairs are drawn and tested. `pair_distance="auto"`: chosen per dataset by `choose_pair_distance`
    from the first `calibration_images` masks (the same d for every split of a dataset)."""

    mode: str = "neighbours"  # or "random"
    pair_distance: int | str = "auto"
    neighbourhood: int = 4  # or 8
    random_pairs: int = 10_000  # mode "random": pairs per image and population
    subsample: str | int | None = "random:10000"  # per row and population: "random:N", "every:K" or "none"
    objects: str = "labels"  # or "components"
    seed: int = 0
    confidence: float = 0.95
    alpha: float = 0.001  # the seed's 99.9 %
    limit: int | None = None  # images per split
    calibration_images: int = 20
    auto_quantile: float = 0.75

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        d = self.pair_distance
        if d != "auto" and (isinstance(d, str) or int(d) != d or int(d) < 1):
            raise ValueError(f"pair_distance must be 'auto' or a positive integer, not {self.pair_distance!r}")
        parse_subsample(self.subsample)


@dataclass
class Moments:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations

    def add(self, values: np.ndarray) -> None:
        if values.size:
            self.merge(Moments(int(values.size), float(values.mean(dtype=np.float64)),
                               float(values.var(dtype=np.float64)) * values.size))

    def merge(self, other: Moments) -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta**2 * self.n * other.n / n
        self.mean += delta * other.n / n
        self.n = n

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else math.nan


class Subsample:
    """The pairs the subsampled tests use: every K-th pair of each image, or N uniform random pairs of all."""

    def __init__(self, spec: str | int | None):
        self.kind, self.size = parse_subsample(spec)
        self.parts: list[np.ndarray] = []
        self.keys = np.zeros(0)
        self.values = np.zeros(0, np.float32)

    def add(self, values: np.ndarray, rng: np.random.Generator) -> None:
        if self.kind == "none":
            self.parts.append(values)
        elif self.kind == "every":
            self.parts.append(values[:: self.size])
        else:
            self._keep(rng.random(values.size), values)

    def _keep(self, keys: np.ndarray, values: np.ndarray) -> None:
        keys, values = np.concatenate([self.keys, keys]), np.concatenate([self.values, values])
        if keys.size > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keys, values = keys[keep], values[keep]
        self.keys, self.values = keys, values

    def merge(self, other: Subsample) -> None:
        self.parts += other.parts
        if other.kind == "random":
            self._keep(other.keys, other.values)

    def array(self) -> np.ndarray:
        if self.kind == "random":
            return self.values[np.argsort(self.keys, kind="stable")]
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


@dataclass
class Group:
    """Everything one table row needs: moments, per-image means, subsamples, counts."""

    dataset: str
    split: str
    config: HypothesisConfig
    distance: int | None
    inside: Moments = field(default_factory=Moments)
    across: Moments = field(default_factory=Moments)
    image_means: list[tuple[float, float]] = field(default_factory=list)
    sub_inside: Subsample | None = None
    sub_across: Subsample | None = None
    images: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        self.sub_inside = self.sub_inside or Subsample(self.config.subsample)
        self.sub_across = self.sub_across or Subsample(self.config.subsample)

    def add(self, pops: PairPopulations, rng: np.random.Generator) -> dict[str, Any]:
        self.inside.add(pops.inside)
        self.across.add(pops.across)
        self.sub_inside.add(pops.inside, rng)
        self.sub_across.add(pops.across, rng)
        described = pops.describe()
        self.image_means.append((described["mean_A"], described["mean_B"]))
        self.images += 1
        return described

    def merge(self, other: Group) -> None:
        self.inside.merge(other.inside)
        self.across.merge(other.across)
        self.sub_inside.merge(other.sub_inside)
        self.sub_across.merge(other.sub_across)
        self.image_means += other.image_means
        self.images += other.images
        self.skipped += other.skipped

    def row(self) -> dict[str, Any]:
        c = self.config
        a, b = self.inside, self.across
        welch = welch_from_summary(a.n, a.mean if a.n else math.nan, a.sd, b.n, b.mean if b.n else math.nan, b.sd,
                                   c.confidence)
        sub_a, sub_b = self.sub_inside.array(), self.sub_across.array()
        sub = welch_test(sub_b, sub_a, c.confidence)
        means = np.array(self.image_means, np.float64).reshape(-1, 2)
        paired = per_image_test(means[:, 0], means[:, 1], c.confidence)
        v_all = verdict(welch.t, welch.dof, c.alpha, welch.p_two_sided)
        v_sub = verdict(sub.t, sub.dof, c.alpha, sub.p_two_sided)
        v_img = verdict(paired["image_t"], paired["image_dof"], c.alpha, paired["image_p_two_sided"])
        row: dict[str, Any] = {
            "dataset": self.dataset, "split": self.split, "images": self.images, "skipped": self.skipped,
            "mode": c.mode, "pair_distance": self.distance, "neighbourhood": c.neighbourhood if c.mode == "neighbours"
            else None, "subsample": str(c.subsample),
            "n_A": welch.n_A, "n_B": welch.n_B, "mean_A": welch.mean_A, "sd_A": welch.sd_A, "mean_B": welch.mean_B,
            "sd_B": welch.sd_B, "difference": welch.difference, "welch_t": welch.t, "dof": welch.dof,
            "p_value": welch.p_two_sided, "p_one_sided": welch.p_one_sided, "ci_low": welch.ci_low,
            "ci_high": welch.ci_high, "hedges_g": welch.hedges_g,
            "sub_n_A": sub.n_A, "sub_n_B": sub.n_B, "sub_welch_t": sub.t, "sub_dof": sub.dof,
            "sub_p_value": sub.p_two_sided, "sub_p_one_sided": sub.p_one_sided, "sub_ci_low": sub.ci_low,
            "sub_ci_high": sub.ci_high, "sub_hedges_g": sub.hedges_g,
            **mann_whitney(sub_b, sub_a), **paired,
            "critical_99_9_inf": v_all["critical_inf"], "critical_exact": v_all["critical_exact"],
            "reject_all_pairs": v_all["reject"], "reject_subsample": v_sub["reject"],
            "reject_per_image": v_img["reject"], "verdict_all_pairs": v_all["verdict"],
            "verdict_subsample": v_sub["verdict"], "verdict_per_image": v_img["verdict"],
        }
        return row


@dataclass
class HypothesisResult:
    rows: list[dict[str, Any]]
    images: list[dict[str, Any]]  # one per analysed image
    skipped: list[dict[str, Any]]  # dataset, split, name, reason
    distances: dict[str, dict[str, Any]]  # dataset -> how its pair distance was chosen
    config: HypothesisConfig
    samples: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # subsampled A, B
    notes: list[str] = field(default_factory=list)  # splits or datasets not available, and why

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "distances": self.distances, "rows": self.rows,
                "images": self.images, "skipped": self.skipped, "notes": self.notes}

    def extend(self, other: HypothesisResult) -> HypothesisResult:
        self.rows += other.rows
        self.images += other.images
        self.skipped += other.skipped
        self.distances.update(other.distances)
        self.samples.update(other.samples)
        self.notes += other.notes
        return self


def _labels_of(sample: dict[str, Any]) -> tuple[Any, int | None]:
    if "instance_mask" in sample:
        return sample["instance_mask"], None  # ignore = negative
    return sample["mask"], IGNORE_INDEX


def _mask_key(sample: dict[str, Any]) -> tuple[str, str]:
    labels, _ = _labels_of(sample)
    array = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()
    return str(sample.get("source", sample.get("name"))), digest


def _usable(sample: dict[str, Any]) -> str | None:
    """Why a loaded sample cannot be used, or None."""
    if sample.get("placeholder"):
        return "placeholder image: the real image is not in the sample (RefCOCO without COCO images; pass image_dir)"
    if sample.get("has_label") is False:
        return "no ground-truth label for this tile"
    if "mask" not in sample and "instance_mask" not in sample:
        return "sample without a mask"
    return None


def calibrate_distance(samples: Iterable[dict[str, Any]], config: HypothesisConfig) -> dict[str, Any]:
    """The pair distance for these samples: the configured integer, or `choose_pair_distance` on their masks."""
    if config.mode == "random":
        return {"distance": None, "rule": "random pairs at any distance"}
    if config.pair_distance != "auto":
        return {"distance": int(config.pair_distance), "rule": "given"}
    maps = []
    for sample in samples:
        if _usable(sample) is None:
            labels, ignore = _labels_of(sample)
            maps.append(object_labels(labels, ignore, config.objects))
        if len(maps) >= config.calibration_images:
            break
    return choose_pair_distance(maps, config.auto_quantile)


def analyse_samples(samples: Iterable[dict[str, Any] | tuple[str, Exception]], dataset: str, split: str,
                    config: HypothesisConfig, distance: int | None) -> tuple[Group, list[dict], list[dict], tuple]:
    """Populations of every sample into one `Group`. Items may be `(name, exception)` for samples that failed
    to load; they and unusable samples are skipped with the reason."""
    group = Group(dataset, split, config, distance)
    images, skipped, seen = [], [], set()
    stream = zlib.crc32(f"{dataset}/{split}".encode())  # independent random streams per dataset, split, image
    for index, sample in enumerate(samples):
        if isinstance(sample, tuple):
            name, exc = sample
            skipped.append({"dataset": dataset, "split": split, "name": name, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        name = str(sample.get("name", index))
        reason = _usable(sample)
        key = _mask_key(sample) if reason is None else None
        if reason is None and key in seen:
            reason = "the same image and mask as an earlier sample (another prompt for one object): counted once"
        if reason is not None:
            skipped.append({"dataset": dataset, "split": split, "name": name, "reason": reason})
            continue
        seen.add(key)
        labels, ignore = _labels_of(sample)
        rng = np.random.default_rng([config.seed, stream, index])
        try:
            pops = pair_populations(sample["image"], labels, mode=config.mode, distance=distance or 1,
                                    neighbourhood=config.neighbourhood, n_pairs=config.random_pairs, seed=rng,
                                    ignore_index=ignore, objects=config.objects,
                                    source=str(sample.get("mask_source", sample.get("source", name))))
        except ValueError as exc:  # MaskError, NoBoundaryError, bad shapes
            skipped.append({"dataset": dataset, "split": split, "name": name, "reason": str(exc)})
            continue
        described = group.add(pops, rng)
        images.append({"dataset": dataset, "split": split, "name": name, **described,
                       "difference": described["mean_B"] - described["mean_A"]})
    group.skipped = len(skipped)
    for reason, names in _by_reason(skipped).items():
        log.warning("%s %s: skipped %d sample(s) (e.g. %s): %s", dataset, split, len(names), names[0], reason)
    return group, images, skipped, (group.sub_inside.array(), group.sub_across.array())


def _by_reason(skipped: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in skipped:
        out.setdefault(s["reason"], []).append(s["name"])
    return out


def _iterate(dataset: Any, limit: int | None) -> Iterable[dict[str, Any] | tuple[str, Exception]]:
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        try:
            yield dataset[i]
        except Exception as exc:  # one unreadable file must not stop the run: it is reported
            record = dataset.records[i] if hasattr(dataset, "records") else i
            yield (str(getattr(record, "name", record)), exc)


def open_splits(name: str, root: Any, splits: list[str] | None = None, **options: Any) -> tuple[list, list[str]]:
    """[(split, dataset)] for the splits that open, and notes on those that do not. Splits that hold the same
    records (remote-sensing tiles without split folders) collapse into one split called "all"."""
    from clipseg_lab.data.registry import DATASETS, open_dataset

    if name not in DATASETS:
        open_dataset(name, root, "train")  # raises the unknown-name error listing the known names
    if name in PLACEHOLDER_OPTION:  # missing COCO images become skipped samples instead of failing the split
        options.setdefault("images", "placeholder")
    wanted = splits or DEFAULT_SPLITS.get(name) or list(dict.fromkeys(DATASETS[name].splits.values()))
    opened, notes = [], []
    for split in wanted:
        try:
            opened.append((split, open_dataset(name, root, split, **options)))
        except (ValueError, FileNotFoundError, OSError) as exc:
            notes.append(f"{name} {split}: not available ({exc})")
    if len(opened) > 1 and all(hasattr(d, "records") for _, d in opened):
        records = [repr(d.records) for _, d in opened]
        if all(r == records[0] for r in records):
            opened = [("all", opened[0][1])]
            notes.append(f"{name}: no split folders; one row over every image")
    notes += [f"{name} {split}: {note}" for split, data in opened for note in getattr(data, "notes", [])]
    return opened, notes


def index_skips(dataset: str, split: str, data: Any) -> list[dict[str, Any]]:
    """What the loader left out while indexing a split (a missing mask or image, a task without a phrase), as
    skipped entries. Entries the loader kept as records (a tile kept without its label: skipped later as
    unusable) are not repeated here."""
    return [{"dataset": dataset, "split": split, "name": what, "reason": f"not loaded: {why}"}
            for what, why in getattr(data, "skipped", []) if "kept" not in why]


def run_hypothesis(name: str, root: Any, config: HypothesisConfig | None = None, *, splits: list[str] | None = None,
                   label: str | None = None, **options: Any) -> HypothesisResult:
    """The test on one registered dataset: one row per split, plus an "all" row when there are several.

    A dataset that cannot be opened at all (or has no usable image) gives a result with no rows and a note
    saying why; skipped images are listed with their reasons.
    """
    config = config or HypothesisConfig()
    label = label or name
    opened, notes = open_splits(name, root, splits, **options)
    for note in notes:
        log.info(note)
    if not opened:
        return HypothesisResult([], [], [], {}, config, notes=notes or [f"{label}: nothing to open at {root}"])

    def calibration_samples():
        for _, data in opened:
            for item in _iterate(data, config.limit):
                if not isinstance(item, tuple):
                    yield item

    choice = calibrate_distance(calibration_samples(), config)
    groups, images, skipped, samples = [], [], [], {}
    for split, data in opened:
        group, imgs, skips, sub = analyse_samples(_iterate(data, config.limit), label, split, config,
                                                  choice["distance"])
        skips = index_skips(label, split, data) + skips
        group.skipped = len(skips)
        groups.append(group)
        images += imgs
        skipped += skips
        samples[(label, split)] = sub
    if len(groups) > 1:
        total = Group(label, "all", config, choice["distance"])
        for g in groups:
            total.merge(g)
        groups.append(total)
        samples[(label, "all")] = (total.sub_inside.array(), total.sub_across.array())
    rows = [g.row() for g in groups if g.images]
    if not rows:
        reasons = sorted({s["reason"] for s in skipped})
        notes.append(f"{label}: no usable image ({len(skipped)} skipped: {'; '.join(reasons[:3])})")
    return HypothesisResult(rows, images, skipped, {label: choice}, config, samples, notes)


def run_on_samples(samples: Iterable[dict[str, Any]], label: str = "predicted", split: str = "all",
                   config: HypothesisConfig | None = None) -> HypothesisResult:
    """The test on in-memory samples: dicts with "image" and "mask" (e.g. a model's predicted masks, class
    indices or 0/1, 255 = ignore) or "instance_mask" (-1 = ignore), and optionally "name"."""
    config = config or HypothesisConfig()
    samples = list(samples)
    choice = calibrate_distance(samples, config)
    group, images, skipped, sub = analyse_samples(samples, label, split, config, choice["distance"])
    rows = [group.row()] if group.images else []
    notes = [] if rows else [f"{label}: no usable sample"]
    return HypothesisResult(rows, images, skipped, {label: choice}, config, {(label, split): sub}, notes)


def distance_profile(samples: Iterable[dict[str, Any]], distances: Iterable[int], label: str,
                     neighbourhood: int = 4, objects: str = "labels") -> list[dict[str, Any]]:
    """Mean A and B (and Hedges' g of all pairs) at each pair distance, over these samples: does the answer
    depend on d? Unusable samples are left out silently (the main run reports them)."""
    distances = list(distances)
    moments = {d: (Moments(), Moments()) for d in distances}
    for sample in samples:
        if isinstance(sample, tuple) or _usable(sample) is not None:
            continue
        labels, ignore = _labels_of(sample)
        for d in distances:
            try:
                pops = pair_populations(sample["image"], labels, distance=d, neighbourhood=neighbourhood,
                                        ignore_index=ignore, objects=objects)
            except ValueError:
                break
            moments[d][0].add(pops.inside)
            moments[d][1].add(pops.across)
    rows = []
    for d, (a, b) in moments.items():
        rows.append({"dataset": label, "pair_distance": d, "n_A": a.n, "n_B": b.n,
                     "mean_A": a.mean if a.n else math.nan, "mean_B": b.mean if b.n else math.nan,
                     "hedges_g": hedges_g(a.mean, a.sd, a.n, b.mean, b.sd, b.n)})
    return rows


def sample_datasets(root: Any) -> tuple[dict[str, Path], list[str]]:
    """{name: path} of the datasets present in a samples folder, and notes on those absent."""
    root = Path(root)
    present = {n: root / f for n, f in SAMPLE_FOLDERS.items() if (root / f).exists()}
    absent = [f"{n}: {root / f} not found" for n, f in SAMPLE_FOLDERS.items() if n not in present]
    return present, absent


def run_sample_datasets(root: Any, config: HypothesisConfig | None = None, names: Iterable[str] | None = None,
                        synthetic_fallback: int = 0) -> HypothesisResult:
    """`run_hypothesis` on every dataset of a samples folder (or `names` of them); absent ones are noted.

    `synthetic_fallback=N`: when no dataset is found at all, test N semantic SyntheticShapes scenes instead
    (labelled "synthetic_shapes" in every row and figure) so that a notebook still runs; 0 = off."""
    config = config or HypothesisConfig()
    present, absent = sample_datasets(root)
    if names is not None:
        present = {n: p for n, p in present.items() if n in set(names)}
    result = HypothesisResult([], [], [], {}, config, notes=list(absent))
    for name, path in present.items():
        result.extend(run_hypothesis(name, path, config))
    if not present and synthetic_fallback:
        result.notes.append(f"no real samples in {root}: SyntheticShapes (semantic, {synthetic_fallback} scenes) "
                            "tested instead; it says nothing about real images")
        result.extend(run_hypothesis("synthetic_shapes", None, config, splits=["train"], mode="semantic",
                                     num_scenes=synthetic_fallback))
    return result


def iter_dataset_samples(name: str, root: Any, limit: int | None = None, splits: list[str] | None = None,
                         **options: Any) -> Iterable[dict[str, Any]]:
    """Every loadable sample of every split of a registered dataset (at most `limit` per split)."""
    opened, _ = open_splits(name, root, splits, **options)
    for _, data in opened:
        for item in _iterate(data, limit):
            if not isinstance(item, tuple):
                yield item


def sample_distance_profile(root: Any, distances: Iterable[int], config: HypothesisConfig | None = None,
                            names: Iterable[str] | None = None, synthetic_fallback: int = 0) -> list[dict[str, Any]]:
    """`distance_profile` of every dataset of a samples folder (or `names` of them), with the same fallback to
    SyntheticShapes as `run_sample_datasets`."""
    config = config or HypothesisConfig()
    present, _ = sample_datasets(root)
    if names is not None:
        present = {n: p for n, p in present.items() if n in set(names)}
    rows = []
    for name, path in present.items():
        rows += distance_profile(iter_dataset_samples(name, path, config.limit), distances, name,
                                 config.neighbourhood, config.objects)
    if not present and synthetic_fallback:
        samples = iter_dataset_samples("synthetic_shapes", None, splits=["train"], mode="semantic",
                                       num_scenes=synthetic_fallback)
        rows += distance_profile(samples, distances, "synthetic_shapes", config.neighbourhood, config.objects)
    return rows
