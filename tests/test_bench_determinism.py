"""bench/determinism.py: it compares a training step's LoRA gradients across repeats, and says when they differ."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--shape", "tiny", "--device", "cpu", "--seq", "32", "--layers", "0", "--repeats", "3"]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("determinism")


@pytest.mark.parametrize("mode", ["off", "on"])
def test_repeats_on_cpu_are_identical_and_the_settings_come_back(bench, mode):
    (row,) = bench.main([*ARGS, "--mode", mode])
    assert row["mode"] == mode and row["identical"] is True and row["max_abs_diff"] == 0.0
    assert row["grad_norm"] > 0  # gradients reached the adapter
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_difference_between_repeats_is_reported(bench, monkeypatch):
    """With LoRA dropout on, each repeat draws its own mask: the gradients differ, and the row says so."""
    def noisy_adapter(model, r):
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=r, target_modules="all-linear", lora_dropout=0.5)).train()

    monkeypatch.setattr(bench, "random_adapter", noisy_adapter)
    (row,) = bench.main([*ARGS, "--mode", "off"])
    assert row["identical"] is False and row["max_abs_diff"] > 0


def test_one_repeat_compares_nothing_and_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([*ARGS[:-1], "1", "--mode", "on"])
    assert e.value.code == 2 and "at least 2" in capsys.readouterr().err


def test_fewer_layers_leave_the_shape_table_as_it_was(bench):
    before = dict(bench.SHAPES["tiny"])
    (row,) = bench.main(["--shape", "tiny", "--device", "cpu", "--seq", "16", "--layers", "1", "--repeats", "2",
                         "--mode", "off"])
    assert bench.SHAPES["tiny"] == before and row["distinct_digests"] == 1
