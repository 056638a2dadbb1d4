"""The rehearsal's datasets: real folder layouts that the loaders open under the full profile's paths, built
from the real samples where present and generated otherwise, deterministic, and not rewritten by a rerun."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clipseg_lab.data.registry import open_dataset
from clipseg_lab.data.synthetic import COLOURS as SHAPE_COLOURS
from clipseg_lab.rehearsal.datasets import MANIFEST, PET_LIST_HEADER, build_datasets, resolve_sizes
from clipseg_lab.zeroshot import open_tiles, prepare_config

REPO = Path(__file__).resolve().parents[1]
FULL = yaml.safe_load((REPO / "params" / "full.yaml").read_text())["notebooks"]
TASK_FIELDS = {"task_id", "image_id", "ann_ids", "instance_boxes", "Polygons", "phrase", "phrase_structure"}
STRUCTURE_FIELDS = {"name", "attributes", "relation_ids", "relation_descriptions", "type"}


def _files(root: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _build_in_checkout_layout(tmp_path: Path, samples: Path | None, monkeypatch, **kw):
    """Datasets under <tmp>/data, the working directory <tmp>/notebooks: the full profile's relative paths."""
    (tmp_path / "notebooks").mkdir()
    built = build_datasets(tmp_path / "data", samples, **kw)
    monkeypatch.chdir(tmp_path / "notebooks")
    return built


def _check_phrasecut(built, sizes=(24, 8, 8)):
    for key in ("02_model_variants", "03_loss_comparison", "04_decoder_architectures", "07_mask_galleries"):
        assert FULL[key]["dataset"] == "phrasecut"
        assert Path(FULL[key]["data_root"]).resolve() == built["phrasecut"].resolve()
    root = Path(FULL["02_model_variants"]["data_root"])
    info = {im["image_id"]: im for im in json.loads((root / "image_data_split.json").read_text())}
    for split, n in zip(("train", "val", "test"), sizes):
        tasks = json.loads((root / f"refer_{split}.json").read_text())
        inputs = json.loads((root / f"refer_input_{split}.json").read_text())
        assert len(tasks) == len(inputs) == n and len({t["task_id"] for t in tasks}) == n
        for task in tasks:
            assert set(task) == TASK_FIELDS and set(task["phrase_structure"]) == STRUCTURE_FIELDS
            im = info[task["image_id"]]
            assert im["split"] == split
            with Image.open(root / "images" / f"{task['image_id']}.jpg") as jpeg:
                assert jpeg.format == "JPEG" and jpeg.size == (im["width"], im["height"])
            assert len(task["Polygons"]) == len(task["instance_boxes"]) == len(task["ann_ids"]) >= 1
            for polygons, (x, y, w, h) in zip(task["Polygons"], task["instance_boxes"]):
                assert polygons and all(len(p) >= 3 and all(len(pt) == 2 for pt in p) for p in polygons)
                points = np.concatenate([np.asarray(p, float) for p in polygons])
                assert points.min() >= 0 and (points.max(axis=0) <= (im["width"], im["height"])).all()
                assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= im["width"] and y + h <= im["height"]
        data = open_dataset("phrasecut", root, split, **FULL["02_model_variants"]["data_options"])
        assert len(data) == n and not data.skipped
        for i in range(n):
            sample = data[i]
            h, w = sample["image"].shape[-2:]
            assert (w, h) == (info[sample["image_id"]]["width"], info[sample["image_id"]]["height"])
            mask = sample["mask"].bool()
            assert mask.any()
            words = sample["prompt"].split()
            if words[0] in SHAPE_COLOURS:  # the polygons outline the shape the phrase names, in the JPEG's pixels
                median = sample["image"][:, mask].float().median(dim=1).values.numpy()
                nearest = min(SHAPE_COLOURS, key=lambda c: np.abs(median - SHAPE_COLOURS[c]).sum())
                assert nearest == words[0], (sample["name"], sample["prompt"], median)
    assert {(im["width"], im["height"]) for im in info.values()} & {(500, 375), (800, 600)}
    every = [t for s in ("train", "val", "test") for t in json.loads((root / f"refer_{s}.json").read_text())]
    assert {t["phrase_structure"]["type"] for t in every} >= {"name", "attribute", "relation"}
    assert any(len(t["Polygons"]) > 1 for t in every)  # multi-instance tasks: the mask is their union


