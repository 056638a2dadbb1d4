"""Segmentation metrics that stream over a dataset and reduce across processes.

`SegmentationMetrics`: a confusion matrix over classes (ignore 255) -> pixel accuracy (= overall accuracy,
OA), per-class IoU, Dice, precision, recall, F1, and their means (mIoU, mDice, mF1). A class that appears
neither in the predictions nor in the ground truth gets NaN and is left out of the means.

`BinaryMetrics`: for one mask per prompt (probabilities in [0, 1]): dataset-level foreground IoU (IoU_FG),
background IoU and their mean (the mIoU CLIPSeg reports for PhraseCut), Dice, per-image IoU / Dice, a sweep
over thresholds, and pixel-wise average precision (AP) from a histogram of probabilities, as CLIPSeg reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipseg_lab.labels import IGNORE_INDEX


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        nccl = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only; the counts may live on the CPU
        reduced = t.to("cuda", copy=True) if nccl else t.clone()
        dist.all_reduce(reduced)
        return reduced.to(t.device)
    return t


class SegmentationMetrics:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # rows: truth, columns: prediction
        self.image_miou: list[float] = []  # per image: mean IoU over the classes in its truth or prediction
        self.image_accuracy: list[float] = []

    def reset(self) -> None:
        self.confusion.zero_()
        self.image_miou, self.image_accuracy = [], []

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """`pred`: class indices `(B, H, W)` or scores `(B, C, H, W)`; `target`: indices `(B, H, W)`."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        valid = target != self.ignore_index
        t, p = target[valid].long().cpu(), pred[valid].long().cpu()
        if t.numel() and (t.max() >= self.num_classes or t.min() < 0):
            raise ValueError(f"target holds class {int(t.max())}, outside 0..{self.num_classes - 1} (and not the "
                             f"ignore index {self.ignore_index})")
        n = self.num_classes
        self.confusion += torch.bincount(t * n + p.clamp(0, n - 1), minlength=n ** 2).view(n, n)
        if target.ndim == 2:
            pred, target, valid = pred[None], target[None], valid[None]
        for p_img, t_img, v_img in zip(pred.long().cpu(), target.long().cpu(), valid.cpu()):
            cm = torch.bincount(t_img[v_img] * n + p_img[v_img].clamp(0, n - 1), minlength=n ** 2).view(n, n).double()
            if cm.sum() == 0:
                continue  # an all-ignore image has no score (it is also absent from the confusion matrix)
            tp = cm.diag()
            union = cm.sum(0) + cm.sum(1) - tp
            self.image_miou.append(float((tp[union > 0] / union[union > 0]).mean()))
            self.image_accuracy.append(float(tp.sum() / cm.sum()))

    def synchronize(self) -> None:
        """Sum the confusion matrices of all processes and gather their per-image scores (DDP); a no-op in a
        single process."""
        import torch.distributed as dist

        self.confusion = _all_reduce(self.confusion)
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.image_miou, self.image_accuracy))
            self.image_miou = [v for m, _ in gathered for v in m]
            self.image_accuracy = [v for _, a in gathered for v in a]

    def compute(self) -> dict[str, Any]:
        cm = self.confusion.double()
        tp = cm.diag()
        fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
        total = cm.sum()
        if total == 0:
            raise ValueError("no valid pixels were seen: every target pixel was the ignore index")
        nan = torch.tensor(float("nan"), dtype=torch.float64)

        def ratio(a, b):
            return torch.where(b > 0, a / b.clamp(min=1e-12), nan)

        iou, dice = ratio(tp, tp + fp + fn), ratio(2 * tp, 2 * tp + fp + fn)
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        f1 = ratio(2 * precision * recall, precision + recall)
        f1 = torch.where((tp + fp + fn) > 0, torch.nan_to_num(f1, nan=0.0), nan)
        per_class = {name: {"iou": float(iou[k]), "dice": float(dice[k]), "precision": float(precision[k]),
                            "recall": float(recall[k]), "f1": float(f1[k]), "support": int(cm[k].sum())}
                     for k, name in enumerate(self.class_names)}
        oa = float(tp.sum() / total)
        return {"pixel_accuracy": oa, "oa": oa, "miou": float(torch.nanmean(iou)), "mdice": float(torch.nanmean(dice)),
                "mf1": float(torch.nanmean(f1)), "mean_precision": float(torch.nanmean(precision)),
                "mean_recall": float(torch.nanmean(recall)),
                "mean_foreground_dice": float(torch.nanmean(dice[1:])) if self.num_classes > 1 else float(dice[0]),
                "per_class": per_class, "pixels": int(total)}


