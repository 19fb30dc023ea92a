"""The command line on the tiny model: JSON summary, artifacts, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "starloop.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_eval_tiny_writes_results(tmp_path):
    out = tmp_path / "smoke"
    r = run("eval", "model=tiny-random", "data.limit=8", f"out={out}", "eval.max_new_tokens=16")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = last_json(r.stdout)
    assert summary["n"] == 8 and 0 <= summary["accuracy"] <= 1 and "parse_rate" in summary
    assert (out / "generations.csv").exists() and (out / "config.yaml").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 8 and "by_subject" in metrics


def test_eval_logit_mode(tmp_path):
    r = run("eval", "model=tiny-random", "data.limit=6", "eval.mode=logit", f"out={tmp_path / 'l'}")
    assert r.returncode == 0, r.stderr[-2000:]
    s = last_json(r.stdout)
    assert s["n"] == 6 and s["parse_rate"] == 1.0


@pytest.mark.parametrize("args,needle", [
    (["data.foo=1"], "data.foo"),
    (["data.limit=abc"], "data.limit"),
    (["eval.mode=nope"], "eval.mode"),
    (["data=nope"], "data"),
    (["trainer.lr=-1"], "trainer.lr"),
])
def test_bad_config_one_line_exit_2(tmp_path, args, needle):
    r = run("eval", "model=tiny-random", f"out={tmp_path / 'x'}", *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_missing_data_folder_exit_2(tmp_path):
    r = run("eval", "model=tiny-random", f"data.path={tmp_path / 'missing'}", f"out={tmp_path / 'x'}")
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_broken_csv_exit_2(tmp_path):
    d = tmp_path / "mm" / "val"
    d.mkdir(parents=True)
    (d / "anatomy_val.csv").write_text('"Q1","a","b","c","d","A"\n"Q2","a","b","c","Z"\n', encoding="utf-8")
    r = run("eval", "model=tiny-random", f"data.path={tmp_path / 'mm'}", f"out={tmp_path / 'x'}")
    assert r.returncode == 2 and "anatomy_val.csv" in r.stderr and "2" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_command_and_help():
    assert run("frobnicate").returncode == 2
    r = run("--help")
    assert r.returncode == 0 and "starloop" in r.stdout


def test_out_of_memory_outside_a_stage_is_one_line(tmp_path, monkeypatch, capsys):
    """Memory taken by another process can make even loading the model fail: one line, exit 2."""
    import torch

    from starloop import cli, models

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 260.00 MiB.\nmore detail")

    monkeypatch.setattr(models, "load_model", no_memory)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "model=tiny-random", "data.limit=2", f"out={tmp_path / 'x'}"])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "out of memory" in err[0] and "260.00 MiB" in err[0] and "batch_size" in err[0]


def test_other_errors_are_not_swallowed(tmp_path, monkeypatch, capsys):
    """A bug keeps its traceback (and exit code 1): only user errors and out-of-memory are one line."""
    from starloop import cli, models

    def broken(*args, **kwargs):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(models, "load_model", broken)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "model=tiny-random", "data.limit=2", f"out={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" in err and "a bug, not a user error" in err


def test_an_eval_folder_of_an_older_version_is_still_read(tmp_path):
    """Eval folders written before the sample tables had one name hold results.csv, not generations.csv."""
    from starloop.evaluate import eval_samples_path
    from starloop.runstate import folder_owner

    assert eval_samples_path(tmp_path) == tmp_path / "generations.csv"
    (tmp_path / "results.csv").write_text("question_id,prompt,rationale\n")
    assert eval_samples_path(tmp_path) == tmp_path / "results.csv"
    assert folder_owner(tmp_path) == "eval"
    (tmp_path / "generations.csv").write_text("question_id,prompt,rationale\n")
    assert eval_samples_path(tmp_path) == tmp_path / "generations.csv"
