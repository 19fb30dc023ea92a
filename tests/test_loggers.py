"""Run loggers: local files, TensorBoard and W&B (offline, no network) through the loop's hooks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starloop.config import Config, LoggerConfig
from starloop.errors import ConfigError
from starloop.loggers import open_logger
from starloop.records import Sample, write_samples

LINES = [{"iteration": 1, "split": "val", "language": "yo", "n": 4, "accuracy": 0.5, "ci_low": 0.15, "ci_high": 0.85,
          "parse_rate": 1.0, "degenerate_rate": 0.25, "kept": 3, "kept_fraction": 0.5, "train_loss": 0.7},
         {"iteration": 1, "split": "val", "language": "zu", "n": 4, "accuracy": 0.25, "ci_low": 0.05,
          "ci_high": 0.7, "parse_rate": 0.75, "degenerate_rate": 0.0, "kept": 3, "kept_fraction": 0.5},
         {"iteration": 1, "split": "val", "language": "all", "n": 8, "accuracy": 0.375, "ci_low": 0.14,
          "ci_high": 0.69, "parse_rate": 0.875, "degenerate_rate": 0.125, "kept": 3, "kept_fraction": 0.5}]


def val_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "iter_1" / "val"
    folder.mkdir(parents=True)
    write_samples(folder / "generations.csv", [
        Sample(question_id=f"q{i}", sample_index=0, prompt="P", rationale=f"thinking | {i}\nThe answer is (A)",
               extracted="A", gold="AB"[i % 2], correct=i % 2 == 0, status="correct" if i % 2 == 0 else "wrong",
               language="yo", subject="virology", n_tokens=12) for i in range(5)])
    return folder


def cfg_with(**logger) -> Config:
    return Config(logger=LoggerConfig(**logger))


def test_local_logger_writes_steps_live_and_a_metrics_csv(tmp_path):
    out = tmp_path / "run"
    folder = val_folder(tmp_path)
    # iteration 1 already trained 7 steps (a resumed run): iteration 2 continues the step count
    (out / "iter_1" / "train").mkdir(parents=True)
    (out / "iter_1" / "train" / "DONE").write_text(json.dumps({"steps": 7}))
    with open_logger(cfg_with(), out) as lg:
        lg.train_step(2, {"step": 1, "loss": 0.9, "rewards/margins": 0.1})
        lg.train_step(2, {"step": 2, "loss": 0.8})
        lg.validation(1, LINES, folder)
        lg.validation(1, LINES, folder)  # logged twice (a resume): no duplicate rows
    steps = [json.loads(x) for x in (out / "logs" / "steps.jsonl").read_text().splitlines()]
    assert [s["global_step"] for s in steps] == [8, 9] and steps[0]["rewards/margins"] == 0.1
    with open(out / "logs" / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["iteration"], r["language"]) for r in rows] == [("1", "all"), ("1", "yo"), ("1", "zu")]


def test_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    with open_logger(cfg_with(tensorboard=True), out) as lg:
        lg.train_step(1, {"step": 1, "loss": 0.9})
        lg.validation(1, LINES, val_folder(tmp_path))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_missing_wandb_is_one_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match="pip install 'starloop\\[wandb\\]'"):
        open_logger(cfg_with(name="wandb"), tmp_path / "run")


def _wandb_run(out: Path) -> Path:
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_wandb_offline_records_metrics_config_and_sample_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    folder = val_folder(tmp_path)
    with open_logger(cfg_with(name="wandb", table_rows=3), out) as lg:
        lg.train_step(1, {"step": 1, "loss": 0.9, "rewards/margins": 0.25})
        lg.validation(1, LINES, folder)
    run = _wandb_run(out)
    records = next(run.glob("run-*.wandb")).read_bytes()  # protobuf records: the keys are stored as text
    for key in (b"train/loss", b"train/rewards/margins", b"train/global_step", b"val/accuracy",
                b"val/yo/accuracy", b"val/zu/parse_rate", b"dpo_beta"):
        assert key in records, key
    tables = list(run.glob("files/media/table/val/samples_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "rationale" in table["columns"] and len(table["data"]) == 3
    # a resumed run continues the same W&B run
    assert (out / "logs" / "wandb_run_id").read_text().strip() in run.name


@pytest.mark.timeout(240)
def test_train_with_wandb_offline_writes_a_run_folder(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", "logger=wandb", "model=tiny-random",
                        "data.limit=8", "trainer.iterations=0", "trainer.val_limit=4", "eval.max_new_tokens=8",
                        "progress=false", f"out={out}"], capture_output=True, text=True, check=False, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == 0  # the summary line stays last
    run = _wandb_run(out)
    assert b"val/accuracy" in next(run.glob("run-*.wandb")).read_bytes()
    assert list(run.glob("files/media/table/val/samples_*.table.json"))