def _check_pets(built, samples: Path | None):
    root = Path(FULL["05_clip_unet_pets"]["data_root"])
    assert root.resolve() == built["oxford_pet"].resolve() == Path(FULL["08_hypothesis_test"]["pets_root"]).resolve()
    ann = root / "annotations"
    listed = ann.joinpath("list.txt").read_text().splitlines()
    assert tuple(listed[:len(PET_LIST_HEADER)]) == PET_LIST_HEADER
    entries = {line.split()[0]: line for line in listed[len(PET_LIST_HEADER):]}
    trainval = ann.joinpath("trainval.txt").read_text().splitlines()
    test = ann.joinpath("test.txt").read_text().splitlines()
    assert not set(trainval) & set(test) and sorted(trainval + test) == sorted(entries.values())
    for lines in (trainval, test):
        assert {line.split()[2] for line in lines} == {"1", "2"}  # both species in each split
    if samples is not None:
        assert len(entries) == 18
        for name in entries:
            assert (root / "images" / f"{name}.jpg").read_bytes() == \
                (samples / "oxford_pet" / "images" / f"{name}.jpg").read_bytes()
    seen = {}
    for split in ("train", "val", "test"):
        data = open_dataset("oxford_pet", root, split)
        assert data.split_source.startswith("official") and len(data) >= 1
        seen[split] = {r.name for r in data.records}
        for i in range(len(data)):
            sample = data[i]
            assert ((sample["mask"] == 1) | (sample["mask"] == 2)).any() and (sample["mask"] == 0).any()
    assert seen["train"] | seen["val"] == {line.split()[0] for line in trainval}


def _check_refcoco(built, samples: Path | None):
    spec = FULL["06_refcoco"]["data"]
    root, options = Path(spec["root"]), spec["options"]
    assert root.resolve() == built["refcoco"].resolve()
    assert Path(options["image_dir"]).resolve() == Path(built.options["refcoco"]["image_dir"]).resolve()
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    for im in instances["images"]:
        with Image.open(Path(options["image_dir"]) / im["file_name"]) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (im["width"], im["height"])
    refs = (root / "refcoco" / "refs(unc).p").read_bytes()
    if samples is not None:
        assert refs == (samples / "refcoco" / "refer_format" / "refcoco" / "refs(unc).p").read_bytes()
    else:
        assert refs[:2] == b"\x80\x02"  # pickle protocol 2, readable by the refer toolkit's Python 2 and 3
    assert {r["split"] for r in pickle.loads(refs)} == {"train", "val", "testA", "testB"}
    for split in ("train", "val", "testA"):
        data = open_dataset(spec["dataset"], root, split, **options)
        assert len(data) >= 2 and not data.missing_images
        for i in range(len(data)):
            sample = data[i]
            assert not sample["placeholder"] and sample["mask"].bool().any()
    for name, split_by, split in (("refcoco+", "unc", "val"), ("refcocog", "umd", "val")):
        assert len(open_dataset(name, root, split, **options)) >= 1, (name, split_by)


