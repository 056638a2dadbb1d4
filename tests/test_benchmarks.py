"""The benchmark scripts run (small versions), print their ratios, and agree with the reference."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_multi_prompt_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_multi_prompt.py"), "--tiny", "--ks", "1",
                          "4", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "speed-up" in run.stdout and "peak memory" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["k"] for r in rows] == [1, 4]
    assert all(r["max_abs_diff"] <= 1e-4 for r in rows)


def test_activation_cache_benchmark_smoke(tmp_path):
    out = tmp_path / "cache.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_activation_cache.py"), "--tiny", "--images",
                          "8", "--batch", "4", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "speed-up from epoch 2" in run.stdout and result["hit_rate"] == 0.5
    assert result["max_loss_diff"] < 1e-3  # the cache serves the same activations (float16 storage)
