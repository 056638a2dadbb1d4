"""Resume is one commit per epoch: a kill at any write of an epoch, or Ctrl-C, resumes to exactly the uninterrupted
run (losses to 1e-6, the same final weights, the best metrics restored); a training folder is owned by its run."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import clipseg_lab.files
from clipseg_lab.cli import main
from clipseg_lab.engine import TrainConfig, Trainer, train
from clipseg_lab.errors import OutputDirError
from clipseg_lab.ownership import OWNER_FILE


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


def _config(out, **changes) -> dict:
    config = {"out_dir": str(out), "epochs": 3, "batch_size": 4, "seed": 3,
              "model": {"input_size": 64, "options": {"dropout": 0.2}},  # dropout: the torch RNG must be restored
              "data": {"options": {"num_scenes": 8, "size": 64}}, "snapshot_samples": 2}
    config.update(changes)
    return config


def _weights(out):
    return load_file(str(out / "checkpoints" / "last.safetensors"))


def _log(out):
    return list(csv.DictReader((out / "training_log.csv").open()))


def _record_writes(monkeypatch, out, kill_at=None):
    """Count os.replace calls into `out` (every atomic write ends in one); raise Killed at the `kill_at`-th."""
    real, writes = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(out)):
            writes.append(os.path.relpath(dst, out))
            if kill_at is not None and len(writes) == kill_at:
                raise Killed(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(clipseg_lab.files.os, "replace", replace)
    return writes


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and the index of every write it made (which epoch's commit it belonged to)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    writes = _record_writes(mp, out)
    epochs = {}
    original = Trainer._commit_epoch

    def commit(self, run):
        first = len(writes)
        original(self, run)
        epochs[run.epoch] = (first, len(writes))

    mp.setattr(Trainer, "_commit_epoch", commit)
    try:
        result = train(_config(out))
    finally:
        mp.undo()
    return out, result, writes, epochs


def test_a_kill_at_every_write_of_an_epoch_resumes_to_the_uninterrupted_run(reference, tmp_path, monkeypatch):
    out_ref, ref, writes, epochs = reference
    first, last = epochs[2]
    assert last - first >= 4, writes[first:last]  # state, log, last, snapshot (and best when it improved)
    assert writes[first] == os.path.join("checkpoints", "trainer_state.pt")  # the commit comes first
    ref_weights = _weights(out_ref)
    for k in range(first + 1, last + 1):  # the k-th write of the run is interrupted
        out = tmp_path / f"kill{k}"
        monkeypatch.undo()
        _record_writes(monkeypatch, out, kill_at=k)
        with pytest.raises(Killed):
            train(_config(out))
        monkeypatch.undo()
        (out / "checkpoints" / ".last.safetensors.0badcafe.safetensors").write_bytes(b"half")  # as SIGKILL leaves
        resumed = train(_config(out))  # the same command again
        losses = [(float(r["train_loss"]), float(r["val_loss"])) for r in _log(out)]
        expected = [(float(r["train_loss"]), float(r["val_loss"])) for r in _log(out_ref)]
        assert len(losses) == len(expected) == 3, (k, writes[k - 1])
        for (a, b), (c, d) in zip(losses, expected):
            assert abs(a - c) < 1e-6 and abs(b - d) < 1e-6, (k, writes[k - 1])
        weights = _weights(out)
        # to 1e-6, not bit for bit: CPU kernels may sum in another order in a new process (float32 rounding)
        assert all(torch.allclose(weights[n], ref_weights[n], rtol=0, atol=1e-6)
                   for n in ref_weights), (k, writes[k - 1])
        assert resumed.best_epoch == ref.best_epoch and resumed.best_metrics["iou_fg"] == ref.best_metrics["iou_fg"]
        assert sorted(p.name for p in (out / "snapshots").glob("epoch_*.npz")) == \
            sorted(p.name for p in (out_ref / "snapshots").glob("epoch_*.npz"))
        best = json.loads((out / "evaluation_results.json").read_text())
        assert best["metrics"]["iou_fg"] == pytest.approx(ref.best_metrics["iou_fg"], abs=1e-9)
        assert not [p for p in out.rglob(".*") if p.name != OWNER_FILE], "no temporary files are left behind"


def test_resume_restores_the_best_epoch_and_its_metrics(reference, tmp_path):
    out_ref, ref, _, _ = reference
    out = tmp_path / "run"
    train(_config(out, epochs=2))
    resumed = train(_config(out, epochs=2))  # finished: the same command only restores
    assert resumed.best_metrics and resumed.best_metrics["iou_fg"] == pytest.approx(
        json.loads((out / "evaluation_results.json").read_text())["metrics"]["iou_fg"])
    assert "image_iou" in resumed.best_metrics  # the per-image scores come back too (paired tests need them)


def test_ctrl_c_stops_after_the_step_with_one_line_and_the_same_command_resumes(reference, tmp_path, capsys,
                                                                               monkeypatch):
    out_ref, _, _, _ = reference
    out = tmp_path / "run"
    TrainConfig.from_dict(_config(out)).to_yaml(tmp_path / "c.yaml")
    original = Trainer.train_epoch

    def epoch_with_ctrl_c(self, epoch):
        if epoch == 2:
            signal.raise_signal(signal.SIGINT)  # the handler fit installed only asks for a stop
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", epoch_with_ctrl_c)
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("stopped: interrupted at epoch 2, step 0; epoch 1 is saved in") and "resume" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put Python's handler back
    monkeypatch.undo()
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 0
    assert [float(r["train_loss"]) for r in _log(out)] == pytest.approx(
        [float(r["train_loss"]) for r in _log(out_ref)], abs=1e-6)


def test_a_folder_of_another_run_is_refused_and_overwrite_removes_only_its_entries(tmp_path):
    out = tmp_path / "run"
    train(_config(out, epochs=1))
    owner = json.loads((out / OWNER_FILE).read_text())
    assert owner["command"] == "train" and "checkpoints/trainer_state.pt" in owner["entries"]
    (out / "notes.txt").write_text("mine")  # the user's own file beside the run
    with pytest.raises(OutputDirError, match=r"holds another run of `clipseg-lab train` \(epochs: 1 -> 2\).*--resume"):
        train(_config(out, epochs=2))
    more = train(_config(out, epochs=2, resume=True))  # --resume continues it with more epochs
    assert more.epochs_run == 2 and [int(r["epoch"]) for r in _log(out)] == [1, 2]
    fresh = train(_config(out, epochs=1, seed=5, overwrite=True))
    assert [int(r["epoch"]) for r in _log(out)] == [1] and fresh.epochs_run == 1
    assert (out / "notes.txt").read_text() == "mine"  # not listed by the owner file: kept
    assert sorted(p.name for p in (out / "snapshots").glob("epoch_*.npz")) == ["epoch_001.npz"]  # none stale


def test_a_foreign_folder_is_never_written_into(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputDirError, match="no clipseg-lab command wrote"):
        train(_config(out, epochs=1))
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    TrainConfig.from_dict(_config(out, epochs=1)).to_yaml(tmp_path / "c.yaml")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        train(_config(tmp_path / "file", epochs=1))


def test_resume_refuses_an_unreadable_or_old_state(tmp_path):
    out = tmp_path / "run"
    train(_config(out, epochs=1))
    torch.save({"epoch": 1, "best": 0.0}, out / "checkpoints" / "trainer_state.pt")  # format 1: no RNG, no history
    with pytest.raises(Exception, match="older clipseg-lab .*--overwrite"):
        train(_config(out, epochs=1))
    (out / "checkpoints" / "trainer_state.pt").write_bytes(b"not a state")
    with pytest.raises(Exception, match="not a readable training state"):
        train(_config(out, epochs=1))
