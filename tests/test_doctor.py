"""`clipseg-lab doctor` on the rehearsal's files (tiny scale): where each was found, its check, and the error paths."""

from __future__ import annotations

import pytest

from clipseg_lab.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from clipseg_lab.rehearsal.run import mark_random
    from clipseg_lab.rehearsal.weights import build_weights

    root = tmp_path_factory.mktemp("doctor_world")
    built = build_weights(root, scale="tiny")
    mark_random(root)
    return root, built["env"]


def test_doctor_says_where_each_file_is_and_that_it_is_random(world, monkeypatch, capsys):
    from huggingface_hub import constants

    root, env = world
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hf_home" / "hub"))
    code = main(["doctor"])
    out = capsys.readouterr().out
    lines = {line.split(":")[0].split(None, 1)[1]: line for line in out.splitlines() if ":" in line and
             line.split(None, 1)[0] in ("pass", "fail", "missing", "skip")}
    assert lines["ViT-B/16"].startswith("pass") and "$CLIPSEG_LAB_WEIGHTS" in lines["ViT-B/16"]
    assert lines["ViT-L/14"].startswith("pass") and "Hugging Face cache" in lines["ViT-L/14"]
    assert "random weights: rehearsal" in lines["ViT-L/14"]
    clipseg = lines["CIDAS/clipseg-rd64-refined"]
    assert clipseg.startswith("skip") and "--image" in clipseg  # offline: the COCO image is not here
    assert lines["SAM vit_b"].startswith("pass") and "$CLIPSEG_LAB_WEIGHTS" in lines["SAM vit_b"]
    # at tiny scale the ViT-H-named file holds a ViT-B SAM (rehearsal.weights): found, of the wrong kind
    assert lines["SAM vit_h"].startswith("fail") and "vit_b" in lines["SAM vit_h"]
    assert code == 1


def test_doctor_with_the_image_fails_random_weights_against_the_published_values(world, monkeypatch, capsys,
                                                                                  tmp_path):
    import numpy as np
    from huggingface_hub import constants
    from PIL import Image

    root, env = world
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hf_home" / "hub"))
    image = tmp_path / "000000039769.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(image)
    code = main(["doctor", "--image", str(image), "--no-sam"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "CIDAS/clipseg-rd64-refined" in x)
    assert line.startswith("fail") and "integration test" in line and "expected" in line
    assert code == 1


def test_doctor_without_weights_names_what_is_missing(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("CLIPSEG_LAB_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.delenv("HF_HOME", raising=False)
    code = main(["doctor"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert code == 1 and lines[-1] == "0 pass, 0 fail, 5 missing, 0 skip", out
    assert all(line.startswith("missing") for line in lines[:-1]) and "No weights found for backbone 'ViT-B/16'" in out
