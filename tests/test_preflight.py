"""The full profile never pretends: every missing input of the selected notebooks is one line, before anything runs."""

from __future__ import annotations

import json

import pytest

from clipseg_lab.cli import main
from clipseg_lab.notebooks import find_repo_root
from clipseg_lab.preflight import PreflightError, check

ROOT = find_repo_root()


def test_each_missing_input_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPSEG_LAB_WEIGHTS", raising=False)
    phrasecut = tmp_path / "phrasecut"
    phrasecut.mkdir()
    for split in ("train", "val"):
        (phrasecut / f"refer_{split}.json").write_text(json.dumps([]))
    notebooks = [
        ("02_model_variants", {"backbone": "tiny-random", "dataset": "phrasecut", "data_root": "phrasecut"}),
        ("06_refcoco", {"data": {"dataset": "refcoco", "root": "refcoco", "options": {}}}),
        ("09_remote_sensing_zero_shot", {"sam": "vit_h", "data_root": ".",
                                         "datasets": {"potsdam": {"dir": "potsdam"}}}),
        ("00_quickstart", {"checkpoint": "CIDAS/clipseg-rd64-refined", "backbone": "tiny-random"}),
    ]
    with pytest.raises(PreflightError) as info:
        check(notebooks, tmp_path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert f"{phrasecut / 'images'}: PhraseCut's images/" in text  # PhraseCut without images/
    assert "refer_train.json" not in text  # present
    assert "RefCOCO without data.options.image_dir" in text  # placeholders are for smoke runs only
    assert "SAM 'vit_h'" in text and f"{tmp_path / 'potsdam'}" in text
    assert "checkpoint 'CIDAS/clipseg-rd64-refined'" in text and "hf download" in text  # a missing released one
    assert all(p.count("\n") == 0 for p in problems)


def test_full_profile_stops_before_any_notebook_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLIPSEG_LAB_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf-home"))
    code = main(["notebooks", "--profile", "full", "--only", "02,06", "--run-dir", str(tmp_path / "runs"),
                 "--figures-dir", str(tmp_path / "figures")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    assert any("02_model_variants" in line and "phrasecut" in line for line in lines)
    assert any("06_refcoco" in line for line in lines)
    assert not (tmp_path / "runs").exists(), "nothing may run (or be written) when an input is missing"
