"""The instance-mask loaders (Cityscapes gtFine, Penn-Fudan) on fixtures in their real formats and on the real
samples in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg_lab.data.base import DatasetError
from clipseg_lab.data.cityscapes import Cityscapes, instance_ids_to_objects, label_ids_to_train_ids
from clipseg_lab.data.masks import MaskError
from clipseg_lab.data.pennfudan import PennFudan
from clipseg_lab.data.registry import DATASETS, open_dataset


# -- Cityscapes ------------------------------------------------------------------------------------------
def _instance_ids() -> np.ndarray:
    """4 x 6: road (7), sky (23), two cars (26001, 26002), a car crowd (26), ground (6, ignoreInEval)."""
    return np.array([[23, 23, 23, 23, 23, 23],
                     [26001, 26001, 26002, 26002, 26, 26],
                     [7, 7, 7, 7, 6, 6],
                     [7, 7, 7, 7, 0, 0]], np.uint16)


def _cityscapes_fixture(root, split="val", city="aachen", stem="aachen_000000_000019", instance=True, size=(6, 4)):
    ids = _instance_ids()
    (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
    (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    gt = root / "gtFine" / split / city
    if instance:
        Image.fromarray(ids).save(gt / f"{stem}_gtFine_instanceIds.png")  # 16-bit, as shipped
    labels = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
    Image.fromarray(labels).save(gt / f"{stem}_gtFine_labelIds.png")
    return ids


def test_cityscapes_train_ids_and_object_map(tmp_path):
    _cityscapes_fixture(tmp_path)
    data = Cityscapes(tmp_path, "val")
    assert len(data) == 1 and data.records[0].instances
    s = data[0]
    assert s["image"].shape == (3, 4, 6) and s["image"].dtype == torch.uint8
    mask = s["mask"].numpy()
    assert mask[0, 0] == 10 and mask[1, 0] == 13 and mask[2, 0] == 0  # sky, car, road train ids
    assert mask[2, 4] == 255 and mask[3, 4] == 255  # ground and unlabeled: ignored
    assert mask[1, 4] == 13  # a car crowd is still "car" in the semantic mask
    objects = s["instance_mask"].numpy()
    assert objects.dtype == np.int32
    assert objects[1, 0] == 26001 and objects[1, 2] == 26002  # two car instances, two objects
    assert objects[0, 0] == 23 and objects[2, 0] == 7  # stuff: one region per class
    assert (objects[1, 4:] == -1).all() and (objects[2:, 4:] == -1).all()  # crowd and ignored classes
    kept = Cityscapes(tmp_path, "val", groups="keep")[0]["instance_mask"].numpy()
    assert (kept[1, 4:] == 26).all()
    assert s["name"] == "aachen_000000_000019" and s["city"] == "aachen" and s["instances"] is True


def test_cityscapes_conversions_follow_the_official_table():
    assert label_ids_to_train_ids(np.array([7, 8, 11, 24, 33, 0, 6, 9, 29, 30])).tolist() == \
        [0, 1, 2, 11, 18, 255, 255, 255, 255, 255]
    assert instance_ids_to_objects(np.array([[24000, 24001, 24, 4]])).tolist() == [[24000, 24001, -1, -1]]
    with pytest.raises(ValueError, match="groups"):
        instance_ids_to_objects(np.zeros((1, 1)), groups="merge")


def test_cityscapes_falls_back_to_label_ids_and_reports_it(tmp_path):
    _cityscapes_fixture(tmp_path, instance=False)
    data = Cityscapes(tmp_path, "val")
    assert not data.skipped and data.fallbacks and "without instanceIds" in data.notes[0]  # kept, not skipped
    s = data[0]
    assert s["instances"] is False and s["instance_mask"].numpy()[1, 0] == 26  # cars not separated


def test_cityscapes_splits_and_errors(tmp_path):
    _cityscapes_fixture(tmp_path, "train", "bremen", "bremen_000000_000019")
    _cityscapes_fixture(tmp_path, "val")
    assert len(Cityscapes(tmp_path, "all")) == 2 and Cityscapes(tmp_path, "train")[0]["split"] == "train"
    with pytest.raises(DatasetError, match="'test': no samples"):
        Cityscapes(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be"):
        Cityscapes(tmp_path, "training")
    with pytest.raises(DatasetError, match="leftImg8bit"):
        Cityscapes(tmp_path / "nowhere", "val")
    bad = tmp_path / "bad"
    _cityscapes_fixture(bad, size=(5, 4))
    with pytest.raises(MaskError, match="same size"):
        Cityscapes(bad, "val")[0]


# -- Penn-Fudan ------------------------------------------------------------------------------------------
def _pennfudan_fixture(root, names=("FudanPed00001", "FudanPed00002", "PennPed00003"), palette=True):
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    rng = np.random.default_rng(1)
    for k, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / "PNGImages" / f"{name}.png")
        ids = np.zeros((10, 12), np.uint8)
        ids[2:8, 1:4] = 1
        ids[3:9, 6:9] = 2 + k % 2
        mask = Image.fromarray(ids, mode="L")
        if palette:  # the original archive's masks are palette PNGs
            mask = mask.convert("P")
            mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        mask.save(root / "PedMasks" / f"{name}_mask.png")


def test_pennfudan_instances_and_binary(tmp_path):
    _pennfudan_fixture(tmp_path)
    data = PennFudan(tmp_path)
    assert len(data) == 3
    s = data[0]
    assert s["image"].shape == (3, 10, 12) and s["prompt"] == "a person"
    assert set(s["mask"].unique().tolist()) == {0, 1, 2} and s["num_instances"] == 2
    assert s["instance_mask"].dtype == torch.int32 and torch.equal(s["instance_mask"].to(torch.uint8), s["mask"])
    binary = PennFudan(tmp_path, target="binary")[1]["mask"]
    assert set(binary.unique().tolist()) == {0, 1}


def test_pennfudan_seeded_split_and_errors(tmp_path):
    names = [f"FudanPed{i:05d}" for i in range(20)]
    _pennfudan_fixture(tmp_path, names)
    parts = {s: {r.name for r in PennFudan(tmp_path, s).records} for s in ("train", "val", "test")}
    assert sum(map(len, parts.values())) == 20 and not (parts["train"] & parts["test"])
    assert parts == {s: {r.name for r in PennFudan(tmp_path, s).records} for s in parts}  # seeded
    (tmp_path / "PedMasks" / f"{names[0]}_mask.png").unlink()
    data = PennFudan(tmp_path)
    assert len(data) == 19 and data.skipped[0][1] == "mask missing"
    with pytest.raises(DatasetError, match="PNGImages"):
        PennFudan(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="target"):
        PennFudan(tmp_path, target="boxes")


def test_instance_datasets_are_registered(tmp_path):
    _pennfudan_fixture(tmp_path / "pf")
    _cityscapes_fixture(tmp_path / "cs")
    assert DATASETS["cityscapes"].kind == DATASETS["pennfudan"].kind == "instance"
    assert len(open_dataset("pennfudan", tmp_path / "pf", "all")) == 3
    assert len(open_dataset("cityscapes", tmp_path / "cs", "val")) == 1


# -- real samples ----------------------------------------------------------------------------------------
def test_cityscapes_real_sample(samples):
    data = Cityscapes(samples / "cityscapes", "val")
    assert len(data) == 1
    s = data[0]
    assert s["image"].shape == (3, 128, 256)
    train_ids = np.asarray(Image.open(next((samples / "cityscapes" / "gtFine").rglob("*_labelTrainIds.png"))))
    # our conversion of labelIds == the official script's file, except where the sample's separately downsampled
    # labelTrainIds file disagrees with its own labelIds (77 of 32768 pixels)
    assert (s["mask"].numpy() == train_ids).mean() > 0.995
    objects = s["instance_mask"].numpy()
    persons = {v for v in np.unique(objects) if 24000 <= v < 25000}
    cars = {v for v in np.unique(objects) if 26000 <= v < 27000}
    assert len(persons) >= 2 and len(cars) >= 2
    assert ((objects == -1) == (s["mask"].numpy() == 255)).mean() > 0.99  # ignore = not evaluated (+ crowds)


def test_pennfudan_real_sample(samples):
    data = PennFudan(samples / "pennfudan")
    assert len(data) == 1
    s = data[0]
    assert s["image"].shape[1:] == s["mask"].shape and s["num_instances"] == 3
    assert set(np.unique(s["instance_mask"].numpy()).tolist()) == {0, 1, 2, 3}
