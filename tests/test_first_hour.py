"""A new user's first hour: README's first-run commands run in order in a fresh folder (on the tiny model),
help for each command, one-line answers for models that cannot load and for Slurm without Slurm."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
# Appended to each README command: the tiny model and small counts, so that the sequence runs in seconds.
FAST = ["model=tiny-random", "progress=false", "eval.max_new_tokens=8", "eval.limit=6", "trainer.train_limit=4",
        "trainer.val_limit=4", "trainer.samples_per_question=1", "trainer.max_new_tokens=8"]


def readme_first_run() -> list[list[str]]:
    """The commands of README's "First run" block, as argument lists (comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## First run.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README.md has no First run block"
    cmds = [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines() if line.strip()]
    assert cmds and all(c[0] == "starloop" for c in cmds)
    return [c[1:] for c in cmds]


def test_readme_first_run_sequence_in_a_fresh_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_first_run()
    assert [c[0] for c in commands] == ["eval", "eval", "train", "eval"]
    outs = []
    for argv in commands:
        code, out, err = run_cli([*argv, *FAST])
        assert code == 0, (argv, err[-3000:])
        summary = json.loads(out.strip().splitlines()[-1])  # every command ends with one JSON line
        outs.append(summary)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["eval", "eval-iter_1", "eval-logit", "train"]
    assert outs[-1]["checkpoint"] == "runs/train/iter_1"  # the fourth command found the third's adapter
    assert json.loads((tmp_path / "runs" / "train" / "run.json").read_text())["command"] == "train"
    # Each command run again resumes or redoes its own folder; none refuses.
    code, _, err = run_cli([*commands[0], *FAST])
    assert code == 0, err[-2000:]


def test_readme_states_a_measured_time_for_each_first_run_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## First run.*?```bash\n(.*?)```", text, re.DOTALL).group(1)
    comments = [line.partition("#")[2] for line in block.splitlines() if line.strip()]
    assert len(comments) == 4 and all(re.match(r" ~\d+(\.\d+)? (s|min):", c) for c in comments), comments


def test_train_states_its_laptop_limits(tmp_path):
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", "model=tiny-random", "progress=false",
                        "trainer.iterations=0", "trainer.val_limit=2", "eval.max_new_tokens=4",
                        f"out={tmp_path / 'r'}"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training on 4 of the 12640 train questions (trainer.train_limit=4" in r.stdout
    assert ("sampling rationales of at most 128 tokens (trainer.max_new_tokens=128, sized for a laptop CPU; raise "
            "it on a GPU") in r.stdout


def test_eval_states_its_laptop_limit(tmp_path):
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "eval", "model=tiny-random", "progress=false",
                        "eval.max_new_tokens=4", "eval.limit=3", f"out={tmp_path / 'e'}"], capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evaluating 3 of the 1531 val questions (eval.limit=3" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 3


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_groups_and_keys_with_defaults(command, flag):
    code, out, err = run_cli([command, flag])
    assert code == 0 and not err
    assert f"usage: starloop {command}" in out and "groups: model=" in out
    assert "  eval.mode=generate  generate: chain-of-thought" in out
    assert "  data.limit=null  Use at most this many questions" in out
    assert ("  trainer.lr=0.0001  Peak learning rate" in out) == (command == "train")


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"], ["runs/none", "--help"], ["runs/none", "help"]])
def test_report_help(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["report", *argv])
    assert code == 0 and not err
    assert out.startswith("usage: starloop report") and "RUN_DIR" in out and "--out DIR" in out
    assert list(tmp_path.iterdir()) == []  # help writes nothing


def test_unknown_model_offline_is_one_line_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.time()
    for model in ("nobody/no-such-model-xyz", "llama-3.1-8b"):
        code, _, err = run_cli(["train", f"model={model}", f"out={tmp_path / 'r'}"])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "offline" in lines[0] and "hf download" in lines[0]
    assert time.time() - t0 < 30 and not (tmp_path / "r").exists()
    assert "meta-llama/Llama-3.1-8B-Instruct" in err


def test_slurm_launcher_needs_m_and_slurm(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    code, _, err = run_cli(["train", "model=tiny-random", "launcher=slurm", f"out={tmp_path / 'r'}"])
    assert code == 2 and "add -m" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, _, err = run_cli(["train", "-m", "model=tiny-random", "launcher=slurm", f"out={tmp_path / 'r'}"])
    assert code == 2 and "sbatch" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_ctrl_c_in_eval_says_it_starts_over(tmp_path, monkeypatch):
    from starloop import cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_hydra", interrupted)
    code, _, err = run_cli(["eval", "model=tiny-random", f"out={tmp_path / 'e'}"])
    assert code == 130 and "start it over" in err and "resume" not in err
    assert not (tmp_path / "e").exists()


def test_commands_write_nothing_into_the_home_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    extra = ["logger=wandb"] if _has("wandb") else []
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", "model=tiny-random", "progress=false",
                        "trainer.iterations=0", "trainer.val_limit=2", "eval.max_new_tokens=4", *extra,
                        f"out={tmp_path / 'r'}"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == 0  # nothing printed after the summary
    assert list(home.rglob("*")) == []


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
