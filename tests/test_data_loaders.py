"""Each loader on made-up fixtures in the real format, and on the real samples in ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg_lab.data.base import DatasetError
from clipseg_lab.data.masks import MaskError, encode_colours
from clipseg_lab.data.oxford_pet import OxfordPet, read_list
from clipseg_lab.data.phrasecut import PhraseCut
from clipseg_lab.data.refcoco import RefCOCO
from clipseg_lab.data.remote_sensing import CODINGS, ISPRS_COLOURS, RemoteSensingTiles
from clipseg_lab.data.synthetic import SyntheticShapes


# -- SyntheticShapes ---------------------------------------------------------------------------------------
def test_synthetic_is_seeded_and_the_prompt_matters():
    a, b = SyntheticShapes(20, seed=3), SyntheticShapes(20, seed=3)
    assert len(a) == len(b) and all(torch.equal(a[i]["image"], b[i]["image"]) for i in (0, 5, len(a) - 1))
    by_scene: dict[str, list] = {}
    for i in range(len(a)):
        s = a[i]
        assert s["mask"].any(), f"{s['name']}: a positive prompt needs a non-empty mask"
        by_scene.setdefault(s["name"], []).append(s)
    for name, samples in by_scene.items():
        assert len(samples) >= 2, f"{name}: every scene holds distractors"
        assert len({s["prompt"] for s in samples}) == len(samples)
        m0, m1 = samples[0]["mask"].bool(), samples[1]["mask"].bool()
        assert (m0 & m1).sum() < 0.5 * (m0 | m1).sum(), "two targets of one scene must not share their mask"


def test_synthetic_negatives_and_semantic_mode():
    neg = [s for s in (SyntheticShapes(30, seed=1, negative_rate=0.3)[i] for i in range(40)) if s["target"] < 0]
    assert neg and all(not s["mask"].any() for s in neg)
    sem = SyntheticShapes(10, mode="semantic", ignore_band=2)
    values = set(torch.cat([sem[i]["mask"].flatten() for i in range(len(sem))]).unique().tolist())
    assert values <= {0, 1, 2, 3, 255} and 255 in values and 0 in values


# -- Oxford-IIIT Pet ---------------------------------------------------------------------------------------
def test_oxford_pet_real_sample(samples):
    root = samples / "oxford_pet"
    species = {r.name: r.species for r in read_list(root / "annotations" / "list.txt")}
    pets = OxfordPet(root, "all")
    assert len(pets) == 18 and "seeded split" in pets.split_source
    for i in range(len(pets)):
        s = pets[i]
        values = set(s["mask"].unique().tolist())
        assert values <= {0, 1, 2, 255}
        assert species[s["name"]] in values and (3 - species[s["name"]]) not in values, s["name"]
        assert s["prompt"] == f"a {s['species']}"
    splits = {name: {OxfordPet(root, name).records[i].name for i in range(len(OxfordPet(root, name)))}
              for name in ("trainval", "train", "val", "test")}
    assert splits["train"] | splits["val"] == splits["trainval"] and not splits["train"] & splits["val"]
    assert not splits["trainval"] & splits["test"] and len(splits["trainval"] | splits["test"]) == 18


def _pet_fixture(tmp_path, names=("Abyssinian_1", "beagle_2"), official=True):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    lines = []
    for i, name in enumerate(names):
        Image.new("RGB", (20, 10), (i * 50, 0, 0)).save(tmp_path / "images" / f"{name}.jpg")
        trimap = np.full((10, 20), 2, np.uint8)
        trimap[2:8, 5:15], trimap[2, 5:15] = 1, 3
        Image.fromarray(trimap).save(tmp_path / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {i + 1} {1 if name[0].isupper() else 2} 1")
    (tmp_path / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(lines) + "\n")
    if official:
        (tmp_path / "annotations" / "trainval.txt").write_text(lines[0] + "\n")
        (tmp_path / "annotations" / "test.txt").write_text(lines[1] + "\n")
    return tmp_path


def test_oxford_pet_official_splits_and_targets(tmp_path):
    root = _pet_fixture(tmp_path)
    train = OxfordPet(root, "trainval")
    assert train.split_source.startswith("official") and [r.name for r in train.records] == ["Abyssinian_1"]
    dog = OxfordPet(root, "test", target="binary")[0]
    assert dog["species"] == "dog" and set(dog["mask"].unique().tolist()) == {0, 1, 255}
    assert OxfordPet(root, "test")[0]["mask"].max() == 255 and 2 in OxfordPet(root, "test")[0]["mask"]


def test_oxford_pet_bad_input(tmp_path):
    root = _pet_fixture(tmp_path, official=False)
    (root / "annotations" / "trimaps" / "beagle_2.png").unlink()
    pets = OxfordPet(root, "all")
    assert len(pets) == 1 and pets.skipped == [(str(root / "annotations" / "trimaps" / "beagle_2.png"),
                                                "trimap missing")]
    assert "trimap missing" in pets.report_skips()
    Image.fromarray(np.full((5, 5), 2, np.uint8)).save(root / "annotations" / "trimaps" / "Abyssinian_1.png")
    with pytest.raises(MaskError, match=r"Abyssinian_1.png: mask is 5x5 .* is 20x10"):
        pets[0]
    (root / "annotations" / "list.txt").unlink()
    with pytest.raises(DatasetError, match="list.txt: missing"):
        OxfordPet(root)


# -- remote sensing ----------------------------------------------------------------------------------------
def test_potsdam_index_and_palette_agree(samples, tmp_path):
    """The real Potsdam index label, written in the ISPRS palette, decodes back to the same classes."""
    potsdam = RemoteSensingTiles(samples / "remote_sensing" / "potsdam", coding="isprs-index")
    sample = potsdam[0]
    classes = sample["mask"].numpy()
    assert sample["image"].shape == (3, 512, 512) and set(np.unique(classes)) <= {0, 1, 2, 3, 4, 5, 255}
    palette = {colour: i for colour, i in CODINGS["isprs-colour"].label_to_class.items()}
    rgb = encode_colours(classes, palette)
    tile = tmp_path / "img_dir"
    tile.mkdir()
    (tmp_path / "ann_dir").mkdir()
    Image.fromarray(sample["image"].permute(1, 2, 0).numpy()).save(tile / "t.png")
    Image.fromarray(rgb).save(tmp_path / "ann_dir" / "t.png")
    decoded = RemoteSensingTiles(tmp_path, coding="isprs-colour")[0]["mask"].numpy()
    assert np.array_equal(decoded, classes)


def test_hand_made_isprs_palette_tile(tmp_path):
    """A tile painted with the ISPRS colours, in the ReSeg-CLIP layout with a 4-band R_G_B_IR image."""
    folder = tmp_path / "area1" / "tile_7"
    folder.mkdir(parents=True)
    label = np.zeros((6, 7, 3), np.uint8)
    for i, colour in enumerate(ISPRS_COLOURS):
        label[i] = colour
    Image.fromarray(label).save(folder / "L.png")
    bands = np.zeros((6, 7, 4), np.uint8)
    bands[..., 0], bands[..., 3] = 10, 200  # R = 10, IR = 200 (a band, not alpha)
    Image.fromarray(bands, "RGBA").save(folder / "R_G_B_IR.png")
    tiles = RemoteSensingTiles(tmp_path, coding="isprs-colour", bands="IRRG")
    s = tiles[0]
    assert tiles.layout == "reseg" and s["name"] == "area1/tile_7"
    assert s["image"][:, 0, 0].tolist() == [200, 10, 0]
    assert s["mask"][:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # impervious .. clutter, row by row
    label[0, 0] = (1, 2, 3)
    Image.fromarray(label).save(folder / "L.png")
    with pytest.raises(MaskError, match=r"L.png: 1 pixels have colours outside .*\(1, 2, 3\)"):
        tiles[0]


def test_remote_sensing_mappings_and_errors(samples, tmp_path):
    loveda = RemoteSensingTiles(samples / "remote_sensing" / "loveda", coding="loveda")
    assert len(loveda) == 2 and loveda.class_names[1] == "building"
    merged = RemoteSensingTiles(samples / "remote_sensing" / "loveda", coding="loveda", class_names=("other", "built"),
                                label_to_class={0: 255, 1: "other", 2: "built", 3: "built", 4: 0, 5: 0, 6: 0, 7: 0})
    assert set(merged[0]["mask"].unique().tolist()) <= {0, 1, 255}
    with pytest.raises(ValueError, match="unknown class 'water'"):
        RemoteSensingTiles(samples / "remote_sensing" / "loveda", coding="loveda", class_names=("other",),
                           label_to_class={1: "water"})
    partial = RemoteSensingTiles(samples / "remote_sensing" / "loveda", coding="loveda", label_to_class={1: 0})
    with pytest.raises(MaskError, match=r"label value\(s\) \[2, 3"):
        partial[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no samples found"):
        RemoteSensingTiles(tmp_path / "empty")


# -- RefCOCO -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["refcoco.json", "refer_format"])
@pytest.mark.parametrize("dataset,split_by,splits", [("refcoco", "unc", ("train", "val", "testA", "testB")),
                                                     ("refcoco+", "unc", ("train", "val", "testA", "testB")),
                                                     ("refcocog", "umd", ("train", "val", "test"))])
def test_refcoco_masks_match_coco_areas(samples, layout, dataset, split_by, splits):
    path = samples / "refcoco" / layout
    if layout == "refcoco.json" and dataset != "refcoco":
        data = json.loads(path.read_text())
        if not any(r["dataset"] == dataset and r["dataset_partition"] == split_by for r in data["ref"]):
            pytest.skip(f"{path.name} has no {dataset}({split_by}) records")
    count = 0
    for split in splits:
        refs = RefCOCO(path, dataset, split_by, split, images="placeholder")
        assert refs.missing_images and all(refs[i]["placeholder"] for i in range(len(refs)))
        for i in range(len(refs)):
            s = refs[i]
            area = s["mask"].sum().item()
            assert abs(area - s["coco_area"]) <= 0.02 * s["coco_area"], (s["name"], area, s["coco_area"])
            count += 1
    assert count > 0


def test_refcoco_says_when_images_are_missing(samples):
    with pytest.raises(DatasetError, match=r"COCO image\(s\) .* not found .*COCO_train2014_\d+\.jpg.*placeholder"):
        RefCOCO(samples / "refcoco" / "refcoco.json")


def test_refcoco_rle_annotations_and_images(tmp_path):
    from pycocotools import mask as mask_utils

    truth = np.zeros((12, 16), np.uint8)
    truth[3:9, 4:12] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    rle["counts"] = rle["counts"].decode()
    Image.new("RGB", (16, 12)).save(tmp_path / "COCO_train2014_000000000001.jpg")
    data = {"ref": [{"dataset": "refcoco", "dataset_partition": "unc", "split": "val", "ref_id": 1, "ann_id": 5,
                     "image_id": 1, "sentences": [{"sent": "the box", "sent_id": 9}]}],
            "coco_anns": {"1": {"info": {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 12,
                                         "width": 16}, "anns": [{"id": 5, "segmentation": rle, "area": 48.0}]}}}
    (tmp_path / "refs.json").write_text(json.dumps(data))
    s = RefCOCO(tmp_path / "refs.json", split="val", image_dir=tmp_path)[0]
    assert not s["placeholder"] and torch.equal(s["mask"], torch.from_numpy(truth)) and s["prompt"] == "the box"


# -- PhraseCut ---------------------------------------------------------------------------------------------
def _phrasecut_fixture(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / "images" / "1.jpg")
    tasks = [
        {"task_id": "1__a", "image_id": 1, "phrase": "two windows", "instance_boxes": [[2, 2, 8, 8], [20, 2, 8, 8]],
         "ann_ids": [11, 12], "phrase_structure": {"name": "window", "attributes": [], "relations": []},
         "Polygons": [[[[2, 2], [10, 2], [10, 10], [2, 10]]],  # instance 1: one part
                      [[[20, 2], [28, 2], [28, 10], [20, 10]], [[30, 20], [38, 20], [38, 28], [30, 28]]]]},
        {"task_id": "1__b", "image_id": 1, "phrase": "the frame", "instance_boxes": [[0, 0, 20, 20]], "ann_ids": [13],
         "phrase_structure": None,
         "Polygons": [[[[0, 0], [20, 0], [20, 20], [0, 20]], [[5, 5], [15, 5], [15, 15], [5, 15]],  # outer + hole
                       [[1, 1], [2, 2]],  # two points: skipped and counted
                       [[30, 25], [60, 25], [60, 40], [30, 40]]]]},  # partly outside: clipped
        {"task_id": "2__a", "image_id": 2, "phrase": "a missing image", "Polygons": [[[[0, 0], [5, 0], [5, 5]]]]},
    ]
    (tmp_path / "refer_val.json").write_text(json.dumps(tasks))
    (tmp_path / "refer_input_val.json").write_text(json.dumps([{k: t[k] for k in ("task_id", "image_id", "phrase")}
                                                               for t in tasks]))
    return tmp_path


def test_phrasecut_fixture(tmp_path):
    root = _phrasecut_fixture(tmp_path)
    pc = PhraseCut(root, "val")
    assert len(pc) == 2 and pc.skipped[0][1] == "image file missing"
    windows = pc[0]["mask"]
    assert windows[5, 5] == 1 and windows[5, 25] == 1 and windows[25, 35] == 1 and windows[20, 15] == 0
    assert pc[0]["instances"] == 2
    frame = pc[1]
    assert frame["mask"][10, 10] == 1 and frame["skipped_polygons"] == 1  # union: the hole is filled, as PhraseCut
    assert frame["mask"][28, 39] == 1  # clipped to the image edge
    holed = PhraseCut(root, "val", holes=True)[1]["mask"]
    assert holed[10, 10] == 0 and holed[2, 10] == 1
    inputs = PhraseCut(root, "val", input_only=True)
    assert "mask" not in inputs[0] and inputs[0]["prompt"] == "two windows"
    with pytest.raises(DatasetError, match="refer_train.json: missing"):
        PhraseCut(root, "train")


@pytest.mark.parametrize("storage", ["save_to_disk", "parquet"])
def test_refcoco_hugging_face_copy(tmp_path, storage):
    import datasets

    from clipseg_lab.data.refcoco import RefCOCOHF

    images = [Image.new("RGB", (20, 10), (i * 60, 10, 10)) for i in range(2)]
    rows = {"image": images,
            "sentences": [[{"sent": "left box", "sent_id": 1}, {"sent": "the red one", "sent_id": 2}],
                          [{"sent": "right box", "sent_id": 3}]],
            "raw_anns": [json.dumps({"segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]], "area": 36}),
                         json.dumps({"segmentation": [[12, 1, 18, 1, 18, 9, 12, 9]], "area": 48})]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "image": datasets.Image(),
        "sentences": [{"sent": datasets.Value("string"), "sent_id": datasets.Value("int64")}],
        "raw_anns": datasets.Value("string")}))
    if storage == "save_to_disk":
        datasets.DatasetDict({"val": ds}).save_to_disk(str(tmp_path / "refcoco"))
        path = tmp_path / "refcoco"
    else:
        (tmp_path / "refcoco").mkdir()
        ds.to_parquet(str(tmp_path / "refcoco" / "val-00000.parquet"))
        path = tmp_path / "refcoco"
    refs = RefCOCOHF(path, "val")
    assert len(refs) == 3 and [refs[i]["prompt"] for i in range(3)] == ["left box", "the red one", "right box"]
    assert refs[0]["mask"].shape == (10, 20) and refs[2]["mask"][5, 15] == 1 and refs[2]["mask"][5, 5] == 0
    assert abs(refs[2]["mask"].sum().item() - 48) <= 0.25 * 48  # pycocotools' polygon raster vs the area
    with pytest.raises(DatasetError):
        RefCOCOHF(tmp_path / "nothing", "val")
