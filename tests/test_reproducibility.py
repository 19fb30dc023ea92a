"""`deterministic=true`: torch's deterministic kernels (warning where an op has none), cuDNN without
benchmarking and cuBLAS's fixed workspace inside a command, and the previous settings after it."""

from __future__ import annotations

import os

import torch

from starloop.reproducibility import CUBLAS_WORKSPACE, deterministic_kernels


def _state():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_on_inside_the_block_and_restored_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _state()
    assert before[0] is False  # the default: nothing to restore would make this test pass trivially
    with deterministic_kernels(True):
        # warn_only: an op without a deterministic implementation warns rather than stopping the run
        assert _state() == (True, True, True, False, CUBLAS_WORKSPACE)
    assert _state() == before


def test_a_workspace_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic_kernels(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_off_changes_nothing():
    before = _state()
    with deterministic_kernels(False):
        assert _state() == before


def test_the_cli_runs_the_command_inside_it(tmp_path, monkeypatch):
    """`starloop eval deterministic=true` runs its work with deterministic kernels on; without it, off."""
    from cli_helpers import run_cli

    from starloop import evaluate

    seen = []
    monkeypatch.setattr(evaluate, "run_eval", lambda cfg: seen.append(torch.are_deterministic_algorithms_enabled()))
    for flag in ("deterministic=true", "deterministic=false"):
        out = tmp_path / flag.replace("=", "-")
        code, _, err = run_cli(["eval", "model=tiny-random", "data.limit=2", flag, f"out={out}"])
        assert code == 0, err
    assert seen == [True, False]
    assert not torch.are_deterministic_algorithms_enabled()