class BinaryMetrics:
    """Streaming metrics for binary masks; `update(probs, target)` with probabilities and {0, 1, 255} targets."""

    def __init__(self, threshold: float = 0.5, sweep: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
                 ap_bins: int = 1000, ignore_index: int = IGNORE_INDEX):
        self.threshold, self.ignore_index = threshold, ignore_index
        self.sweep = torch.tensor(sorted(set(list(sweep) + [threshold])), dtype=torch.float64)
        self.ap_bins = ap_bins
        self.reset()

    def reset(self) -> None:
        n = len(self.sweep)
        self.tp, self.fp, self.fn, self.tn = (torch.zeros(n, dtype=torch.float64) for _ in range(4))
        self.pos_hist = torch.zeros(self.ap_bins, dtype=torch.float64)
        self.neg_hist = torch.zeros(self.ap_bins, dtype=torch.float64)
        self.image_iou: list[float] = []
        self.image_dice: list[float] = []

    @torch.no_grad()
    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        if probs.shape != target.shape:
            raise ValueError(f"probabilities {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
        if probs.ndim == 2:
            probs, target = probs[None], target[None]
        probs, target = probs.detach().float().cpu(), target.cpu()
        for p, t in zip(probs, target):
            valid = t != self.ignore_index
            p, t = p[valid].double(), t[valid].bool()
            pred = p[None] > self.sweep[:, None]  # (thresholds, pixels)
            self.tp += (pred & t).sum(1)
            self.fp += (pred & ~t).sum(1)
            self.fn += (~pred & t).sum(1)
            self.tn += (~pred & ~t).sum(1)
            k = int((self.sweep == self.threshold).nonzero()[0])
            tp, fp, fn = (pred[k] & t).sum().item(), (pred[k] & ~t).sum().item(), (~pred[k] & t).sum().item()
            union = tp + fp + fn
            self.image_iou.append(tp / union if union else 1.0)  # empty truth and empty prediction: perfect
            self.image_dice.append(2 * tp / (2 * tp + fp + fn) if union else 1.0)
            bins = (p * self.ap_bins).long().clamp(0, self.ap_bins - 1)
            self.pos_hist += torch.bincount(bins[t], minlength=self.ap_bins).double()
            self.neg_hist += torch.bincount(bins[~t], minlength=self.ap_bins).double()

    def synchronize(self) -> None:
        """Sum the counts of all processes and gather their per-image scores (DDP); a no-op otherwise."""
        import torch.distributed as dist

        for name in ("tp", "fp", "fn", "tn", "pos_hist", "neg_hist"):
            setattr(self, name, _all_reduce(getattr(self, name)))
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.image_iou, self.image_dice))
            self.image_iou = [v for iou, _ in gathered for v in iou]
            self.image_dice = [v for _, dice in gathered for v in dice]

    def average_precision(self) -> float:
        """Area under the precision-recall curve over pixels, thresholds at the histogram's bin edges (step
        interpolation, as sklearn's average_precision_score)."""
        tp = self.pos_hist.flip(0).cumsum(0)  # predicted positive at >= each bin, from the top bin down
        fp = self.neg_hist.flip(0).cumsum(0)
        positives = self.pos_hist.sum()
        if positives == 0:
            return float("nan")
        precision = tp / (tp + fp).clamp(min=1e-12)
        recall = tp / positives
        recall_prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
        return float(((recall - recall_prev) * precision).sum())

    def compute(self) -> dict[str, Any]:
        if float(self.tp[0] + self.fp[0] + self.fn[0] + self.tn[0]) == 0:
            raise ValueError("no valid pixels were seen: every target pixel was the ignore index")
        iou_fg = self.tp / (self.tp + self.fp + self.fn).clamp(min=1e-12)
        iou_bg = self.tn / (self.tn + self.fn + self.fp).clamp(min=1e-12)
        dice = 2 * self.tp / (2 * self.tp + self.fp + self.fn).clamp(min=1e-12)
        accuracy = (self.tp + self.tn) / (self.tp + self.tn + self.fp + self.fn).clamp(min=1e-12)
        k = int((self.sweep == self.threshold).nonzero()[0])
        best = int(iou_fg.argmax())
        return {"threshold": self.threshold, "iou_fg": float(iou_fg[k]), "iou_bg": float(iou_bg[k]),
                "miou": float((iou_fg[k] + iou_bg[k]) / 2), "dice": float(dice[k]),
                "pixel_accuracy": float(accuracy[k]), "ap": self.average_precision(),
                "mean_image_iou": float(np.mean(self.image_iou)) if self.image_iou else float("nan"),
                "mean_image_dice": float(np.mean(self.image_dice)) if self.image_dice else float("nan"),
                "best_threshold": float(self.sweep[best]), "best_iou_fg": float(iou_fg[best]),
                "sweep": {f"{float(t):.2f}": float(v) for t, v in zip(self.sweep, iou_fg)}}
