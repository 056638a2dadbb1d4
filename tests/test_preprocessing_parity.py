"""Preprocessing travels with the weights, and the released weights are the default.

(a) a CLIPSeg directory whose preprocessor_config.json names ImageNet statistics is normalised with them;
(b) end to end on a raw uint8 photo: transformers' CLIPSegProcessor + CLIPSegForImageSegmentation, loaded from
    the same directory, give the probabilities `Segmenter.predict` gives (preprocessing included) to 1e-4;
(c) a Hugging Face cache holding only `pytorch_model.bin` (what openai/clip-vit-base-patch16's main revision
    ships) is found and read; a missing default checkpoint is an error that names the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clipseg_lab as cl
from clipseg_lab.backbones.clip_backbone import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from clipseg_lab.backbones.tokenizer import tokenize, write_hf_tokenizer_files
from tests.conftest import small_hf_clipseg

SIZE = 96  # a multiple of the small CLIPSeg's patch (16) other than its native 64: position embeddings interpolate


def _preprocessor_config(mean, std, size=SIZE) -> dict:
    """As the CIDAS/clipseg-* repositories publish it (there: ImageNet statistics, 352 px)."""
    return {"do_normalize": True, "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "resample": 2,
            "image_mean": list(mean), "image_std": list(std), "image_processor_type": "ViTImageProcessor",
            "processor_class": "CLIPSegProcessor", "size": {"height": size, "width": size}}


@pytest.fixture(scope="module")
def clipseg_dir(tmp_path_factory) -> Path:
    """A small random CLIPSeg saved as the hub ships one: weights, config, ImageNet preprocessor, tokenizer."""
    path = tmp_path_factory.mktemp("clipseg_imagenet")
    small_hf_clipseg(refined=True).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(IMAGENET_MEAN, IMAGENET_STD)))
    write_hf_tokenizer_files(path)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                            "model_max_length": 77}))
    return path


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.chelsea()  # a real photo, uint8 (300, 451, 3), shipped inside scikit-image


def test_directory_preprocessor_config_sets_the_normalisation(clipseg_dir, photo, tmp_path):
    model = cl.load_model(clipseg_dir, device="cpu")
    assert model.normalization.mean == IMAGENET_MEAN and model.normalization.std == IMAGENET_STD
    assert model.input_size == SIZE and model.visual_prompt_recipe == "clipseg-original"
    import torchvision.transforms.v2.functional as TF

    image = torch.from_numpy(photo).permute(2, 0, 1)
    expected = (TF.resize(image, [SIZE, SIZE], antialias=True).float() / 255
                - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(model.preprocess(image)[0], expected, atol=1e-6)
    # the same directory with CLIP's statistics is normalised with those: the file decides, not the loader
    other = tmp_path / "clip_stats"
    shutil.copytree(clipseg_dir, other)
    (other / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(CLIP_MEAN, CLIP_STD)))
    assert cl.load_model(other, device="cpu").normalization.mean == CLIP_MEAN
    # and what a model normalises with survives save / load (fine-tuning the released weights keeps ImageNet)
    saved = cl.save_model(model, tmp_path / "m.safetensors")
    reloaded = cl.load_model(saved, backbone=model.backbone, device="cpu")
    assert reloaded.normalization.mean == IMAGENET_MEAN and reloaded.visual_prompt_recipe == "clipseg-original"


def test_original_decoders_run_with_imagenet_statistics(hf_clipseg_dirs, tmp_path):
    from clipseg_lab.models.clipseg_weights import hf_to_original_decoder, load_original_clipseg

    reference = small_hf_clipseg()
    decoder = {k[len("decoder."):]: v for k, v in reference.state_dict().items() if k.startswith("decoder.")}
    torch.save(hf_to_original_decoder(decoder), tmp_path / "rd16-uni.pth")
    backbone = cl.load_backbone(hf_clipseg_dirs["plain"], device="cpu")
    model = load_original_clipseg(tmp_path / "rd16-uni.pth", backbone=backbone, extract_layers=(1, 2, 3),
                                  num_heads=2)
    assert model.normalization.mean == IMAGENET_MEAN and model.visual_prompt_recipe == "clipseg-original"


def test_segmenter_matches_transformers_processor_and_model_end_to_end(clipseg_dir, photo):
    """Raw uint8 photo in, probabilities out: transformers' processor + model vs Segmenter, the same directory."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    prompts = ["a cat", "a wooden door", "whiskers"]
    # transformers' default image-processor backend is torchvision; pinned so a change of default shows up here
    processor = CLIPSegProcessor.from_pretrained(clipseg_dir, backend="torchvision")
    reference = CLIPSegForImageSegmentation.from_pretrained(clipseg_dir, attn_implementation="eager").eval()
    inputs = processor(text=prompts, images=[photo] * len(prompts), padding="max_length", return_tensors="pt")
    ours_ids, used = tokenize(prompts), inputs["attention_mask"].bool()  # the hub pads with the end token, we with 0
    assert torch.equal(inputs["input_ids"][used], ours_ids[used]) and not ours_ids[~used].any()
    with torch.inference_mode():
        ref_logits = reference(**inputs).logits  # (K, SIZE, SIZE)
    model = cl.load_model(clipseg_dir, device="cpu")
    seg = cl.Segmenter(model)
    seg.set_image(photo)
    ours = seg.predict_logits(prompts)
    assert ours.shape == ref_logits.shape
    diff = (ours.sigmoid() - ref_logits.sigmoid()).abs().max()
    print(f"max |probability difference| vs transformers: {diff:.2e}")
    assert diff < 1e-4
    # at the photo's own size, the reference's logits resized as Segmenter resizes its own
    ref_probs = F.interpolate(ref_logits[:, None], size=photo.shape[:2], mode="bilinear",
                              align_corners=False)[:, 0].sigmoid()
    assert (seg.predict(prompts) - ref_probs).abs().max() < 1e-4
    # and the preprocessing matters: CLIP's statistics on the same weights move the probabilities well past that
    model.normalization = model.backbone.normalization
    seg.set_image(photo)
    assert (seg.predict_logits(prompts).sigmoid() - ref_logits.sigmoid()).abs().max() > 1e-3


