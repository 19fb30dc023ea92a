"""Two processes give the files of a one-process run with the same seed: data parallel (ddp.yaml) and
sharded training (fsdp2.yaml), each launched by `accelerate launch` as two CPU processes over gloo.

`accelerate launch --cpu --num_processes 2` starts a single process; ACCELERATE_USE_CPU=true with a
multi-process config starts two (the test checks that it did)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# lora_dropout=0: dropout masks depend on which process draws them, everything else must not.
ARGS = ["model=tiny-random", "data.limit=6", "trainer.iterations=1", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=8", "eval.max_new_tokens=8", "trainer.val_limit=4", "trainer.strategy=weighted_sft",
        "trainer.reward=answer_logprob", "trainer.train_batch_size=2", "trainer.grad_accum=3",
        "trainer.lora_dropout=0.0", "progress=false"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true",
                NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    one = tmp_path_factory.mktemp("one")
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", *ARGS, f"out={one}"], env=_env(),
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return one


@pytest.mark.parametrize("config", ["ddp", "fsdp2"])
def test_two_processes_equal_one(one_process, tmp_path, config):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(accelerate).exists():
        pytest.skip("accelerate CLI not installed")
    one, two = one_process, tmp_path / "two"
    r2 = subprocess.run([accelerate, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / f"{config}.yaml"),
                         "--num_processes", "2", "-m", "starloop.cli", "train", *ARGS, f"out={two}"], env=_env(),
                        capture_output=True, text=True, timeout=600, check=False)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count('"out": ') == 2  # both processes ran the loop (each prints the summary line)
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
