"""Multirun sweeps on the tiny model: one folder per job, a sweep summary; the Slurm launcher's config."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TINY = ["model=tiny-random", "data.limit=8", "trainer.iterations=1", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=8", "eval.max_new_tokens=8", "trainer.val_limit=4", "progress=false"]


def starloop(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starloop.cli", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def summary_rows(out: Path) -> list[dict]:
    with open(out / "sweep_summary.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(180)
def test_two_point_sweep_writes_two_runs_and_a_summary(tmp_path):
    out = tmp_path / "sweep"
    r = starloop("train", "-m", *TINY, "trainer.lr=1e-5,2e-5", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    lrs = []
    for job in ("0", "1"):
        cfg = yaml.safe_load((out / job / "config.yaml").read_text())
        assert cfg["out"] == str(out / job)  # each job records its own folder
        lrs.append(cfg["trainer"]["lr"])
        assert [ln for ln in (out / job / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        assert (out / job / "logs" / "metrics.csv").exists()  # the default local logger
    assert lrs == [1e-5, 2e-5]
    rows = summary_rows(out)
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["overrides"] for r in rows] == ["trainer.lr=1e-05", "trainer.lr=2e-05"]
    for row in rows:
        assert row["status"] == "done" and row["final_iteration"] == "1"
        assert float(row["final_ci_low"]) <= float(row["final_accuracy"]) <= float(row["final_ci_high"])
        assert Path(row["path"]).is_dir()
    md = (out / "sweep_summary.md").read_text()
    assert "trainer.lr=1e-05" in md and "trainer.lr=2e-05" in md and "starloop report" in md


@pytest.mark.timeout(180)
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    """The Slurm code path (hydra-submitit-launcher, submitit's executor) with the local executor."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith("trainer.iterations")]
    r = starloop("train", "-m", "launcher=submitit-local", "launcher.gpus_per_node=0", "launcher.cpus_per_task=1",
                 *tiny, "trainer.iterations=0", "seed=0,1", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / ".submitit").is_dir()  # submitit's job folders: the jobs ran in their own processes
    rows = summary_rows(out)
    assert [r["overrides"] for r in rows] == ["seed=0", "seed=1"]
    assert all(r["status"] == "done" for r in rows)


def _sbatch_lines(overrides: list[str], tmp_path: Path, monkeypatch) -> list[str]:
    """The #SBATCH lines submitit would submit for launcher=slurm (a stub `srun` stands in for the cluster)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from starloop.hydra_config import register

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="starloop.configs", version_base="1.3"):
        cfg = compose(config_name="starloop", overrides=["launcher=slurm", f"out={tmp_path}", *overrides],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    # What the launcher does with its parameters before submitting (hydra_submitit_launcher.launch).
    ex = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                               slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    assert ex._executor.max_num_timeout == 3  # a job that times out is requeued and resumes
    text = ex._executor._make_submission_file_text("python -m starloop.cli", "uid")
    return [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]


def test_slurm_launcher_maps_launcher_keys_to_sbatch(tmp_path, monkeypatch):
    lines = _sbatch_lines(["launcher.partition=overcap", "launcher.timeout_min=90", "launcher.gpus_per_node=2",
                           "launcher.account=lab", "launcher.mem_gb=64"], tmp_path, monkeypatch)
    text = "\n".join(lines)
    for expected in ("--partition=overcap", "--time=90", "--gpus-per-node=2", "--account=lab", "--mem=64GB",
                     "--cpus-per-task=8", "--job-name=starloop"):
        assert expected in text, text


def test_slurm_keys_are_validated_before_anything_runs(tmp_path):
    r = starloop("train", "-m", "launcher=slurm", "launcher.timeout_min=0", f"out={tmp_path / 'x'}")
    assert r.returncode == 2 and "launcher.timeout_min" in r.stderr and "Traceback" not in r.stderr
    r = starloop("train", "-m", "launcher=slurm", "launcher.partiton=gpu", f"out={tmp_path / 'x'}")
    assert r.returncode == 2 and "launcher.partiton" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.timeout(180)
def test_a_failed_job_is_listed_and_the_sweep_goes_on(tmp_path):
    """A job that stops on a user error leaves FAILED; the other jobs run; the command exits 2 at the end."""
    out = tmp_path / "sweep"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    tiny = [a for a in TINY if not a.startswith("trainer.iterations")]
    # job 1 needs openai/MMMLU from the hub: with an empty cache and no network it stops with a DataError
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", "-m", *tiny, "trainer.iterations=0",
                        "data=mmlu,mmmlu", f"out={out}"], capture_output=True, text=True, check=False, timeout=170, env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "1 sweep job(s) failed" in r.stderr.strip().splitlines()[-1]
    rows = summary_rows(out)
    assert rows[0]["status"] == "done" and rows[1]["status"].startswith("failed: ")
    assert (out / "1" / "FAILED").exists() and not (out / "0" / "FAILED").exists()
