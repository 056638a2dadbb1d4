"""Users' own data: the `folder` (images, binary masks, prompts.csv) and `folder-semantic` (images, index
labels, classes.yaml) datasets: loading, splits, the one bad-row report, skip_bad, prepare and training."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from clipseg_lab.data.base import DatasetError
from clipseg_lab.data.folder import FolderReferring, FolderSemantic, seeded_split_by_image
from clipseg_lab.data.masks import MaskError
from clipseg_lab.data.prepare import prepare_dataset
from clipseg_lab.data.registry import DATASETS, open_dataset
from clipseg_lab.data.transforms import JointTransform

H, W = 40, 48


def _image(path, seed, size=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _square(seed, fg=255, size=(H, W)):
    m = np.zeros(size, np.uint8)
    y, x = 4 + seed % 10, 4 + (3 * seed) % 14
    m[y:y + 16, x:x + 20] = fg
    return m


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_csv(path, header, rows):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def make_folder(root, n=10, prompts=("a square", "the thing"), split=None):
    """n images, a mask each (even images 0/255, odd ones 0/1), every image on len(prompts) rows."""
    rows = []
    for i in range(n):
        _image(root / "images" / f"im{i}.jpg", i)
        _save(root / "masks" / f"im{i}.png", _square(i, 255 if i % 2 == 0 else 1))
        for p in prompts:
            rows.append([f"im{i}.jpg", f"im{i}.png", p] + ([split(i)] if split else []))
    _write_csv(root / "prompts.csv", ["image", "mask", "prompt"] + (["split"] if split else []), rows)
    return root


def make_semantic(root, n=10, classes="classes: [background, cat, dog]\n", values=(0, 1, 2), splits=None, ignore=255):
    for i in range(n):
        _image(root / "images" / f"s{i}.png", 100 + i)
        label = np.full((H, W), values[0], np.uint8)
        label[4:20, 4:24] = values[1 + i % (len(values) - 1)]
        label[0, :] = ignore
        _save(root / "labels" / f"s{i}.png", label)
    (root / "classes.yaml").write_text(classes)
    if splits:
        _write_csv(root / "splits.csv", ["image", "split"], [[f"s{i}.png", splits(i)] for i in range(n)])
    return root


def _stems(data):
    return {r.image.stem for r in data.records}


def test_folder_loads_several_prompts_per_image_binary_masks_and_a_seeded_split_by_image(tmp_path):
    root = make_folder(tmp_path / "data")
    splits = {s: open_dataset("folder", root, s) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 16, "val": 2, "test": 2}  # 8/1/1 images x 2 prompts
    assert not (_stems(splits["train"]) & _stems(splits["val"]) or _stems(splits["train"]) & _stems(splits["test"])
                or _stems(splits["val"]) & _stems(splits["test"]))  # by image: never one image in two splits
    again = FolderReferring(root, "train")
    assert [r.name for r in again.records] == [r.name for r in splits["train"].records]  # deterministic
    assert seeded_split_by_image([f"im{i}.jpg" for i in range(10)], 0, 0.1, 0.1) == \
        seeded_split_by_image([f"im{i}.jpg" for i in reversed(range(10))], 0, 0.1, 0.1)  # order-free
    everything = open_dataset("folder", root, "all")
    assert len(everything) == 20 and everything.split_source.startswith("seeded split by image")
    by_name = {}
    for i in range(len(everything)):
        s = everything[i]
        assert s["image"].dtype.is_floating_point is False and tuple(s["image"].shape) == (3, H, W)
        assert s["mask"].dtype == s["image"].dtype and set(s["mask"].unique().tolist()) == {0, 1}  # 0/255 and 0/1
        assert s["dataset"] == "folder" and s["source"].endswith(".jpg")
        by_name[s["name"]] = s
    assert by_name["im3-0"]["prompt"] == "a square" and by_name["im3-1"]["prompt"] == "the thing"
    assert (by_name["im2-0"]["mask"].numpy() == (_square(2) > 0)).all()
    small = FolderReferring(root, "all", transform=JointTransform(32))[0]
    assert tuple(small["image"].shape) == (3, 32, 32) and tuple(small["mask"].shape) == (32, 32)
    assert DATASETS["folder"].kind == "referring" and DATASETS["folder-semantic"].kind == "semantic"


def test_folder_split_column_is_respected(tmp_path):
    names = ["train", "train", "val", "test", "Train", "validation"]  # case and aliases are forgiven
    root = make_folder(tmp_path / "data", n=6, split=lambda i: names[i])
    assert _stems(open_dataset("folder", root, "train")) == {"im0", "im1", "im4"}
    assert _stems(open_dataset("folder", root, "val")) == {"im2", "im5"}
    test = open_dataset("folder", root, "test")
    assert _stems(test) == {"im3"} and test.split_source == "the split column of prompts.csv"


def test_folder_bad_rows_are_one_report_naming_each_file(tmp_path):
    root = make_folder(tmp_path / "data", n=4, prompts=("a square",))
    _image(root / "images" / "big.png", 9, size=(H + 2, W))
    _save(root / "masks" / "big.png", _square(9))
    grey = _square(5)
    grey[10, 10] = 128  # anti-aliased edge: not binary
    _save(root / "masks" / "grey.png", grey)
    (root / "images" / "broken.png").write_bytes(b"not a png")
    _save(root / "masks" / "broken.png", _square(1))
    rows = [["im0.jpg", "im0.png", "a square"],
            ["gone.jpg", "im1.png", "missing image"],
            ["im1.jpg", "gone.png", "missing mask"],
            ["big.png", "im2.png", "size mismatch"],
            ["im2.jpg", "im2.png", "   "],
            ["broken.png", "broken.png", "unreadable"],
            ["im3.jpg", "grey.png", "not binary"]]
    _write_csv(root / "prompts.csv", ["image", "mask", "prompt", "split"], [r + ["train"] for r in rows])
    with pytest.raises(DatasetError) as info:
        open_dataset("folder", root, "train")
    text = str(info.value)
    assert str(root) in text and "6 bad row(s)" in text and "skip_bad" in text
    for expected in ("line 3: images/gone.jpg: image file missing", "line 4: masks/gone.png: mask file missing",
                     "line 5: masks/im2.png: mask is 48x40 but its image images/big.png is 48x42",
                     "line 6: empty prompt", "line 7: images/broken.png: unreadable image file",
                     "line 8: masks/grey.png: not a binary mask (values 0, 128, 255"):
        assert expected in text, expected
    skipping = open_dataset("folder", root, "train", skip_bad=True)
    assert len(skipping) == 1 and len(skipping.skipped) == 6
    summary = skipping.report_skips()
    assert "skipped 6" in summary and "1 x mask is not binary" in summary
    lazy = open_dataset("folder", root, "train", skip_bad=True, check_values=False)  # the mask is read at load time
    assert len(lazy) == 2
    with pytest.raises(MaskError, match="grey.png: not a binary mask"):
        lazy[1]


def test_folder_long_reports_are_cut_and_bad_split_names_reported(tmp_path):
    root = make_folder(tmp_path / "data", n=2, prompts=("a",))
    _write_csv(root / "prompts.csv", ["image", "mask", "prompt", "split"],
               [[f"x{i}.jpg", "im0.png", "p", "train"] for i in range(14)] + [["im0.jpg", "im0.png", "p", "tst"]])
    with pytest.raises(DatasetError, match=r"(?s)15 bad row.*and 5 more") as info:
        open_dataset("folder", root, "train")
    assert "x9.jpg" in str(info.value) and "x10.jpg" not in str(info.value)
    with pytest.raises(DatasetError, match="no samples in split 'train'"):
        open_dataset("folder", root, "train", skip_bad=True)
    (root / "prompts.csv").write_text("picture,text\na.png,b\n")
    with pytest.raises(DatasetError, match="prompts.csv: no column.*image, prompt"):
        open_dataset("folder", root, "train")


def test_folder_semantic_classes_splits_and_unknown_classes(tmp_path):
    root = make_semantic(tmp_path / "sem", splits=lambda i: "test" if i == 9 else "val" if i == 8 else "train")
    train = open_dataset("folder-semantic", root, "train")
    assert train.class_names == ("background", "cat", "dog") and len(train) == 8 and train.split_source == "splits.csv"
    assert [r.name for r in open_dataset("folder-semantic", root, "test").records] == ["s9"]
    s = train[1]
    assert set(s["mask"].unique().tolist()) == {0, 2, 255} and tuple(s["image"].shape) == (3, H, W)
    # a mapping with gaps and its own ignore index: remapped to 0..K-1, ignore to 255
    other = make_semantic(tmp_path / "gaps", n=5, classes="{0: sky, 5: roof, 9: road, ignore_index: 7}\n",
                          values=(0, 5, 9), ignore=7)
    data = FolderSemantic(other, "all")
    assert data.class_names == ("sky", "roof", "road") and len(data) == 5
    assert set(data[0]["mask"].unique().tolist()) == {0, 1, 255}
    assert set(data[1]["mask"].unique().tolist()) == {0, 2, 255}
    seeded = {s: _stems(FolderSemantic(other, s)) for s in ("train", "val", "test")}
    assert [len(v) for v in seeded.values()] == [3, 1, 1]
    assert set().union(*seeded.values()) == {f"s{i}" for i in range(5)}
    # unknown class, missing label, size mismatch: one report
    label = np.asarray(Image.open(root / "labels" / "s0.png")).copy()
    label[30, 30] = 7
    _save(root / "labels" / "s0.png", label)
    (root / "labels" / "s1.png").unlink()
    _save(root / "labels" / "s2.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DatasetError) as info:
        open_dataset("folder-semantic", root, "train")
    text = str(info.value)
    assert "3 bad row(s)" in text and "skip_bad" in text
    assert "labels/s0.png: unknown class 7; classes.yaml names 0..2 (ignore_index 255)" in text
    assert "labels/s1.png: label file missing" in text and "labels/s2.png: label is 49x40" in text
    skipping = open_dataset("folder-semantic", root, "train", skip_bad=True)
    assert len(skipping) == 5 and len(skipping.skipped) == 3
    (root / "classes.yaml").write_text("{a: cat}\n")
    with pytest.raises(DatasetError, match="classes.yaml: class indices must be integers"):
        FolderSemantic(root, "train")


def test_prepare_writes_the_folder_splits(tmp_path):
    root = make_folder(tmp_path / "data")
    manifest = prepare_dataset("folder", root, tmp_path / "prepared", network_size=32, backbone_size=32)
    assert {k: v["samples"] for k, v in manifest["splits"].items()} == {"Train": 16, "Val": 2, "Test": 2}
    rows = list(csv.DictReader((tmp_path / "prepared" / "Train" / "samples.csv").open()))
    assert len({r["name"] for r in rows}) == 16 and {r["prompt"] for r in rows} == {"a square", "the thing"}
    mask = np.asarray(Image.open(tmp_path / "prepared" / "Train" / "masks" / f"{rows[0]['name']}.png"))
    assert mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {0, 1}


def test_training_and_evaluating_on_a_folder(tmp_path):
    from clipseg_lab.cli import main
    from clipseg_lab.engine import train

    root = make_folder(tmp_path / "data", n=5, prompts=("a square",))  # 3 / 1 / 1 images
    result = train({"out_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 2, "snapshot_samples": 1,
                    "model": {"name": "clipseg-rd64", "backbone": "tiny-random", "input_size": 64},
                    "data": {"dataset": "folder", "root": str(root), "options": {"skip_bad": True}}})
    results = json.loads((result.out_dir / "evaluation_results.json").read_text())
    assert results["monitor"] == "iou_fg" and 0 <= results["metrics"]["iou_fg"] <= 1
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(result.best_checkpoint), "--dataset", "folder", "--data", str(root),
                 "--split", "test", "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["samples"] == 1


def test_training_clip_unet_on_a_semantic_folder(tmp_path):
    from clipseg_lab.engine import train

    root = make_semantic(tmp_path / "sem", n=6)
    result = train({"out_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 2, "loss": "wce+dice",
                    "snapshot_samples": 1,
                    "model": {"name": "clip-unet", "input_size": 64,
                              "options": {"channels": [8, 16, 32], "dropout": [0.05, 0.1, 0.05]}},
                    "data": {"dataset": "folder-semantic", "root": str(root)}})
    assert result.monitor == "miou" and set(result.best_metrics["per_class"]) == {"background", "cat", "dog"}
    assert (result.out_dir / "evaluation_results.json").is_file()
