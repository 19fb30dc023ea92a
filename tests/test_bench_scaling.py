"""bench/scaling.py runs on CPU at tiny sizes with two processes over gloo (sampling, replicated and sharded
training, the largest-shape search), and its speed-up table divides by the right one-process row."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "bench" / "scaling.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_speedups_divide_by_the_one_process_row():
    scaling = _load()
    one = {"rows": [{"part": "sampling", "mode": "k4", "tok_s": 100.0},
                    {"part": "train", "mode": "sft replicated", "shape": "s", "tok_s": 50.0},
                    {"part": "train", "mode": "dpo replicated", "shape": "s", "tok_s": 40.0}]}
    many = {"rows": [{"part": "sampling", "mode": "k4", "tok_s": 190.0},
                     {"part": "train", "mode": "sft replicated", "shape": "s", "tok_s": 90.0},
                     {"part": "train", "mode": "dpo sharded", "shape": "s", "tok_s": 30.0},
                     {"part": "largest", "mode": "sft sharded", "shape": "big", "tok_s": 5.0},
                     {"part": "train", "mode": "sft sharded", "shape": "s", "error": "OutOfMemoryError"}]}
    got = [r["speedup"] for r in scaling.speedups(one, many)]
    assert got == [pytest.approx(1.9), pytest.approx(1.8), pytest.approx(0.75), None, None]


def test_scaling_bench_runs_on_two_cpu_processes(tmp_path):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(accelerate).exists():
        pytest.skip("accelerate CLI not installed")
    out = tmp_path / "two.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    r = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", str(ROOT / "bench" / "scaling.py"),
                        "--device", "cpu", "--shape", "tiny", "--rows", "8", "--batch", "4", "--new", "4",
                        "--prompt-tokens", "8", "--seq", "32", "--micro", "2", "--accum", "2", "--steps", "3",
                        "--largest", "tiny", "tiny-deep", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["env"]["processes"] == 2
    modes = [(x["part"], x["mode"]) for x in res["rows"]]
    assert modes == [("sampling", "k4 T0.7 top-p0.95"), ("train", "sft replicated"), ("train", "dpo replicated"),
                     ("train", "sft sharded"), ("train", "dpo sharded"), ("largest", "sft sharded"),
                     ("largest", "sft sharded")]
    assert all(x.get("tok_s", 0) > 0 and "error" not in x for x in res["rows"]), res["rows"]
    assert [x.get("fits") for x in res["rows"][-2:]] == [True, True]
    assert res["rows"][-1]["params_b"] > res["rows"][-2]["params_b"]
