"""The STaR loop end to end on the tiny model: artifacts, metrics, resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# The random model never answers correctly, so a reward strategy with a likelihood reward is what makes
# every iteration train (and the resume check cover the scoring and training stages).
BASE = ["model=tiny-random", "data.limit=16", "trainer.iterations=2", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=12", "eval.max_new_tokens=12", "trainer.val_limit=6", "progress=false",
        "trainer.strategy=weighted_sft", "trainer.reward=answer_logprob", "trainer.lr=1e-2"]


def train(out: Path, *extra: str, timeout=600):
    return subprocess.run([sys.executable, "-m", "starloop.cli", "train", *BASE, f"out={out}", *extra],
                          capture_output=True, text=True, timeout=timeout, check=False)


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("wall_s", None)
    return rows


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = train(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_two_iterations_write_metrics_and_generations(reference_run):
    rows = metrics(reference_run)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(0 <= r["accuracy"] <= 1 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows)
    for k in (1, 2):
        gens = reference_run / f"iter_{k}" / "generations.csv"
        assert gens.exists() and len(gens.read_text().splitlines()) > 1
        assert (reference_run / f"iter_{k}" / "train" / "adapter" / "adapter_config.json").exists()
    assert (reference_run / "config.yaml").exists()
    assert all(r["kept"] > 0 for r in rows[1:])  # every iteration trained
    # paired tests on the same questions: iteration 1 vs 0; iteration 2 vs 1 and vs the base model
    assert "mcnemar_prev_p" not in rows[0] and "mcnemar_base_p" not in rows[1]
    assert 0 <= rows[1]["mcnemar_prev_p"] <= 1 and 0 <= rows[2]["mcnemar_base_p"] <= 1
    assert rows[2]["mcnemar_prev_b"] + rows[2]["mcnemar_prev_c"] <= rows[2]["n"]
    assert all(r["dropped_too_long"] == 0 and "dropped_truncated" in r for r in rows[1:])
    gens = (reference_run / "iter_1" / "generations.csv").read_text()
    assert "answer_logprob" in gens.splitlines()[0]


def test_resume_after_kill_equals_uninterrupted(reference_run, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "starloop.cli", "train", *BASE, f"out={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once iteration 1's sampling has written something (mid-iteration).
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "iter_1").glob("**/*.csv")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "iter_2").exists()
    r = train(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert metrics(out) == metrics(reference_run)
    for k in (1, 2):
        a = (out / f"iter_{k}" / "generations.csv").read_text()
        assert a == (reference_run / f"iter_{k}" / "generations.csv").read_text()
    from safetensors.torch import load_file

    a = load_file(out / "iter_2" / "train" / "adapter" / "adapter_model.safetensors")
    b = load_file(reference_run / "iter_2" / "train" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_second_run_on_same_folder_refuses(tmp_path):
    from starloop.runstate import RunLock

    with RunLock(tmp_path / "busy"):
        r = train(tmp_path / "busy")
    assert r.returncode == 2 and "another starloop run" in r.stderr


def test_resume_with_changed_config_refuses(reference_run):
    r = train(reference_run, "trainer.lr=0.5")
    assert r.returncode == 2 and "trainer.lr" in r.stderr