def _check_tiles(built, samples: Path | None):
    nb = FULL["09_remote_sensing_zero_shot"]
    images = {}
    for name, spec in nb["datasets"].items():
        folder = Path(nb["data_root"]) / spec["dir"]
        assert folder.resolve() == built[name].resolve()
        config = prepare_config(REPO / "notebooks" / spec["config"], input_dir=folder, overrides=nb["overrides"])
        tiles = open_tiles(config)
        assert config.input.split == "val" and len(tiles) == 3 and not tiles.skipped
        assert len(open_dataset(name, folder, "val")) == 3
        for i in range(len(tiles)):
            sample = tiles[i]
            assert sample["image"].shape[0] == 3 and sample["has_label"]
            assert (sample["mask"] != 255).sum() > 0.5 * sample["mask"].numel()
        images[name] = tiles[0]["image"]
    direct = prepare_config(REPO / "configs" / "zeroshot" / "potsdam.yaml", input_dir=built["potsdam"],
                            overrides={"input.split": "val"})
    assert len(open_tiles(direct)) == 3
    assert not (images["potsdam"] == images["vaihingen"]).all()  # false colour, not the Potsdam RGB
    if samples is not None:
        real = samples / "remote_sensing" / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
        assert (built["potsdam"] / "img_dir" / "val" / real.name).read_bytes() == real.read_bytes()


def _check_rerun_rewrites_nothing(tmp_path: Path, samples: Path | None, **kw):
    root = tmp_path / "data"
    before = _files(root)
    again = build_datasets(root, samples, **kw)
    assert again.written == 0 and _files(root) == before
    return before


def test_rehearsal_datasets_from_the_real_samples(samples, tmp_path, monkeypatch):
    built = _build_in_checkout_layout(tmp_path, samples, monkeypatch)
    assert built.origin == {"phrasecut": "generated", "oxford_pet": "real",
                            "refcoco": "real annotations, stand-in images", "potsdam": "real + derived",
                            "vaihingen": "stand-in"}
    assert "stand-ins" in built.notes["refcoco"] and "train 2" in built.notes["refcoco"]
    _check_phrasecut(built)
    _check_pets(built, samples)
    _check_refcoco(built, samples)
    _check_tiles(built, samples)
    _check_rerun_rewrites_nothing(tmp_path, samples)
    manifest = json.loads((tmp_path / "data" / MANIFEST).read_text())
    assert manifest["datasets"]["oxford_pet"]["note"] == built.notes["oxford_pet"]


def test_rehearsal_datasets_without_samples(tmp_path, monkeypatch):
    built = _build_in_checkout_layout(tmp_path, tmp_path / "no_samples", monkeypatch, seed=3)
    assert set(built.origin.values()) == {"generated"}
    assert all("generated (no samples folder)" in note for name, note in built.notes.items() if name != "phrasecut")
    _check_phrasecut(built)
    _check_pets(built, None)
    _check_refcoco(built, None)
    _check_tiles(built, None)
    first = _check_rerun_rewrites_nothing(tmp_path, None, seed=3)
    # deterministic: another folder gets the same bytes; smaller sizes remove what they no longer list
    other = build_datasets(tmp_path / "other", None, seed=3)
    def contents(files):  # the manifest names its root (RefCOCO's image_dir): the rest is byte-identical
        return {k: v[1] for k, v in files.items() if k != MANIFEST}

    assert contents(_files(other["phrasecut"].parent)) == contents(first)
    smaller = build_datasets(tmp_path / "other", None, seed=3, sizes={"phrasecut": 4, "potsdam": 1})
    assert smaller.counts["phrasecut"]["removed"] > 0 and smaller.counts["potsdam"]["removed"] == 4
    assert len(open_dataset("phrasecut", smaller["phrasecut"], "val")) == 4
    assert len(list((smaller["phrasecut"] / "images").iterdir())) <= 12
    assert len(list((smaller["potsdam"] / "img_dir" / "val").iterdir())) == 1


def test_rehearsal_sizes_are_checked():
    assert resolve_sizes({"phrasecut": 5})["phrasecut"] == {"train": 5, "val": 5, "test": 5}
    assert resolve_sizes({"phrasecut": {"val": 2}})["phrasecut"] == {"train": 24, "val": 2, "test": 8}
    for bad, message in (({"imagenet": 3}, "unknown key"), ({"oxford_pet": 4}, "val split empty"),
                         ({"refcoco": 2}, "testA"), ({"phrasecut": {"miniv": 2}}, "unknown split"),
                         ({"phrasecut": 0}, "positive")):
        with pytest.raises(ValueError, match=message):
            resolve_sizes(bad)
