"""`clipseg-lab segment` over many images: batch outputs, resume, ownership, and the CLI's manners."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg_lab.batch import MANIFEST, output_names
from clipseg_lab.cli import build_parser, main
from clipseg_lab.errors import ClipsegLabError

TINY = ["--backbone", "tiny-random", "--device", "cpu", "--no-progress"]


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def _photos(root: Path) -> Path:
    photos = root / "photos"
    _image(photos / "a.png", 0)
    _image(photos / "b.jpg", 1)
    (photos / "c.png").write_bytes(b"this is not a png")  # unreadable: reported, counted, skipped
    (photos / "notes.txt").write_text("not an image: not listed")
    return photos


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_folder_batch_resume_and_stale_masks(tmp_path, capsys):
    photos, out = _photos(tmp_path), tmp_path / "masks"
    args = ["segment", str(photos), "a cat", "a dog", "--out", str(out), *TINY]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("2 images segmented, 1 failed")
    assert "c.png" in captured.err and len([line for line in captured.err.splitlines() if "c.png" in line]) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "b"]
    assert (out / MANIFEST).is_file()
    rows = _summary(out)
    assert list(rows[0]) == ["image", "prompt", "mean_probability", "area_fraction"] and len(rows) == 2 * 2
    assert {(Path(r["image"]).name, r["prompt"]) for r in rows} == {(i, p) for i in ("a.png", "b.jpg")
                                                                    for p in ("a cat", "a dog")}
    assert all(0 <= float(r["area_fraction"]) <= 1 and 0 <= float(r["mean_probability"]) <= 1 for r in rows)
    record = json.loads((out / "a" / "segment.json").read_text())
    assert record["masks"] == ["00_a-cat.png", "01_a-dog.png"] and record["area_threshold"] == 0.5
    assert all((out / "a" / f).is_file() for f in record["files"])

    # the same command again: nothing is redone
    before_a, before_b = _mtimes(out / "a"), _mtimes(out / "b")
    assert main(args) == 0
    assert "2 already up to date" in capsys.readouterr().out
    assert _mtimes(out / "a") == before_a and _mtimes(out / "b") == before_b

    # a changed input is redone, the other left alone
    _image(photos / "b.jpg", 7)
    assert main(args) == 0
    assert _mtimes(out / "a") == before_a
    assert _mtimes(out / "b")["segment.json"] != before_b["segment.json"]
    capsys.readouterr()

    # other prompts: every image redone, and no mask of the old prompt list remains
    (out / "a" / "mine.txt").write_text("a user's note: never deleted")
    assert main(["segment", str(photos), "a bird", "--out", str(out), "--threshold", "0.3", *TINY]) == 0
    for name in ("a", "b"):
        assert sorted(p.name for p in (out / name).glob("*.png")) == ["00_a-bird.png", "overlay.png"]
        assert json.loads((out / name / "segment.json").read_text())["threshold"] == 0.3
    assert (out / "a" / "mine.txt").is_file()
    assert len(_summary(out)) == 2 and set(np.unique(np.asarray(Image.open(out / "a" / "00_a-bird.png")))) <= {0, 255}


def test_glob_input_and_refusals(tmp_path, capsys):
    photos = _photos(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", str(photos / "*.jpg"), "a cat", "--out", str(out), *TINY]) == 0
    assert capsys.readouterr().out.startswith("1 image segmented, 0 failed")
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["b"] and len(_summary(out)) == 1

    # --out is the input folder (or holds it): refused before anything is loaded
    for where in (photos, tmp_path):
        assert main(["segment", str(photos), "a cat", "--out", str(where), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "input image" in err
    assert not (photos / "a").exists()

    # a non-empty folder another tool wrote: refused, unless --overwrite, which deletes nothing of its own
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("theirs")
    assert main(["segment", str(photos / "a.png"), "a cat", "--out", str(foreign), *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--overwrite" in err and not (foreign / "a").exists()
    assert main(["segment", str(photos / "a.png"), "a cat", "--out", str(foreign), "--overwrite", *TINY]) == 0
    assert (foreign / "results.csv").read_text() == "theirs" and (foreign / "a" / "00_a-cat.png").is_file()
    capsys.readouterr()

    # every input unreadable: exit 2 (one input: its error; several: each reported, then the count)
    assert main(["segment", str(photos / "c.*"), "a cat", "--out", str(tmp_path / "none"), *TINY]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "none").exists()
    (tmp_path / "bad").mkdir()
    for name in ("x.png", "y.jpg"):
        (tmp_path / "bad" / name).write_bytes(b"\0" * 10)
    assert main(["segment", str(tmp_path / "bad"), "a cat", "--out", str(tmp_path / "none"), *TINY]) == 2
    assert "0 images segmented, 2 failed" in capsys.readouterr().out
    assert not (tmp_path / "none" / "summary.csv").exists()


def test_same_stem_gets_unique_folders():
    names = output_names([Path("x/cat.jpg"), Path("x/cat.png"), Path("y/dog.png"), Path("z/Dog.png"),
                          Path("s/summary.csv.png")])
    assert names == {Path("x/cat.jpg"): "cat-jpg", Path("x/cat.png"): "cat-png", Path("y/dog.png"): "dog-png",
                     Path("z/Dog.png"): "Dog-png-2", Path("s/summary.csv.png"): "summary.csv-2"}


def _one_line_exit(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    return err


def test_threshold_must_be_a_probability(tmp_path, capsys):
    image = str(_image(tmp_path / "a.png"))
    assert "--threshold" in _one_line_exit(["segment", image, "a cat", "--threshold", "50"], capsys)
    _one_line_exit(["evaluate", "--checkpoint", "x", "--dataset", "d", "--out", "o", "--threshold", "-0.1"], capsys)
    _one_line_exit(["segment", image, "a cat", "--threshold", "half"], capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_device_is_one_line(tmp_path, capsys):
    image = str(_image(tmp_path / "a.png"))
    for argv in (["segment", image, "a cat", "--device", "cuda"], ["train", "--config", "x.yaml", "--device", "cuda"],
                 ["notebooks", "--device", "cuda:3"], ["rs-infer", "--config", "x.yaml", "--device", "cuda"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "'cuda" in err and "cpu" in err
    assert main(["segment", image, "a cat", "--device", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_verbose_before_or_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-v", "segment", "x.png", "a cat"]).verbose is True
    assert parser.parse_args(["segment", "x.png", "a cat", "-v"]).verbose is True
    assert parser.parse_args(["segment", "x.png", "a cat"]).verbose is False
    assert parser.parse_args(["train", "--config", "c.yaml", "--verbose"]).verbose is True
    assert parser.parse_args(["train", "--config", "c.yaml", "--init-from", "w.pth"]).init_from == "w.pth"


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    image = str(_image(tmp_path / "a.png"))
    assert main(["segment", image, "a cat", "--model", "clipseg-rd46", *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "unknown model 'clipseg-rd46'; did you mean 'clipseg-rd64'?" in err
    assert main(["segment", image, "a cat", "--backbone", "tiny-randm", "--device", "cpu"]) == 2
    assert "did you mean 'tiny-random'?" in capsys.readouterr().err
    from clipseg_lab.data.registry import open_dataset

    with pytest.raises(ClipsegLabError, match="did you mean 'oxford_pet'"):
        open_dataset("oxford-pet", None, "val")


def test_interrupt_and_dataset_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from clipseg_lab import batch
    from clipseg_lab.data.base import DatasetError
    from clipseg_lab.data.masks import MaskError

    assert issubclass(DatasetError, ClipsegLabError) and issubclass(MaskError, ValueError)

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "collect_images", interrupted)
    assert main(["segment", "x.png", "a cat"]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"

    def bad_folder(_):
        raise DatasetError("photos/: no masks folder")

    monkeypatch.setattr(batch, "collect_images", bad_folder)
    assert main(["segment", "x.png", "a cat"]) == 2
    assert capsys.readouterr().err == "error: photos/: no masks folder\n"


def test_written_files_follow_the_umask(tmp_path):
    from clipseg_lab.files import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary file left


def test_older_segment_folders_are_recognised_and_only_listed_masks_deleted(tmp_path):
    from clipseg_lab.batch import _listed_files, owned_by_segment

    (tmp_path / "old" / "cat").mkdir(parents=True)  # written by segment before the ownership marker existed
    (tmp_path / "old" / "cat" / "segment.json").write_text(json.dumps(
        {"prompts": ["x"], "masks": ["00_x.png", "../../x.png", "notes.txt", "/etc/passwd"]}))
    assert owned_by_segment(tmp_path / "old")
    assert _listed_files(tmp_path / "old" / "cat") == {"00_x.png"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("")
    assert not owned_by_segment(tmp_path / "other")
