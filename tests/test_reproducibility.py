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


def test_a_state_that_was_already_on_comes_back(monkeypatch):
    """Strict deterministic mode set by the caller (warn_only=False) is what remains after the block."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        with deterministic_kernels(True):
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_training_attention_is_the_math_kernel_under_deterministic_mode():
    """The memory-efficient kernel's backward (a padded batch's) is not deterministic in warn-only mode."""
    from starloop.train import attention_kernels

    cuda = torch.backends.cuda
    with attention_kernels():
        assert cuda.mem_efficient_sdp_enabled() and cuda.flash_sdp_enabled() and cuda.math_sdp_enabled()
    with deterministic_kernels(True), attention_kernels():
        assert cuda.math_sdp_enabled()
        assert not (cuda.mem_efficient_sdp_enabled() or cuda.flash_sdp_enabled() or cuda.cudnn_sdp_enabled())


def test_runs_saved_before_the_key_existed_resume_with_it(tmp_path):
    """A config.yaml without `deterministic` (every run before it) is not refused; switching it is allowed."""
    import yaml

    from starloop.runstate import check_or_save_config

    old = {"seed": 0, "trainer": {"lr": 1e-4}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_or_save_config(tmp_path, {**old, "deterministic": True}, save=False, has_outputs=True)
    check_or_save_config(tmp_path, {**old, "deterministic": False}, save=False, has_outputs=True)


def test_starloop_stage_runs_inside_it(tmp_path, monkeypatch):
    """`starloop stage` reruns one stage with the saved config's `deterministic` (or an override of it)."""
    import yaml

    from starloop import loop
    from starloop.config import Config, to_dict
    from starloop.stages import command

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**to_dict(Config()), "deterministic": True}))
    seen = []
    monkeypatch.setattr(loop, "run_stage", lambda cfg, name, k: seen.append(torch.are_deterministic_algorithms_enabled()))
    command.main(["validate", f"out={tmp_path}", "iteration=0"])
    command.main(["validate", f"out={tmp_path}", "iteration=0", "deterministic=false"])
    assert seen == [True, False]


def test_the_workspace_is_set_before_any_job_runs(tmp_path, monkeypatch):
    """cuBLAS reads it once per process: a sweep's first job may not be the one asking for determinism."""
    from cli_helpers import run_cli

    from starloop import cli

    monkeypatch.setattr(cli, "_run_hydra", lambda *a, **k: None)  # check the inputs, run no job
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    code, _, err = run_cli(["eval", "-m", "model=tiny-random", "data.limit=2", "deterministic=false",
                            f"out={tmp_path / 'a'}"])
    assert code == 0, err
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    code, _, err = run_cli(["eval", "-m", "model=tiny-random", "data.limit=2", "deterministic=false,true",
                            f"out={tmp_path / 'b'}"])
    assert code == 0, err
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