def _hub_cache(cache: Path, hub_id: str, files: dict[str, Path]) -> Path:
    """The hub's own cache layout: blobs/<hash>, refs/main, snapshots/<revision>/<name> -> ../../blobs/<hash>."""
    import hashlib

    repo = cache / f"models--{hub_id.replace('/', '--')}"
    revision = hashlib.sha1(hub_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copy(source, repo / "blobs" / digest)
        (snapshot / name).symlink_to(Path("../../blobs") / digest)
    return snapshot


def test_hub_cache_with_only_pytorch_model_bin(clipseg_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import load_file

    bin_file = tmp_path / "pytorch_model.bin"
    torch.save(load_file(str(clipseg_dir / "model.safetensors")), bin_file)
    cache = tmp_path / "hub"
    _hub_cache(cache, cl.models.DEFAULT_CHECKPOINT,
               {"config.json": clipseg_dir / "config.json",
                "preprocessor_config.json": clipseg_dir / "preprocessor_config.json",
                "pytorch_model.bin": bin_file})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("CLIPSEG_LAB_WEIGHTS", raising=False)
    reference = cl.load_model(clipseg_dir, device="cpu")
    for model in (cl.load_model(cl.models.DEFAULT_CHECKPOINT, device="cpu"),
                  cl.models.load_default_model(device="cpu"), cl.models.load_default_model(backbone="ViT-B/16")):
        assert model.normalization.mean == IMAGENET_MEAN
        assert all(torch.equal(a, b) for a, b in zip(model.trainable_state_dict().values(),
                                                     reference.trainable_state_dict().values()))


def test_missing_default_checkpoint_names_the_checkpoint(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("CLIPSEG_LAB_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(cl.WeightsNotFoundError) as info:
        cl.models.load_default_model(device="cpu")
    text = str(info.value)
    assert "checkpoint 'CIDAS/clipseg-rd64-refined'" in text and "backbone" not in text.split("\n")[0]
    assert "hf download CIDAS/clipseg-rd64-refined" in text and "huggingface-cli" not in text
    # a cache folder holding a config but no weights (an interrupted download) is not a find
    _hub_cache(tmp_path / "empty", cl.models.DEFAULT_CHECKPOINT,
               {"config.json": _json(tmp_path, {"model_type": "clipseg"})})
    with pytest.raises(cl.WeightsNotFoundError):
        cl.models.load_default_model(device="cpu")


def _json(folder: Path, data: dict) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_a_backbone_the_released_decoder_was_not_trained_on_is_an_error():
    from clipseg_lab.errors import ConfigError

    with pytest.raises(ConfigError, match="trained on CLIP ViT-B/16 only"):
        cl.models.load_default_model(backbone="ViT-L/14")
    untrained = cl.models.load_default_model(backbone="tiny-random", device="cpu")
    assert untrained.provenance.untrained
