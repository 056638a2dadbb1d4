"""The prompt explorer's callbacks, driven without a browser: what runs when a control changes."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

import clipseg_lab as cl
from clipseg_lab.interactive import PromptExplorer, split_prompts


def _image(seed: int, size=(40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"rd64": cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=64),
            "model0": cl.build_model("model0", backbone="tiny-random", input_size=64)}


@pytest.fixture
def explorer(models, monkeypatch):
    calls = {"image": 0, "text": 0}
    for model in models.values():
        for method, kind in (("encode_image", "image"), ("encode_text", "text")):
            original = getattr(model.backbone, method)

            def counted(*args, _original=original, _kind=kind, **kwargs):
                calls[_kind] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(model.backbone, method, counted)
        model._text_cache.clear()
    ex = PromptExplorer(models, {"noise": _image(0), "other": _image(1)}, prompts="a cat; a dog")
    ex.backbone_calls = calls
    return ex


def test_split_prompts():
    assert split_prompts(" a cat ;; a dog;") == ["a cat", "a dog"]


def test_sliders_re_render_without_running_the_model(explorer):
    assert explorer.counts == {"image_encodings": 1, "prompt_runs": 1, "renders": 1}
    before, calls = explorer.view.value, dict(explorer.backbone_calls)
    explorer.threshold.value = 0.2
    explorer.alpha.value = 0.9
    assert explorer.counts["renders"] == 3 and explorer.counts["prompt_runs"] == 1
    assert explorer.backbone_calls == calls and explorer.view.value != before


def test_a_new_prompt_runs_only_the_text_encoder_and_the_decoder(explorer):
    calls = dict(explorer.backbone_calls)
    explorer.prompt.value = "a bird"
    assert explorer.counts["prompt_runs"] == 2 and explorer.counts["image_encodings"] == 1
    assert explorer.backbone_calls == {"image": calls["image"], "text": calls["text"] + 1}
    explorer.prompt.value = "a cat; a dog"  # seen before: nothing runs
    assert explorer.counts["prompt_runs"] == 2 and explorer.backbone_calls["text"] == calls["text"] + 1


def test_images_and_models_are_encoded_once_each(explorer):
    explorer.image_picker.value = "other"
    explorer.image_picker.value = "noise"
    assert explorer.counts["image_encodings"] == 2
    explorer.model_picker.value = "model0"
    assert explorer.counts["image_encodings"] == 3 and "model0" in explorer.caption.value
    assert "untrained" in explorer.caption.value and "firebrick" in explorer.caption.value


def test_errors_are_shown_not_raised(explorer, tmp_path):
    explorer.prompt.value = "  ;  "
    assert "empty prompt" in explorer.status.value
    explorer.prompt.value = "a cat"
    assert explorer.status.value == ""
    explorer.path.value = str(tmp_path / "missing.png")
    assert "missing.png" in explorer.status.value and "no such image" in explorer.status.value


def test_upload_and_path_add_images(explorer, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_image(2, (30, 30))).save(buffer, format="png")
    encodings, renders = explorer.counts["image_encodings"], explorer.counts["renders"]
    explorer.upload.value = ({"name": "up.png", "type": "image/png", "size": buffer.tell(),
                              "content": memoryview(buffer.getvalue()), "last_modified": datetime.now(timezone.utc)},)
    assert explorer.image_picker.value == "up.png" and explorer.probabilities().shape == (2, 30, 30)
    # only the new image is encoded and drawn (swapping the picker's options must not render the first image)
    assert explorer.counts["image_encodings"] == encodings + 1 and explorer.counts["renders"] == renders + 1
    Image.fromarray(_image(3, (20, 24))).save(tmp_path / "p.png")
    explorer.path.value = str(tmp_path / "p.png")
    assert explorer.image_picker.value == str(tmp_path / "p.png")
    assert explorer.probabilities().shape == (2, 20, 24)
    explorer.upload.value = ({"name": "bad.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                              "last_modified": datetime.now(timezone.utc)},)
    assert "bad.png" in explorer.status.value


def test_static_frame_for_headless_runs(explorer):
    fig = explorer.figure()
    assert len(fig.axes) == 2 + 2 and "UNTRAINED" in fig._suptitle.get_text()
    assert len(explorer.widget().children) == 6


def test_large_images_are_scaled_down_once():
    from clipseg_lab.interactive import MAX_SIDE, fit_image

    big = torch.randint(0, 256, (3, 1500, 3000), dtype=torch.uint8)
    small = fit_image(big)
    assert small.shape == (3, 512, MAX_SIDE) and small.dtype == torch.uint8
    assert fit_image(small) is small
