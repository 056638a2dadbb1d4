"""Segmentation losses: binary (one mask per prompt) and multi-class (one class per pixel), all with ignore 255.

Binary losses take logits `(B, H, W)` and targets `(B, H, W)` in {0, 1} (255 = ignore); multi-class losses
take logits `(B, C, H, W)` and class indices `(B, H, W)` (255 = ignore). `build_loss(name)` names them all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from clipseg_lab.labels import IGNORE_INDEX


def _valid(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return target != ignore_index


def bce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the non-ignored pixels."""
    valid = _valid(target, ignore_index)
    return F.binary_cross_entropy_with_logits(logits[valid], target[valid].float())


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum p + sum t + s), per image, averaged over the batch (p = sigmoid(logits))."""
    valid = _valid(target, ignore_index)
    p = torch.sigmoid(logits) * valid
    t = torch.where(valid, target, 0).float()
    dims = tuple(range(1, logits.ndim))
    dice = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return 1 - dice.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), torchvision's sigmoid_focal_loss averaged over the non-ignored pixels."""
    valid = _valid(target, ignore_index)
    return sigmoid_focal_loss(logits[valid], target[valid].float(), alpha=alpha, gamma=gamma, reduction="mean")


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    return bce_loss(logits, target, ignore_index) + dice_weight * soft_dice_loss(logits, target,
                                                                                 ignore_index=ignore_index)


def inverse_frequency_weights(target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-batch class weights N / (C_present * n_c) for the classes present (0 for absent ones), so the
    present classes weigh in equally."""
    valid = target[_valid(target, ignore_index)]
    counts = torch.bincount(valid.flatten().long(), minlength=num_classes)[:num_classes].float()
    present = counts > 0
    weights = torch.zeros(num_classes, device=target.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | str | None = None,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy over classes; `weights="inverse_frequency"` recomputes class weights from each batch."""
    if isinstance(weights, str):
        if weights != "inverse_frequency":
            raise ValueError(f"unknown class weighting {weights!r}; use 'inverse_frequency' or a tensor")
        weights = inverse_frequency_weights(target, logits.shape[1], ignore_index)
    return F.cross_entropy(logits, target.long(), weight=weights, ignore_index=ignore_index)


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax probabilities and one-hot targets (ignored
    pixels left out), computed over the whole batch."""
    num_classes = logits.shape[1]
    valid = _valid(target, ignore_index)
    probs = logits.softmax(1) * valid[:, None]
    onehot = F.one_hot(torch.where(valid, target, 0).long(), num_classes).permute(0, 3, 1, 2) * valid[:, None]
    dims = (0, 2, 3)
    dice = (2 * (probs * onehot).sum(dims) + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice.mean()


def weighted_ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Inverse-frequency weighted cross-entropy + multi-class Dice: the CLIP-UNet recipe on Oxford Pet."""
    return (cross_entropy_loss(logits, target, "inverse_frequency", ignore_index)
            + dice_weight * multiclass_dice_loss(logits, target, ignore_index=ignore_index))


LOSSES: dict[str, tuple[str, Callable[..., torch.Tensor]]] = {
    "bce": ("binary", bce_loss),
    "dice": ("binary", soft_dice_loss),
    "focal": ("binary", focal_loss),
    "bce+dice": ("binary", bce_dice_loss),
    "ce": ("multiclass", cross_entropy_loss),
    "dice-multiclass": ("multiclass", multiclass_dice_loss),
    "wce+dice": ("multiclass", weighted_ce_dice_loss),
}


def build_loss(name: str, **options) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss by name (see `LOSSES`), with its options bound, e.g. `build_loss("focal", gamma=1.5)`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    fn = LOSSES[name][1]
    return lambda logits, target: fn(logits, target, **options)
