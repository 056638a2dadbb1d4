"""`clipseg-lab rs-infer` end to end on the shared Potsdam and LoveDA tiles (tiny-random CLIP, tiny random SAM):
outputs, metrics, the untrained label, resume, shards + merge, bad input; the segmenter's batching and SAM cache;
what counts as finished (every listed output present, same settings, same input), else the tile is redone.

Settings are shrunk with --set (short side 224, 160 px windows, one small SAM parameter set) so that the whole file
runs in seconds; the code paths are the full ones (SAM-region and neighbourhood blocks, templates, threshold).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg_lab.cli import main
from clipseg_lab.zeroshot.config import prepare_config
from clipseg_lab.zeroshot.pipeline import UNTRAINED_NOTE, ZeroShotSegmenter, open_tiles
from tests.conftest import REPO, SAMPLES

CONFIGS = REPO / "configs" / "zeroshot"
SMALL = ["--backbone", "tiny-random", "--sam", "tiny-random", "--layers", "8,2,2", "--no-progress",
         "--set", "sliding.short_side=224", "--set", "sliding.window=160", "--set", "sliding.stride=64",
         "--set", "attention.sam_param_sets=[{points_per_side: 4, pred_iou_thresh: 0.0, stability_score_thresh: 0.0}]",
         "--set", "attention.min_region_area=0"]
OUTPUTS = ("pred_mask.png", "pred_labels.png", "pred_overlay.png", "gt_mask.png", "gt_overlay.png", "tile.json")


def rs_infer(config: str, data, out, *extra: str) -> int:
    return main(["rs-infer", "--config", str(CONFIGS / config), "--input", str(data), "--output", str(out), *SMALL,
                 *extra])


def _metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_rs_infer_on_the_potsdam_tile_then_resume(samples, tmp_path, capsys):
    data, out = samples / "remote_sensing" / "potsdam", tmp_path / "out"
    assert rs_infer("potsdam.yaml", data, out) == 0
    printed = capsys.readouterr().out
    assert "1 tiles: 1 segmented, 0 already finished, 0 skipped" in printed and UNTRAINED_NOTE in printed

    tile = out / "visualizations" / "2_10_0_0_512_512"
    assert all((tile / name).is_file() for name in OUTPUTS)
    for name in OUTPUTS[:5]:
        with Image.open(tile / name) as im:
            assert im.size == (512, 512) and im.mode == ("L" if name == "pred_labels.png" else "RGB")
            assert im.text["untrained"] == "true" and "untrained" in im.text["provenance"]
    pred = np.asarray(Image.open(tile / "pred_labels.png"))
    ann = np.asarray(Image.open(data / "ann_dir" / "2_10_0_0_512_512.png"))
    assert pred.max() < 6
    # the metrics are those of the written prediction against the label (0 = ignore, 1..6 = classes 0..5)
    valid = ann > 0
    record = json.loads((tile / "tile.json").read_text())
    assert record["untrained"] and record["size"] == [512, 512] and record["regions"] >= 1
    assert np.asarray(record["confusion"]).sum() == valid.sum()
    assert record["metrics"]["oa"] == pytest.approx(float((pred[valid] == ann[valid] - 1).mean()))

    metrics = _metrics(out)
    assert metrics["untrained"] and metrics["note"] == UNTRAINED_NOTE and metrics["tiles_with_labels"] == 1
    assert metrics["oa"] == pytest.approx(record["metrics"]["oa"]) and 0 <= metrics["miou"] <= 1
    assert list(metrics["per_class"]) == ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
    import pandas as pd

    per_class = pd.read_csv(out / "metrics_per_class.csv")
    assert list(per_class["class"]) == list(metrics["per_class"]) and {"iou", "f1"} <= set(per_class.columns)
    assert len(pd.read_csv(out / "metrics_per_tile.csv")) == 1
    overall = pd.read_csv(out / "metrics.csv").iloc[0]
    assert overall["oa"] == pytest.approx(metrics["oa"]) and overall["miou"] == pytest.approx(metrics["miou"])
    assert overall["mf1"] == pytest.approx(metrics["mf1"]) and bool(overall["untrained"])
    assert json.loads((out / "metrics_per_tile.json").read_text())["2_10_0_0_512_512"]["metrics"] == record["metrics"]
    assert json.loads((out / "run_config.json").read_text())["untrained"]

    stamp = (tile / "tile.json").stat().st_mtime_ns
    assert rs_infer("potsdam.yaml", data, out) == 0  # resume: the finished tile is not segmented again
    assert "0 segmented, 1 already finished" in capsys.readouterr().out
    assert (tile / "tile.json").stat().st_mtime_ns == stamp
    # other settings: another run, which does not replace this one unless asked to
    assert rs_infer("potsdam.yaml", data, out, "--variant", "clearclip") == 2
    err = capsys.readouterr().err
    assert "holds another run of `clipseg-lab rs-infer` (dense.variant: 'sclip' -> 'clearclip'" in err, err
    (out / "notes.txt").write_text("mine")
    assert rs_infer("potsdam.yaml", data, out, "--variant", "clearclip", "--overwrite") == 0
    assert "1 segmented, 0 already finished" in capsys.readouterr().out
    assert (tile / "tile.json").stat().st_mtime_ns != stamp and (out / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def loveda(tmp_path_factory):
    """LoveDA's two shared tiles: one unsharded run, and shards 0/2 and 1/2 in folders of their own."""
    data = SAMPLES / "remote_sensing" / "loveda"
    if not data.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES} (set CLIPSEG_LAB_SAMPLES)")
    root = tmp_path_factory.mktemp("loveda")
    codes = {"full": rs_infer("loveda.yaml", data, root / "full")}
    for i in range(2):
        codes[i] = rs_infer("loveda.yaml", data, root / f"shard{i}", "--shard", f"{i}/2")
    return root, codes


