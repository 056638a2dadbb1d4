"""Validate before allocating: a checkpoint's metadata is checked against the preset's config and against the stored
tensors' shapes before any model is built, so a few-MB file cannot ask the loader for gigabytes."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

import clipseg_lab as cl
from clipseg_lab.errors import WeightsFormatError
from clipseg_lab.models.checkpoint import stored_shapes


@pytest.fixture(scope="module")
def rd64_file(tmp_path_factory, tiny_backbone) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rd64.safetensors"
    return cl.save_model(cl.build_model("clipseg-rd64", backbone=tiny_backbone), path)


def _meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["clipseg_lab"])


def _rewrite(source: Path, dest: Path, meta: dict | str | None = None, edit=None) -> Path:
    """A copy of `source` with its metadata replaced (a dict as JSON, a str as is), or edited in place by `edit`."""
    if edit is not None:
        meta = _meta(source)
        edit(meta)
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(load_file(str(source)), str(dest), metadata={"clipseg_lab": text})
    return dest


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def test_stored_shapes_come_from_the_header(rd64_file):
    shapes = stored_shapes(rd64_file)
    assert shapes["reduces.0.weight"] == (64, 64) and shapes["film.mul.weight"] == (64, 64)


@pytest.mark.parametrize("by_name", [False, True], ids=["backbone-given", "backbone-by-stored-name"])
def test_a_huge_reduce_dim_is_refused_quickly_without_allocating(rd64_file, tmp_path, tiny_backbone, monkeypatch,
                                                                by_name):
    crafted = _rewrite(rd64_file, tmp_path / "huge.safetensors", edit=lambda m: m["config"].update(reduce_dim=10**6))
    import clipseg_lab.models.registry as registry

    monkeypatch.setattr(registry, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    cl.load_backbone("tiny-random", device="cpu")  # warm: what loading the stored backbone costs is not counted
    before, start = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(WeightsFormatError) as info:
        cl.load_model(crafted, backbone=None if by_name else tiny_backbone, device="cpu")
    elapsed, grown = time.perf_counter() - start, _peak_rss_mb() - before
    message = str(info.value)
    assert "huge.safetensors" in message and "reduce_dim=1000000" in message
    assert "reduces.0.weight stored [64, 64] vs expected [1000000, 64]" in message
    assert "fit reduce_dim=64" in message  # what the tensors do fit
    assert grown < 200, f"peak memory grew by {grown:.0f} MB"
    assert elapsed < 10


def test_too_many_layers_are_refused_before_any_module_is_built(tmp_path, tiny_backbone):
    path = cl.save_model(cl.build_model("transformer-decoder", backbone=tiny_backbone), tmp_path / "t.safetensors")
    crafted = _rewrite(path, tmp_path / "deep.safetensors", edit=lambda m: m["config"].update(num_layers=10**9))
    start = time.perf_counter()
    with pytest.raises(WeightsFormatError, match=r"deep.safetensors: metadata config num_layers 1000000000, more "
                                                 r"than the \d+ tensors"):
        cl.load_model(crafted, backbone=tiny_backbone)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("meta, match", [
    ("{not json", r"bad.safetensors: its clipseg-lab metadata is not JSON"),
    ("[1, 2]", r"bad.safetensors: its clipseg-lab metadata is a JSON list, not an object"),
    (json.dumps({"model": "clipseg-rd64"}), r"bad.safetensors: its clipseg-lab metadata lacks 'config'"),
    (json.dumps({"config": {}}), r"lacks 'model'"),
    (json.dumps({"model": 3, "config": {}}), r"metadata 'model' is 3, not a model name"),
    (json.dumps({"model": "clipseg-rd64", "config": [64]}), r"metadata 'config' is a list, not an object"),
    (json.dumps({"model": "clipseg-rd99", "config": {}}), r"names the model 'clipseg-rd99'.*did you mean"),
    (json.dumps({"model": "clipseg-rd64", "config": {}, "format": "other/9"}), r"checkpoint format 'other/9'"),
    (json.dumps({"model": "clipseg-rd64", "config": {}, "backbone": "tiny-random"}), r"metadata 'backbone' is"),
])
def test_malformed_metadata_is_one_error(rd64_file, tmp_path, meta, match):
    bad = _rewrite(rd64_file, tmp_path / "bad.safetensors", meta)
    with pytest.raises(WeightsFormatError, match=match):
        cl.load_model(bad, device="cpu")


@pytest.mark.parametrize("change, match", [
    ({"reduce_dims": 64}, r"metadata config key\(s\) 'reduce_dims' are not options of clipseg-rd64"),
    ({"reduce_dim": "64"}, r"metadata config reduce_dim is '64' \(str\); clipseg-rd64 expects int"),
    ({"reduce_dim": 64.0}, r"reduce_dim is 64.0 \(float\)"),
    ({"extract_layers": [3, "6", 9]}, r"metadata config extract_layers is \[3, '6', 9\]"),
    ({"film": "sometimes"}, r"metadata config film is 'sometimes'"),
    ({"complex_trans_conv": 1}, r"complex_trans_conv is 1 \(int\); clipseg-rd64 expects bool"),
    ({"num_heads": 0}, r"does not make a clipseg-rd64"),
    ({"reduce_dim": -8}, r"makes no clipseg-rd64"),
    ({"extract_layers": [3, 6, 40]}, r"reads CLIP block 40, but tiny-random has blocks 0..11"),
])
def test_metadata_config_is_checked_against_the_preset(rd64_file, tmp_path, change, match):
    bad = _rewrite(rd64_file, tmp_path / "cfg.safetensors", edit=lambda m: m["config"].update(change))
    with pytest.raises(WeightsFormatError, match=match):
        cl.load_model(bad, device="cpu")


def test_a_checkpoint_named_after_another_preset_names_both(rd64_file, tmp_path):
    rd16 = dataclass_config("clipseg-rd16")

    def relabel(meta):
        meta["model"], meta["config"] = "clipseg-rd16", rd16

    bad = _rewrite(rd64_file, tmp_path / "relabelled.safetensors", edit=relabel)
    with pytest.raises(WeightsFormatError) as info:
        cl.load_model(bad, device="cpu")
    message = str(info.value)
    assert "relabelled.safetensors" in message and "reduces.0.weight stored [64, 64] vs expected [16, 64]" in message
    assert "the metadata names clipseg-rd16, but the tensors are those of clipseg-rd64" in message


def dataclass_config(name: str) -> dict:
    import dataclasses

    from clipseg_lab.models.registry import FAMILIES, PRESETS

    preset = PRESETS[name]
    return json.loads(json.dumps(dataclasses.asdict(FAMILIES[preset.family][0](**preset.config))))


def test_missing_and_unexpected_tensors_are_named_before_building(rd64_file, tmp_path, monkeypatch):
    state = load_file(str(rd64_file))
    state["extra.weight"] = state.pop("reduces.0.weight")
    bad = tmp_path / "keys.safetensors"
    save_file(state, str(bad), metadata={"clipseg_lab": json.dumps(_meta(rd64_file))})
    import clipseg_lab.models.registry as registry

    monkeypatch.setattr(registry, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(WeightsFormatError,
                       match=r"missing keys \['reduces.0.weight'\].*unexpected keys \['extra.weight'\]"):
        cl.load_model(bad, device="cpu")


@pytest.mark.parametrize("name", ["clipseg-rd16", "model0", "clipseg-rd64-refined", "conv-unet-decoder",
                                  "transformer-decoder", "unet"])
def test_every_family_still_round_trips(name, tmp_path, tiny_backbone):
    model = cl.build_model(name, backbone=tiny_backbone, input_size=64 if name == "unet" else None)
    path = cl.save_model(model, tmp_path / f"{name}.safetensors")
    loaded = cl.load_model(path, device="cpu")
    assert loaded.name == name
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key


def test_bad_preprocessing_metadata_is_one_error(rd64_file, tmp_path):
    bad = _rewrite(rd64_file, tmp_path / "pre.safetensors",
                   edit=lambda m: m.update(preprocessing={"image_mean": [0.5], "image_std": [1, 1, 1]}))
    with pytest.raises(WeightsFormatError, match="pre.safetensors: metadata preprocessing"):
        cl.load_model(bad, device="cpu")
