"""The trainer under torchrun: two CPU processes with the gloo backend."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from clipseg_lab.engine import TrainConfig


def test_two_process_training(tmp_path):
    config = TrainConfig.from_dict({
        "out_dir": str(tmp_path / "ddp"), "epochs": 2, "batch_size": 4, "snapshot_samples": 1,
        "model": {"input_size": 96, "options": {"dropout": 0.0}},
        "data": {"options": {"num_scenes": 8, "size": 96}}})
    config.to_yaml(tmp_path / "c.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "clipseg_lab.cli", "train", "--config", str(tmp_path / "c.yaml"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "ddp"
    assert json.loads((out / "training_config.json").read_text())["world_size"] == 2
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (out / "checkpoints" / "best.safetensors").is_file()
    assert run.stdout.count("best epoch") == 2  # both ranks finish with the same (synchronised) result