def test_rs_infer_on_the_loveda_tiles(loveda):
    root, codes = loveda
    assert codes["full"] == 0
    for name in ("0", "1"):
        tile = root / "full" / "visualizations" / name
        assert all((tile / f).is_file() for f in OUTPUTS)
        with Image.open(tile / "pred_mask.png") as im:
            assert im.size == (1024, 1024)
    metrics = _metrics(root / "full")
    assert metrics["tiles"] == metrics["tiles_with_labels"] == 2 and metrics["untrained"]
    assert metrics["classes"] == ["background", "building", "road", "water", "barren", "forest", "agriculture"]
    ann = [np.asarray(Image.open(SAMPLES / "remote_sensing" / "loveda" / "ann_dir" / f"{i}.png")) for i in range(2)]
    assert np.asarray(metrics["confusion"]).sum() == sum(int((a > 0).sum()) for a in ann)  # 0 = no-data, ignored


def test_shards_are_disjoint_and_merge_exactly(loveda, capsys):
    root, codes = loveda
    assert codes[0] == codes[1] == 0
    done = [sorted(p.parent.name for p in (root / f"shard{i}" / "visualizations").rglob("tile.json")) for i in range(2)]
    assert done == [["0"], ["1"]]  # disjoint, and together every tile
    assert not (root / "shard0" / "metrics.json").exists()  # a shard of several does not merge on its own
    assert main(["rs-merge", str(root / "shard0"), str(root / "shard1"), "--out", str(root / "merged")]) == 0
    assert "2 tiles (2 labelled)" in capsys.readouterr().out
    merged, full = _metrics(root / "merged"), _metrics(root / "full")
    for key in ("oa", "miou", "mf1", "per_class", "confusion", "pixels", "tiles", "fingerprint"):
        assert merged[key] == full[key], key  # exactly: a confusion matrix is a sum over pixels
    assert merged["missing"] == [] and merged["skipped"] == []


