"""What every loader shares: a list of records indexed once, samples as dicts, counted skips."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from clipseg_lab.errors import DatasetError as DatasetError  # re-exported: the loaders raise it from here

log = logging.getLogger(__name__)

# A sample is a dict: "image" uint8 (3, H, W), "mask" uint8 (H, W) (binary 0/1, or class indices with 255 =
# ignore), "prompt" str, "name" str (which sample), "source" str (the image file), "dataset" str, plus
# loader-specific metadata. Dicts collate with torch's default collate.
Sample = dict[str, Any]


def collate_samples(samples: list[Sample]) -> dict[str, Any]:
    """A batch: images and masks stacked, prompts and names as lists (other keys are left out)."""
    import torch

    return {"image": torch.stack([s["image"] for s in samples]), "mask": torch.stack([s["mask"] for s in samples]),
            "prompt": [s["prompt"] for s in samples], "name": [str(s["name"]) for s in samples]}


def with_transform(dataset, transform: Callable[[Sample], Sample] | None):
    """A shallow copy of `dataset` that applies `transform` (its records shared, not re-read); the dataset the
    caller holds keeps its own transform, e.g. a training augmentation."""
    import copy

    view = copy.copy(dataset)
    view.transform = transform
    return view


class RecordDataset(Dataset):
    """A dataset over `self.records` (built by the subclass's constructor) with an optional `transform`.

    Problems found while indexing (a missing mask, an unreadable entry) are recorded in `self.skipped` as
    (what, why) pairs and summarised once, so a long job says what it left out.
    """

    name = "dataset"

    def __init__(self, transform: Callable[[Sample], Sample] | None = None):
        self.transform = transform
        self.records: list[Any] = []
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.records)

    def load(self, record: Any) -> Sample:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(self.records[index])
        return self.transform(sample) if self.transform is not None else sample

    def skip(self, what: str, why: str) -> None:
        self.skipped.append((what, why))

    def report_skips(self) -> str:
        """One line per reason, with counts and an example; logged as a warning when anything was skipped."""
        if not self.skipped:
            return f"{self.name}: {len(self)} samples, nothing skipped"
        by_reason = Counter(why for _, why in self.skipped)
        example = {why: what for what, why in reversed(self.skipped)}
        lines = [f"{self.name}: {len(self)} samples; skipped {len(self.skipped)}:"]
        lines += [f"  {n} x {why} (e.g. {example[why]})" for why, n in by_reason.most_common()]
        text = "\n".join(lines)
        log.warning(text)
        return text

    def require_records(self, where: str) -> None:
        if not self.records:
            reasons = f" ({len(self.skipped)} entries skipped: {self.skipped[0][1]})" if self.skipped else ""
            raise DatasetError(f"{where}: no samples found{reasons}")
