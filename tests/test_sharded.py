"""Sharded LoRA training (FSDP2, two CPU processes over gloo) equals unsharded training: the same losses
step by step (SFT, then DPO against the adapter-disabled reference), the same adapter, and the same
run resumed from that adapter. ~30 s: two processes each import torch, transformers and peft."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "sharded_worker.py"
FSDP2 = ROOT / "configs" / "accelerate" / "fsdp2.yaml"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true",
               NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run(cmd: list[str], timeout: int = 300) -> None:
    # A process that runs fewer forward passes than the other waits forever in a collective: the
    # timeout turns that hang into a failure.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr[-3000:]


def test_sharded_training_equals_unsharded(tmp_path):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(accelerate).exists():
        pytest.skip("accelerate CLI not installed")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, str(WORKER), str(one)])
    _run([accelerate, "launch", "--config_file", str(FSDP2), "--num_processes", "2", str(WORKER), str(two)])
    a, b = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert (a["world"], a["sharded"]) == (1, False)
    assert (b["world"], b["sharded"]) == (2, True)
    for key in ("sft", "ref", "dpo", "resumed"):
        assert len(a[key]) == len(b[key]) > 0, key
        torch.testing.assert_close(torch.tensor(b[key]), torch.tensor(a[key]), rtol=1e-5, atol=1e-5, msg=key)
    assert a["sft"][-1] < a["sft"][0] and a["dpo"][-1] < a["dpo"][0]  # it trained

    from safetensors.torch import load_file

    for folder in ("adapter", "adapter_resumed"):
        wa = load_file(one / folder / "adapter_model.safetensors")
        wb = load_file(two / folder / "adapter_model.safetensors")
        assert wa.keys() == wb.keys() and len(wa) > 0
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=k)
        assert json.loads((two / folder / "adapter_config.json").read_text())["r"] == 4


def test_process_share_pads_sharded_steps():
    from starloop.train import process_share

    b0, b1, b2 = ["u0"], ["u1"], ["u2"]
    group = [b0, b1, b2]
    # Unsharded: every second micro-batch, nothing added.
    assert process_share(group, 0, 2, False) == [(b0, 1.0), (b2, 1.0)]
    assert process_share(group, 1, 2, False) == [(b1, 1.0)]
    # Sharded: the same shares, the shorter one padded at weight 0 to as many passes as the longest.
    assert process_share(group, 1, 2, True) == [(b1, 1.0), (b0, 0.0)]
    assert process_share([b0], 1, 2, True) == [(b0, 0.0)]
    assert process_share(group, 0, 1, True) == [(b0, 1.0), (b1, 1.0), (b2, 1.0)]


def test_fsdp2_config_shards_with_fsdp2():
    cfg = yaml.safe_load(FSDP2.read_text())
    assert cfg["distributed_type"] == "FSDP"
    assert cfg["fsdp_config"]["fsdp_version"] == 2
    assert cfg["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "NCCL_NVLS_ENABLE=0" in FSDP2.read_text()