def _reseg_tiles(root, samples):
    """ReSeg-CLIP's layout from the Potsdam tile: <tile>/R_G_B_IR.png (4 bands) + L.png (ISPRS colours)."""
    rgb = np.asarray(Image.open(samples / "remote_sensing" / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"))[:96, :96]
    ann = np.asarray(Image.open(samples / "remote_sensing" / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"))[:96, :96]
    colours = np.array([[0, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0],
                        [255, 0, 0]], np.uint8)  # 0 = boundary (black, ignored), then the six ISPRS classes
    rgbi = np.dstack([rgb, rgb[..., :1]])
    good, no_image, mismatch = root / "area1" / "good", root / "area1" / "no_image", root / "area2" / "mismatch"
    for folder in (good, no_image, mismatch):
        folder.mkdir(parents=True)
    Image.fromarray(rgbi, "RGBA").save(good / "R_G_B_IR.png")
    Image.fromarray(colours[ann]).save(good / "L.png")
    Image.fromarray(colours[ann]).save(no_image / "L.png")  # the target image is missing
    Image.fromarray(rgbi, "RGBA").save(mismatch / "R_G_B_IR.png")
    Image.fromarray(colours[ann][:80, :64]).save(mismatch / "L.png")  # label of another size
    return ann


def test_bad_tiles_are_skipped_and_reported(samples, tmp_path, capsys):
    ann = _reseg_tiles(tmp_path / "tiles", samples)
    out = tmp_path / "out"
    assert rs_infer("reseg_clip.yaml", tmp_path / "tiles", out) == 0  # the run goes on with the good tile
    # a folder without the target image is no tile (it is reported at indexing); the mismatched one is skipped
    printed = capsys.readouterr().out
    assert "2 tiles: 1 segmented, 0 already finished, 2 skipped" in printed
    assert "no R_G_B_IR.png in the tile folder" in printed and str(tmp_path / "tiles" / "area1" / "no_image") in printed
    assert "mismatch/L.png: mask is 64x80 (WxH) but its image" in printed and "must be the same size" in printed
    record = json.loads((out / "visualizations" / "area1" / "good" / "tile.json").read_text())
    assert np.asarray(record["confusion"]).sum() == int((ann > 0).sum())  # colour labels decoded, black ignored
    metrics = _metrics(out)
    assert len(metrics["skipped"]) == 2 and metrics["tiles"] == 1
    assert not (out / "visualizations" / "area2" / "mismatch" / "tile.json").exists()


def test_sam_checkpoint_of_another_model_type_is_a_clear_error(samples, tmp_path, capsys):
    fake = tmp_path / "my_sam.pth"  # a vit_b-sized image encoder (width 768); the config asks for vit_h
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, fake)
    args = ["rs-infer", "--config", str(CONFIGS / "potsdam.yaml"),
            "--input", str(samples / "remote_sensing" / "potsdam"),
            "--output", str(tmp_path / "out"), "--backbone", "tiny-random", "--sam", str(fake), "--layers", "8,2,2",
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{fake} is a SAM vit_b checkpoint" in err and "model type 'vit_h' was chosen" in err
    assert "sam_model_type: vit_b" in err and "sam_vit_h_4b8939.pth" in err


def test_unknown_query_in_the_config_is_a_clear_error(tmp_path, capsys):
    import yaml

    data = yaml.safe_load((CONFIGS / "potsdam.yaml").read_text())
    data["query_to_class"]["parkinglot"] = "impervious surface"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["rs-infer", "--config", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'parkinglot', which is not in text_queries" in err


def test_shards_split_the_tiles_without_overlap(monkeypatch):
    from types import SimpleNamespace

    from clipseg_lab.errors import ConfigError
    from clipseg_lab.zeroshot.pipeline import parse_shard, shard_tiles

    tiles = [SimpleNamespace(name=f"t{i:02d}") for i in range(10)]
    shares = [shard_tiles(tiles, (i, 3)) for i in range(3)]
    assert sorted(t.name for s in shares for t in s) == [t.name for t in tiles]  # each tile exactly once
    assert [len(s) for s in shares] == [4, 3, 3]
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_shard("auto") == (1, 4)  # torchrun
    for bad in ("3/3", "1-3", "-1/2"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmenter")
    return prepare_config(CONFIGS / "potsdam.yaml", backbone="tiny-random", sam="tiny-random", layers="8,2,2",
                          input_dir=root, device="cpu", overrides={
                              "templates": "none", "sliding.short_side": None, "sliding.window": 64,
                              "sliding.stride": 40, "model.img_size": 64, "attention.min_region_area": 0,
                              "attention.sam_param_sets": [{"points_per_side": 4, "pred_iou_thresh": 0.0,
                                                            "stability_score_thresh": 0.0}]})


def test_batched_windows_equal_one_window_at_a_time(small_config):
    """Each window carries its own crop of the SAM partition: batching must not mix them up."""
    image = torch.randint(0, 255, (3, 150, 130), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    one = ZeroShotSegmenter(prepare_config(small_config, overrides={"sliding.batch_size": 1}))
    many = ZeroShotSegmenter(prepare_config(small_config, overrides={"sliding.batch_size": 16}), backbone=one.backbone,
                             sam=one.sam)
    a, parts = one.query_logits(image)
    b, _ = many.query_logits(image)
    assert a.shape == (8, 150, 130) and parts.shape == (1, 150, 130) and parts.max() >= 1  # several regions
    assert torch.allclose(a, b, atol=1e-5)


def test_sam_regions_are_computed_once_per_tile(small_config, tmp_path):
    image = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    seg = ZeroShotSegmenter(small_config, cache_dir=tmp_path / "regions")
    first = seg.segment(image, "tile-a")
    assert seg.regions.computed == 1 and (tmp_path / "regions" / "tile-a.npz").is_file()
    second = seg.segment(image, "tile-a")  # from memory
    assert seg.regions.computed == 1 and torch.equal(first.labels, second.labels)
    sibling = seg.with_settings(variant="naclip", layers=(6, 2, 4))  # an ablation setting shares the regions
    sibling.segment(image, "tile-a")
    assert sibling.regions is seg.regions and seg.regions.computed == 1
    fresh = ZeroShotSegmenter(small_config, backbone=seg.backbone, sam=seg.sam, cache_dir=tmp_path / "regions")
    fresh.segment(image, "tile-a")  # from disk, in a new process or segmenter
    assert fresh.regions.computed == 0
    assert first.labels.shape == (96, 96) and first.probs.shape == (6, 96, 96)


def test_missing_input_folder_is_named(tmp_path):
    from clipseg_lab.errors import ConfigError

    config = prepare_config(CONFIGS / "potsdam.yaml", input_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nowhere'}: no such dataset folder"):
        open_tiles(config)


def test_sliding_window_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    script = REPO / "benchmarks" / "bench_sliding_windows.py"
    run = subprocess.run([sys.executable, str(script), "--tiny", "--repeats", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "speed-up" in run.stdout and "cache" in run.stdout and "s per 512x512 tile" in run.stdout
    result = json.loads(out.read_text())
    assert result["max_abs_diff"] < 1e-4 and result["sam_computed"] == 1 and result["sam_cache_hits"] >= 1



# -- what counts as finished: every listed output present, same settings, same input ---------------------------
def _two_tiles(root, samples):
    """Two ReSeg-layout tiles (different 96 px crops of the Potsdam tile) under root/area/{a,b}; returns the labels."""
    rgb = np.asarray(Image.open(samples / "remote_sensing" / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"))
    ann = np.asarray(Image.open(samples / "remote_sensing" / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"))
    labels = {}
    for name, (y, x) in {"a": (0, 0), "b": (200, 300)}.items():
        _write_tile(root / "area" / name, rgb[y:y + 96, x:x + 96], ann[y:y + 96, x:x + 96])
        labels[f"area/{name}"] = ann[y:y + 96, x:x + 96]
    return labels


ISPRS_COLOURS = np.array([[0, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0],
                          [255, 0, 0]], np.uint8)  # 0 = boundary (black, ignored), then the six ISPRS classes


def _write_tile(folder, rgb, ann):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(folder / "R_G_B_IR.png")
    Image.fromarray(ISPRS_COLOURS[ann]).save(folder / "L.png")


@pytest.fixture
def segment_calls(monkeypatch):
    """The tile names `ZeroShotSegmenter.segment` is called with (what a run really recomputes)."""
    calls: list[str] = []
    original = ZeroShotSegmenter.segment

    def counting(self, image, name=None):
        calls.append(name)
        return original(self, image, name)

    monkeypatch.setattr(ZeroShotSegmenter, "segment", counting)
    return calls


def _record(out, tile):
    return json.loads((out / "visualizations" / tile / "tile.json").read_text())


def test_record_lists_outputs_and_input_and_an_unchanged_rerun_resumes(samples, tmp_path, capsys, segment_calls):
    from clipseg_lab.zeroshot.pipeline import RECORD_FORMAT, file_fingerprint

    data, out = tmp_path / "tiles", tmp_path / "out"
    _two_tiles(data, samples)
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    assert "2 tiles: 2 segmented, 0 already finished, 0 skipped;" in capsys.readouterr().out
    assert sorted(segment_calls) == ["area/a", "area/b"]
    record = _record(out, "area/a")
    assert record["format"] == RECORD_FORMAT and sorted(record["outputs"]) == sorted(OUTPUTS[:5])
    for name, meta in record["outputs"].items():
        assert meta == file_fingerprint(out / "visualizations" / "area" / "a" / name)
    assert record["input"]["image"] == file_fingerprint(data / "area" / "a" / "R_G_B_IR.png")
    assert record["input"]["label"] == file_fingerprint(data / "area" / "a" / "L.png")
    assert record["input"]["bands"] == "RGB" and record["input"]["coding"] == "isprs-colour"

    segment_calls.clear()
    stamps = {t: (out / "visualizations" / t / "tile.json").stat().st_mtime_ns for t in ("area/a", "area/b")}
    assert rs_infer("reseg_clip.yaml", data, out) == 0  # nothing changed: nothing recomputed
    printed = capsys.readouterr().out
    assert "2 tiles: 0 segmented, 2 already finished, 0 skipped;" in printed and "redone" not in printed
    assert segment_calls == []
    assert stamps == {t: (out / "visualizations" / t / "tile.json").stat().st_mtime_ns for t in stamps}


def test_a_deleted_output_is_redone(samples, tmp_path, capsys, segment_calls):
    data, out = tmp_path / "tiles", tmp_path / "out"
    _two_tiles(data, samples)
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    tile_a, tile_b = out / "visualizations" / "area" / "a", out / "visualizations" / "area" / "b"
    before = np.asarray(Image.open(tile_a / "pred_labels.png"))
    stamp_b = (tile_b / "tile.json").stat().st_mtime_ns
    (tile_a / "pred_labels.png").unlink()
    capsys.readouterr()
    segment_calls.clear()
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    printed = capsys.readouterr().out
    assert "2 tiles: 1 segmented, 1 already finished, 0 skipped; 1 redone: outputs missing (1);" in printed
    assert segment_calls == ["area/a"]  # exactly that tile
    assert np.array_equal(np.asarray(Image.open(tile_a / "pred_labels.png")), before)  # back, the same
    assert (tile_b / "tile.json").stat().st_mtime_ns == stamp_b
    assert _metrics(out)["tiles"] == 2 and _metrics(out)["missing"] == []

    with open(tile_b / "pred_mask.png", "ab") as f:  # an output of another size (truncated, overwritten) too
        f.write(b"\0")
    segment_calls.clear()
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    assert "1 redone: outputs changed (1)" in capsys.readouterr().out and segment_calls == ["area/b"]


def test_a_replaced_image_is_redone_with_its_new_metrics(samples, tmp_path, capsys, segment_calls):
    data, out = tmp_path / "tiles", tmp_path / "out"
    labels = _two_tiles(data, samples)
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    old = _record(out, "area/b")
    cache = out / "cache" / "sam_regions" / "area_b.npz"
    with np.load(cache) as f:
        old_key = str(f["key"])
    rgb = np.asarray(Image.open(samples / "remote_sensing" / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"))
    _write_tile(data / "area" / "b", rgb[400:496, 10:106], labels["area/b"])  # other pixels, same name and label
    capsys.readouterr()
    segment_calls.clear()
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    printed = capsys.readouterr().out
    assert "2 tiles: 1 segmented, 1 already finished, 0 skipped; 1 redone: input changed (1);" in printed
    assert segment_calls == ["area/b"]
    new = _record(out, "area/b")
    assert new["input"]["image"] != old["input"]["image"] and new["input"]["label"] == old["input"]["label"]
    assert new["confusion"] != old["confusion"]
    pred = np.asarray(Image.open(out / "visualizations" / "area" / "b" / "pred_labels.png"))
    ann = labels["area/b"]
    valid = ann > 0
    assert new["metrics"]["oa"] == pytest.approx(float((pred[valid] == ann[valid] - 1).mean()))  # of the new image
    with np.load(cache) as f:
        assert str(f["key"]) != old_key  # the SAM regions were recomputed for the new pixels, not reused
    merged = _metrics(out)
    assert merged["confusion"] == (np.asarray(new["confusion"]) + _record(out, "area/a")["confusion"]).tolist()

    _write_tile(data / "area" / "a", rgb[:96, :96], np.where(labels["area/a"] > 0, 1, 0))  # a new label only
    segment_calls.clear()
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    assert "1 redone: input changed (1)" in capsys.readouterr().out and segment_calls == ["area/a"]


def test_records_without_their_pngs_as_a_git_clone_has_them_are_redone(samples, tmp_path, capsys, segment_calls):
    """The repository commits tile.json, run_config.json and the SAM region cache, not the PNGs."""
    import shutil

    from clipseg_lab.zeroshot.config import parse_assignments
    from clipseg_lab.zeroshot.report import tile_rows

    data, out, clone = tmp_path / "tiles", tmp_path / "out", tmp_path / "clone"
    _two_tiles(data, samples)
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    for file in [out / "run_config.json", *out.rglob("tile.json"), *out.rglob("*.npz")]:
        (clone / file.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, clone / file.relative_to(out))
    old_format = clone / "visualizations" / "area" / "b" / "tile.json"  # as the records before format 2
    record = json.loads(old_format.read_text())
    old_format.write_text(json.dumps({k: v for k, v in record.items() if k not in ("format", "outputs", "input")}))
    capsys.readouterr()
    segment_calls.clear()
    assert rs_infer("reseg_clip.yaml", data, clone) == 0
    printed = capsys.readouterr().out
    assert "2 tiles: 2 segmented, 0 already finished, 0 skipped; 2 redone: " in printed
    assert "outputs missing (1)" in printed and "old-format record (1)" in printed
    assert sorted(segment_calls) == ["area/a", "area/b"]
    for tile in ("area/a", "area/b"):
        assert all((clone / "visualizations" / tile / f).is_file() for f in OUTPUTS)
        assert _record(clone, tile)["confusion"] == _record(out, tile)["confusion"]
    sets = [SMALL[i + 1] for i, a in enumerate(SMALL) if a == "--set"]
    config = prepare_config(CONFIGS / "reseg_clip.yaml", input_dir=data, output_dir=clone, backbone="tiny-random",
                            sam="tiny-random", layers="8,2,2", overrides=parse_assignments(sets))
    rows = tile_rows(config)  # what notebook 09 does next: read every finished tile's pred_labels.png
    assert [r["name"] for r in rows] == ["area/a", "area/b"] and rows[0]["pred"].shape == (96, 96)


def test_merge_reports_a_tile_with_a_deleted_output_as_unfinished(samples, tmp_path, capsys):
    data, out = tmp_path / "tiles", tmp_path / "out"
    _two_tiles(data, samples)
    assert rs_infer("reseg_clip.yaml", data, out) == 0
    full = _metrics(out)
    (out / "visualizations" / "area" / "a" / "pred_labels.png").unlink()
    capsys.readouterr()
    assert main(["rs-merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    captured = capsys.readouterr()
    assert "1 tiles (1 labelled)" in captured.out and "not finished yet: 1 tile(s)" in captured.err
    merged = _metrics(tmp_path / "merged")
    assert merged["tiles"] == 1 and merged["missing"] == ["area/a"]
    assert [t for t, _ in merged["incomplete"]] == ["area/a"] and "outputs missing: pred_labels.png" in \
        merged["incomplete"][0][1]
    assert merged["confusion"] == _record(out, "area/b")["confusion"] != full["confusion"]
