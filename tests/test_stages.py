"""`starloop stage`: one stage of an existing run from its files; what it refuses, in one line, exit 2.

(That the stages run one by one write the same files as the loop: tests/test_expected_run.py.)"""

from __future__ import annotations

import pytest
from cli_helpers import run_cli


@pytest.fixture
def claimed(tmp_path):
    """A run folder as `starloop train` leaves it once claimed, before any stage has run."""
    from starloop.cli import compose
    from starloop.config import to_dict
    from starloop.runstate import RunLock, claim
    from starloop.stages.sampling import run_questions

    out = tmp_path / "run"
    cfg = compose(["model=tiny-random", "data.limit=4", "trainer.val_limit=2", "trainer.iterations=2",
                   f"out={out}"])
    with RunLock(out):
        claim(out, "train", to_dict(cfg), run_questions(cfg))
    return out


@pytest.mark.parametrize(("stage", "k", "missing", "writer"), [
    ("train", 1, "iter_1/train_data.jsonl", "build out={} iteration=1"),
    ("score", 2, "iter_2/sample/DONE", "sample out={} iteration=2"),
    ("sample", 2, "iter_1/train/DONE", "train out={} iteration=1"),
    ("validate", 1, "iter_1/train/DONE", "train out={} iteration=1"),
])
def test_a_missing_input_is_one_line_naming_it_and_the_stage_that_writes_it(claimed, stage, k, missing, writer):
    code, _, err = run_cli(["stage", stage, f"out={claimed}", f"iteration={k}"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"{claimed / missing}: missing" in lines[0] and f"starloop stage {writer.format(claimed)}" in lines[0]
    assert not (claimed / f"iter_{k}").exists()  # nothing half-written


def test_a_folder_without_a_run_is_refused(tmp_path):
    code, _, err = run_cli(["stage", "build", f"out={tmp_path}", "iteration=1"])
    assert code == 2 and f"{tmp_path / 'config.yaml'}: missing" in err


@pytest.mark.parametrize(("argv", "key"), [
    (["stage", "polish", "iteration=1"], "stage"),
    (["stage", "build", "iteration=3"], "iteration"),  # the run has 2 iterations
    (["stage", "sample", "iteration=0"], "iteration"),  # iteration 0 only validates
    (["stage", "build"], "iteration"),
    (["stage", "build", "iteration=1", "trainer.lr=0.5"], "trainer.lr"),  # changes results: refused
])
def test_bad_arguments_are_one_line_naming_the_key(claimed, argv, key):
    code, _, err = run_cli([*argv, f"out={claimed}"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and key in err, err


def test_stage_help_names_the_stages():
    code, out, _ = run_cli(["stage", "--help"])
    assert code == 0 and all(s in out for s in ("sample", "score", "build", "train", "validate", "iteration="))
