"""Visual analysis: error maps, Grad-CAM, confidence maps, galleries and per-class bars."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import clipseg_lab as cl
from clipseg_lab.data.registry import open_dataset
from clipseg_lab.data.transforms import JointTransform
from clipseg_lab.viz.analysis import (
    error_map,
    gallery_predictions,
    plot_class_bars,
    plot_confidence,
    plot_error_maps,
    plot_gallery,
)
from clipseg_lab.viz.gradcam import default_layer, grad_cam


def test_error_map_codes_by_hand():
    truth = np.array([[0, 1, 2], [0, 2, 255]])
    pred = np.array([[0, 1, 1], [2, 0, 0]])
    # TN, TP, wrong class / FP, FN, ignored
    assert error_map(pred, truth).tolist() == [[0, 1, 4], [2, 3, 5]]
    # classes with no "nothing" class: right or wrong
    assert error_map(pred, truth, background=None).tolist() == [[1, 1, 4], [4, 4, 5]]
    binary = error_map(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]))
    assert binary.tolist() == [1, 3, 2, 0]
    with pytest.raises(ValueError, match="differ in size"):
        error_map(np.zeros((2, 2)), np.zeros((3, 2)))


def test_error_map_figure_has_a_legend_of_the_codes_present():
    truth = np.zeros((8, 8), dtype=np.uint8)
    truth[2:6, 2:6] = 1
    pred = np.roll(truth, 1, axis=1)
    fig = plot_error_maps([{"image": np.zeros((8, 8, 3), np.uint8), "prediction": pred, "truth": truth}])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["correct background", "true positive", "false positive", "false negative"]


def test_grad_cam_matches_the_closed_form_for_clipseg():
    """With a plain transposed-conv head, d(sum of logits)/dA_c is the sum of that channel's kernel, so
    Grad-CAM = ReLU(sum_c w_c A_c) with w_c = sum(W[c]): computed here without autograd."""
    torch.manual_seed(0)
    model = cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=96)
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    cam = grad_cam(model, image, "a red square", region="all")
    with torch.no_grad():
        features = model.image_features(model.preprocess([image]))
        seen = {}
        hook = model.decoder.layers[-1].register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
        model.decode(features, model.prompt_embeddings(["a red square"]))
        hook.remove()
        h, w = features.grid
        maps = seen["a"][:, 1:].transpose(1, 2).reshape(1, -1, h, w)
        weights = model.decoder.transposed_convolution.weight.sum(dim=(1, 2, 3))  # (d,)
        expected = F.relu((weights[None, :, None, None] * maps).sum(1, keepdim=True))
        expected = F.interpolate(expected, size=(64, 80), mode="bilinear", align_corners=False)[0, 0]
        expected = expected / expected.max()
    assert cam.shape == (64, 80)
    np.testing.assert_allclose(cam, expected.numpy(), atol=1e-4)


def test_grad_cam_leaves_no_gradients_and_names_a_bad_layer():
    model = cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=96)
    image = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    grad_cam(model, image, "a cat")
    assert all(p.grad is None for p in model.parameters())  # nothing leaks into a later optimizer step
    with pytest.raises(ValueError, match="did not run with gradients"):
        grad_cam(model, image, "a cat", layer=model.backbone)


def test_combined_provenance_names_every_model_and_leaves_theirs_alone():
    from clipseg_lab.provenance import Provenance

    a = Provenance("clip-unet", "tiny-random", False, "random", "checkpoint a/best.safetensors")
    b = Provenance("unet", "none (no CLIP)", True, "-", "checkpoint b/best.safetensors")
    both = Provenance.combined({"clip-unet": a, "unet": b})
    assert both.model == "clip-unet vs unet" and both.untrained and a.model == "clip-unet"
    assert both.backbone == "clip-unet: tiny-random; unet: none (no CLIP)"
    assert "clip-unet: checkpoint a/best" in both.caption() and "unet: checkpoint b/best" in both.caption()
    trained = Provenance("x", "ViT-B/16", True, "hf", "checkpoint x.safetensors")
    assert not Provenance.combined({"x": trained, "y": trained}).untrained
    assert Provenance.combined({"x": trained, "y": Provenance("y", "ViT-B/16", True, "hf")}).untrained


def test_grad_cam_for_every_decoder_and_the_clip_unet():
    image = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    for name in ("transformer-decoder", "conv-unet-decoder", "model1"):
        model = cl.build_model(name, backbone="tiny-random", input_size=96).train()
        cam = grad_cam(model, image, "a dog")
        assert cam.shape == (48, 48) and 0 <= cam.min() and cam.max() <= 1, name
        assert model.training and not model.backbone.training  # the modes are restored
    unet = cl.build_model("clip-unet", backbone="tiny-random", num_classes=3, input_size=64, channels=[8, 16],
                          dropout=[0, 0])
    assert type(default_layer(unet)).__name__ == "Sequential" and default_layer(unet) is unet.fusion
    assert grad_cam(unet, image, 2).shape == (48, 48)
    with pytest.raises(ValueError, match="class index 3"):
        grad_cam(unet, image, 3)
    with pytest.raises(ValueError, match="text prompt"):
        grad_cam(model, image, 1)


def test_confidence_gallery_and_bars():
    data = open_dataset("synthetic_shapes", None, "val", num_scenes=3, size=64)
    data.transform = JointTransform(64)
    samples = [data[i] for i in range(3)]
    models = {"rd64": cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=64),
              "model0": cl.build_model("model0", backbone="tiny-random", input_size=64)}
    predictions = gallery_predictions(models, samples)
    assert [p.shape for p in predictions["model0"]] == [s["mask"].shape for s in samples]
    fig = plot_gallery(samples, predictions)
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert len(fig.axes) == 3 * 5 and titles == ["image", "prompt", "rd64", "model0", "ground truth"]
    probs = torch.rand(3, 64, 64).softmax(0)
    fig = plot_confidence(samples[0]["image"], probs, ["background", "cat", "dog"])
    assert [ax.get_title() for ax in fig.axes[:5]] == ["image", "p(background)", "p(cat)", "p(dog)",
                                                       "confidence: max p"]
    fig = plot_confidence(samples[0]["image"], probs[0], ["a cat"])
    assert fig.axes[2].get_title() == "confidence: max(p, 1-p)" and fig.axes[2].images[0].get_clim() == (0.5, 1)
    table = pd.DataFrame({"class": ["cat", "dog"] * 2, "iou": [0.5, 0.6, 0.7, 0.8], "dice": [0.6] * 4,
                          "model": ["unet"] * 2 + ["clip-unet"] * 2})
    fig = plot_class_bars(table)
    assert [ax.get_title() for ax in fig.axes] == ["iou", "dice"]
