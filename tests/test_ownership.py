"""Output folders are owned: a command never writes into, or deletes from, what it did not create."""

from __future__ import annotations

import json

import pytest

from clipseg_lab.cli import main
from clipseg_lab.errors import OutputDirError
from clipseg_lab.ownership import OWNER_FILE, SEGMENT_MARKER, claim, read_owner


def test_a_new_folder_becomes_the_commands_and_the_same_run_resumes(tmp_path):
    out = tmp_path / "out"
    first = claim(out, "evaluate", {"checkpoint": "a"})
    assert not first.resumed and read_owner(out)["command"] == "evaluate"
    (out / "evaluation.json").write_text("{}")
    first.record(out / "evaluation.json")
    again = claim(out, "evaluate", {"checkpoint": "a"})
    assert again.resumed and again.entries == ["evaluation.json"]


def test_outputs_are_recorded_from_any_spelling_of_their_path(tmp_path, monkeypatch):
    """A relative folder (as the notebooks pass `../papermill_runs/...`) with outputs named from the working
    directory, from the folder, or absolutely: the same entry; a path outside the folder is refused."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    out = claim("../runs/a", "evaluate", {"checkpoint": "a"})
    (tmp_path / "runs" / "a" / "ckpt").mkdir()
    (tmp_path / "runs" / "a" / "ckpt" / "best.pt").write_text("x")
    out.record("../runs/a/ckpt/best.pt", "ckpt/best.pt", tmp_path / "runs" / "a" / "ckpt" / "best.pt", "ckpt")
    assert read_owner(tmp_path / "runs" / "a")["entries"] == ["ckpt/", "ckpt/best.pt"]
    with pytest.raises(OutputDirError, match="outside the output folder"):
        out.record("../elsewhere.txt")


@pytest.mark.parametrize("command,inputs,match", [
    ("hypothesis", {"checkpoint": "a"}, r"written by `clipseg-lab evaluate`, not `clipseg-lab hypothesis`"),
    ("evaluate", {"checkpoint": "b"}, r"holds another run of `clipseg-lab evaluate` \(checkpoint: 'a' -> 'b'\)"),
])
def test_another_command_or_run_is_refused(tmp_path, command, inputs, match):
    out = tmp_path / "out"
    claim(out, "evaluate", {"checkpoint": "a"})
    with pytest.raises(OutputDirError, match=match):
        claim(out, command, inputs)


def test_overwrite_removes_only_the_listed_entries(tmp_path):
    out = tmp_path / "out"
    mine = claim(out, "evaluate", {"checkpoint": "a"})
    (out / "sub").mkdir()
    (out / "sub" / "x.csv").write_text("x")
    (out / "evaluation.json").write_text("{}")
    mine.record(out / "evaluation.json", out / "sub")
    (out / "notes.txt").write_text("the user's")
    (tmp_path / "outside.txt").write_text("keep")
    owner = json.loads((out / OWNER_FILE).read_text())
    owner["entries"] += ["../outside.txt", "/etc/hostname", "."]  # a tampered owner file deletes nothing else
    (out / OWNER_FILE).write_text(json.dumps(owner))
    claim(out, "evaluate", {"checkpoint": "b"}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "notes.txt"]
    assert (tmp_path / "outside.txt").read_text() == "keep"
    assert read_owner(out)["inputs"] == {"checkpoint": "b"} and read_owner(out)["entries"] == []


def test_a_folder_no_command_wrote_is_never_taken(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="no clipseg-lab command wrote"):
            claim(out, "evaluate", {}, overwrite=overwrite)
    assert [p.name for p in out.iterdir()] == ["cat.jpg"]


def test_segments_folder_is_segments(tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    (out / SEGMENT_MARKER).write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="written by `clipseg-lab segment`"):
            claim(out, "evaluate", {}, overwrite=overwrite)


def test_a_legacy_folder_is_adopted_as_an_earlier_run(tmp_path):
    out = tmp_path / "prepared"
    (out / "Train").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(OutputDirError, match="written before clipseg-lab kept owner files"):
        claim(out, "prepare", {"dataset": "x"}, legacy=("manifest.json", "Train"), can_resume=False)
    claim(out, "prepare", {"dataset": "x"}, legacy=("manifest.json", "Train"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE]


def test_evaluate_and_hypothesis_rewrite_their_own_run_and_refuse_another(tmp_path, capsys, samples):
    pets = samples / "oxford_pet"
    args = ["hypothesis", "--dataset", "oxford_pet", "--data", str(pets), "--limit", "2", "--subsample", "200",
            "--out", str(tmp_path / "h")]
    assert main(args) == 0 and main(args) == 0  # the same run again: rewritten in place
    owner = read_owner(tmp_path / "h")
    assert owner["command"] == "hypothesis" and "hypothesis.json" in owner["entries"]
    capsys.readouterr()
    assert main([*args, "--seed", "3"]) == 2
    assert "holds another run of `clipseg-lab hypothesis` (seed: 0 -> 3)" in capsys.readouterr().err
    assert main([*args, "--seed", "3", "--overwrite"]) == 0
    assert read_owner(tmp_path / "h")["inputs"]["seed"] == 3
