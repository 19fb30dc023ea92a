"""Two processes (accelerate launch --cpu) give the files of a one-process run with the same seed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

ARGS = ["model=tiny-random", "data.limit=6", "trainer.iterations=1", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=8", "eval.max_new_tokens=8", "trainer.val_limit=4", "trainer.strategy=weighted_sft",
        "trainer.reward=answer_logprob", "trainer.train_batch_size=2", "trainer.grad_accum=2", "progress=false"]


def test_two_processes_equal_one(tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "starloop.cli", "train", *ARGS, f"out={one}"],
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run(["accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "starloop.cli", "train",
                         *ARGS, f"out={two}"], capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    for rel in ("iter_0/val/generations.csv", "iter_1/generations.csv", "iter_1/train_data.jsonl",
                "iter_1/val/generations.csv"):
        assert (one / rel).read_text() == (two / rel).read_text(), rel

    def metrics(p):
        return [{k: v for k, v in json.loads(x).items() if k != "wall_s"} for x in (p / "metrics.jsonl").open()]

    m1, m2 = metrics(one), metrics(two)
    assert [r["iteration"] for r in m1] == [0, 1]
    loss1, loss2 = m1[1].pop("train_loss"), m2[1].pop("train_loss")
    assert m1 == m2 and abs(loss1 - loss2) < 1e-4

    from safetensors.torch import load_file

    a = load_file(one / "iter_1" / "train" / "adapter" / "adapter_model.safetensors")
    b = load_file(two / "iter_1" / "train" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
