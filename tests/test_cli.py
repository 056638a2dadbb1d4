"""The `clipseg-lab` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from clipseg_lab.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "clipseg_lab.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "segment" in out.stdout and "notebooks" in out.stdout
    out = subprocess.run([sys.executable, "-m", "clipseg_lab.cli", "segment", "--help"], capture_output=True, text=True)
    assert "--checkpoint" in out.stdout and "--threshold" in out.stdout


def test_segment_writes_masks_and_overlay(tmp_path, capsys):
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    code = main(["segment", str(image), "a cat", "the sky", "--backbone", "tiny-random", "--out", str(tmp_path / "out"),
                 "--threshold", "0.5", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "untrained" in captured.err and captured.out.startswith("1 image segmented, 0 failed")
    out = tmp_path / "out" / "cat"  # OUT/<image stem>/, for one image as for many
    masks = sorted(p.name for p in out.glob("0*.png"))
    assert masks == ["00_a-cat.png", "01_the-sky.png"]
    mask = Image.open(out / "00_a-cat.png")
    assert mask.size == (60, 40) and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert "untrained backbone" in mask.text["provenance"]
    overlay = Image.open(out / "overlay.png")
    assert "untrained backbone" in overlay.text["Description"]
    record = json.loads((out / "segment.json").read_text())
    assert record["provenance"]["backbone_trained"] is False and record["masks"] == masks
    assert record["threshold"] == 0.5 and record["prompts"] == ["a cat", "the sky"]
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert summary[0] == "image,prompt,mean_probability,area_fraction" and len(summary) == 3


def test_segment_errors_are_one_line(tmp_path, capsys):
    code = main(["segment", str(tmp_path / "missing.png"), "a cat", "--backbone", "tiny-random", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing.png" in err
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code = main(["segment", str(tmp_path / "x.png"), "a cat", "--backbone", "ViT-B/99"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown backbone 'ViT-B/99'; did you mean" in err and len(err.splitlines()) == 1
