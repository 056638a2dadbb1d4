"""Losses and metrics against hand-computed values and the reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchmetrics.functional.classification as tmf
from torchvision.ops import sigmoid_focal_loss

from clipseg_lab.losses import (
    bce_loss,
    build_loss,
    cross_entropy_loss,
    focal_loss,
    inverse_frequency_weights,
    multiclass_dice_loss,
    soft_dice_loss,
    weighted_ce_dice_loss,
)
from clipseg_lab.metrics import BinaryMetrics, SegmentationMetrics


# -- losses ------------------------------------------------------------------------------------------------
def test_binary_losses_by_hand():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    target = torch.tensor([[[1, 0], [255, 1]]])
    p = torch.sigmoid(torch.tensor([0.0, 2.0, 3.0]))
    t = torch.tensor([1.0, 0.0, 1.0])
    bce = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert bce_loss(logits, target).item() == pytest.approx(bce.item(), abs=1e-6)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(dice.item(), abs=1e-6)
    pt = torch.where(t == 1, p, 1 - p)
    at = torch.where(t == 1, 0.25, 0.75)
    focal = (-at * (1 - pt) ** 2 * pt.log()).mean()
    assert focal_loss(logits, target).item() == pytest.approx(focal.item(), abs=1e-6)
    assert build_loss("bce+dice")(logits, target).item() == pytest.approx((bce + dice).item(), abs=1e-6)


def test_focal_matches_torchvision_and_ce_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 8, 8, generator=g), (torch.rand(2, 8, 8, generator=g) > 0.6).long()
    ref = sigmoid_focal_loss(logits, target.float(), alpha=0.4, gamma=1.5, reduction="mean")
    assert focal_loss(logits, target, alpha=0.4, gamma=1.5).item() == pytest.approx(ref.item(), rel=1e-6)
    logits, target = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
    target[0, :2] = 255
    w = torch.tensor([0.2, 1.0, 3.0])
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert cross_entropy_loss(logits, target, w).item() == pytest.approx(ref.item(), rel=1e-6)


def test_inverse_frequency_weights_and_multiclass_dice():
    target = torch.tensor([[[0, 0, 0, 1], [0, 0, 255, 1]]])  # 5 background, 2 class 1, none of class 2
    w = inverse_frequency_weights(target, 3)
    assert torch.allclose(w, torch.tensor([7 / (2 * 5), 7 / (2 * 2), 0.0]))
    perfect = F.one_hot(torch.where(target == 255, 0, target), 3).permute(0, 3, 1, 2).float() * 50
    assert multiclass_dice_loss(perfect, target).item() < 0.2  # class 2 (absent) scores (0 + 1) / (~0 + 1) = 1
    assert weighted_ce_dice_loss(perfect, target).item() < multiclass_dice_loss(-perfect, target).item()
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")


# -- metrics -----------------------------------------------------------------------------------------------
def test_segmentation_metrics_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    m = SegmentationMetrics(3, class_names=["bg", "cat", "dog"])
    m.update(pred[None], target[None])
    r = m.compute()
    assert r["pixel_accuracy"] == pytest.approx(5 / 7)
    assert r["per_class"]["bg"]["iou"] == pytest.approx(1 / 3)  # tp 1, fp 1 (dog->bg), fn 1 (bg->cat)
    assert r["per_class"]["cat"]["iou"] == pytest.approx(3 / 4)
    assert r["per_class"]["dog"]["precision"] == 1 and r["per_class"]["dog"]["recall"] == 0.5
    assert r["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_segmentation_metrics_match_torchmetrics():
    g = torch.Generator().manual_seed(1)
    m = SegmentationMetrics(5)
    preds, targets = [], []
    for _ in range(3):  # streaming over batches
        pred, target = torch.randint(0, 5, (2, 16, 16), generator=g), torch.randint(0, 5, (2, 16, 16), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        m.update(pred, target)
        preds.append(pred), targets.append(target)
    pred, target = torch.cat(preds), torch.cat(targets)
    r = m.compute()
    kw = dict(num_classes=5, ignore_index=255, average=None)
    iou = tmf.multiclass_jaccard_index(pred, target, **kw)
    f1 = tmf.multiclass_f1_score(pred, target, multidim_average="global", **kw)
    prec = tmf.multiclass_precision(pred, target, multidim_average="global", **kw)
    rec = tmf.multiclass_recall(pred, target, multidim_average="global", **kw)
    acc = tmf.multiclass_accuracy(pred, target, num_classes=5, ignore_index=255, average="micro")
    for k in range(5):
        pc = r["per_class"][str(k)]
        assert pc["iou"] == pytest.approx(iou[k].item(), abs=1e-6) and pc["f1"] == pytest.approx(f1[k].item(), abs=1e-6)
        assert pc["precision"] == pytest.approx(prec[k].item(), abs=1e-6)
        assert pc["recall"] == pytest.approx(rec[k].item(), abs=1e-6)
    assert r["oa"] == pytest.approx(acc.item(), abs=1e-6) and r["miou"] == pytest.approx(iou.mean().item(), abs=1e-6)


def test_binary_metrics_match_torchmetrics():
    g = torch.Generator().manual_seed(2)
    target = (torch.rand(4, 20, 20, generator=g) > 0.7).long()
    probs = (target.float() * 0.4 + torch.rand(4, 20, 20, generator=g) * 0.6).clamp(0, 1)
    target[:, 0, :3] = 255
    m = BinaryMetrics(ap_bins=1000)
    m.update(probs[:2], target[:2])
    m.update(probs[2:], target[2:])
    r = m.compute()
    iou = tmf.binary_jaccard_index(probs, target, threshold=0.5, ignore_index=255)
    assert r["iou_fg"] == pytest.approx(iou.item(), abs=1e-6)
    ap = tmf.binary_average_precision(probs, target, thresholds=torch.linspace(0, 1, 1001)[:-1], ignore_index=255)
    assert r["ap"] == pytest.approx(ap.item(), abs=2e-3)
    exact = tmf.binary_average_precision(probs, target, ignore_index=255)
    assert r["ap"] == pytest.approx(exact.item(), abs=5e-3)
    assert len(r["sweep"]) == 19 and r["best_iou_fg"] >= r["iou_fg"] and len(m.image_iou) == 4


def test_binary_metrics_edge_cases():
    m = BinaryMetrics()
    m.update(torch.zeros(5, 5), torch.zeros(5, 5, dtype=torch.long))  # empty truth, empty prediction
    assert m.image_iou == [1.0] and math.isnan(m.compute()["ap"])
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(torch.zeros(5, 5), torch.zeros(4, 5))
    s = SegmentationMetrics(2)
    s.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.full((1, 3, 3), 255))
    with pytest.raises(ValueError, match="no valid pixels"):
        s.compute()
    with pytest.raises(ValueError, match="outside 0..1"):
        s.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.full((1, 3, 3), 4))


def test_per_image_miou_by_hand():
    """Per image: IoU over the classes in its truth or prediction; all-ignore images get no score."""
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 2]], [[255, 255], [255, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 0]], [[0, 0], [0, 0]]])
    m = SegmentationMetrics(3)
    m.update(pred, target)
    # image 0: class 0 IoU 1/2, class 1 IoU 2/3; image 1: class 2 IoU 3/4, class 0 (predicted only) IoU 0
    assert m.image_miou == pytest.approx([(1 / 2 + 2 / 3) / 2, (3 / 4 + 0) / 2])
    assert m.image_accuracy == pytest.approx([3 / 4, 3 / 4])
    m.reset()
    assert m.image_miou == [] and int(m.confusion.sum()) == 0
