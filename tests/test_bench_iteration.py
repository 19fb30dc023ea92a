"""The whole-iteration benchmark (bench/iteration.py): its stage split, and the plain generate + TRL SFTTrainer
reference run end to end on the tiny random model, with the same questions, samples and optimizer steps."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("iteration")


@pytest.fixture
def reference(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("iteration_reference")


def test_stage_split_sums_the_stages_of_each_kind(bench, monkeypatch):
    """sample is sampling, score + build is scoring, train is training, validate (both iterations) is
    validation; nothing is counted twice."""
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    timer = bench.StageTimer(cuda=False)

    def spend(seconds):
        def fn():
            clock[0] += seconds
        return fn

    timer.wrap("validate", spend(3.25))()
    timer.wrap("sample", spend(3.0))()
    timer.wrap("score", spend(1.0))()
    timer.wrap("build", spend(0.5))()
    timer.wrap("train", spend(7.0))()
    timer.wrap("validate", spend(2.0))()
    assert timer.stages() == {"sampling": 3.0, "scoring": 1.5, "training": 7.0, "validation": 5.25}
    assert set(bench.WRAPPED) <= set(__import__("starloop.stages", fromlist=["STAGES"]).STAGES)


def test_parts_are_charged_to_the_running_stage(bench):
    """merge / prefill / capture / decode seconds go to the stage running when they happen; rest is the stage
    less its parts; outside any stage nothing is counted."""
    timer = bench.StageTimer(cuda=False)
    timer.add("merge", 9.0)  # no stage running

    def validate():
        timer.add("merge", 0.5)
        timer.add("decode", 2.0)
        timer.add("merge", 0.25)

    timer.wrap("validate", validate)()
    timer.seconds["validate"] = 4.0  # the clock's own seconds replaced by round ones
    assert timer.split("validate", "validation") == {
        "validation_merge_s": 0.75, "validation_prefill_s": 0.0, "validation_capture_s": 0.0,
        "validation_decode_s": 2.0, "validation_rest_s": 1.25}
    assert timer.split("sample", "sampling")["sampling_decode_s"] == 0.0


def test_ratio_is_reference_over_starloop(bench):
    ours = {"sampling_s": 2.0, "scoring_s": 0.5, "training_s": 4.0, "validation_s": 0.0, "stages_s": 6.5,
            "total_s": 10.0}
    ref = {"sampling_s": 10.0, "scoring_s": 0.5, "training_s": 6.0, "validation_s": 3.0, "stages_s": 19.5,
           "total_s": 25.0}
    assert bench.ratios(ref, ours) == {"sampling_s": 5.0, "scoring_s": 1.0, "training_s": 1.5, "validation_s": None,
                                       "stages_s": 3.0, "total_s": 2.5}


def test_train_split_of_a_stage(reference):
    """Stage 10..20 s; the loop 11..19.5 s holding three steps of 2, 1 and 3 s: setup is 1 s before the loop and
    2.5 s inside it before the steps, save the 0.5 s after the loop; the median leaves the first step out."""
    split = reference.train_split((10.0, 20.0), (11.0, 19.5), [2.0, 1.0, 3.0])
    assert split == {"train_setup_s": 3.5, "train_steps_s": 6.0, "train_save_s": 0.5, "train_step_first_s": 2.0,
                     "train_step_median_s": 2.0}
    assert reference.train_split((0.0, 1.0), (0.0, 1.0), [1.0])["train_step_median_s"] == 1.0


def test_memory_during_training_counts_the_retries_of_the_stage(reference):
    before = {"free_gib": 12.5, "reserved_gib": 100.0, "alloc_retries": 3}
    after = {"free_gib": 2.0, "reserved_gib": 110.0, "alloc_retries": 40}
    assert reference.memory_during(before, after) == {"train_free_gib_at_start": 12.5,
                                                      "train_reserved_gib_at_start": 100.0, "train_alloc_retries": 37}
    assert reference.memory_during({}, {}) == {}  # no CUDA


def test_profiled_writes_a_trace_only_when_asked(reference, tmp_path):
    import torch

    with reference.profiled(None, "none"):
        torch.ones(3).sum()
    with reference.profiled(str(tmp_path), "tiny"):
        torch.ones(3).sum()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.json"]


def test_plain_generate_groups_k_samples_per_prompt_in_order(tiny, reference):
    import torch

    model, tok = tiny
    prompts = ["<|im_start|>user\nOne?<|im_end|>\n", "<|im_start|>user\nA longer second question?<|im_end|>\n",
               "<|im_start|>user\nThree<|im_end|>\n"]
    torch.manual_seed(0)
    groups = reference.plain_generate(model, tok, prompts, k=2, max_new_tokens=5, temperature=0.7, top_p=0.95, rows=4)
    assert [len(g) for g in groups] == [2, 2, 2]
    assert all(0 <= g.n_tokens <= 5 and g.truncated == (g.n_tokens == 5) for group in groups for g in group)
    one = reference.plain_generate(model, tok, prompts, k=1, max_new_tokens=5, temperature=0.0, top_p=1.0, rows=1)
    batched = reference.plain_generate(model, tok, prompts, k=1, max_new_tokens=5, temperature=0.0, top_p=1.0, rows=3)
    assert [g[0].text for g in one] == [g[0].text for g in batched]  # greedy: the batch does not change the answer



@pytest.mark.timeout(600)  # about 25 s of CPU time (tiny model, 2 steps); the limit leaves room for a busy machine
def test_reference_pipeline_on_tiny_random(bench, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    from starloop import evaluate

    real = evaluate.generation_to_sample

    def every_rationale_correct(*a, **k):
        """A random model answers nothing: count each rationale as correct and ended, so that both pipelines
        keep all of them and train."""
        s = real(*a, **k)
        s.correct, s.status, s.truncated = True, "correct", False
        return s

    monkeypatch.setattr(evaluate, "generation_to_sample", every_rationale_correct)
    out = tmp_path / "iteration.json"
    result = bench.main(["--model", "tiny-random", "--questions", "2", "--samples", "2", "--new", "4", "--val", "2",
                         "--train-batch", "2", "--sampler", "static", "--reference", "--out", str(out)])
    ours, ref = result["rows"][0], result["reference"]
    assert ours["samples"] == ref["samples"] == 4  # 2 questions x 2 samples
    assert ours["kept"] == ref["kept"] == 4
    assert ours["train_steps"] == ref["train_steps"] == 2  # 4 kept rationales, 2 a step, one pass
    for stage in ("sampling", "scoring", "training", "validation"):
        assert ours[f"{stage}_s"] > 0 and ref[f"{stage}_s"] > 0, stage
    assert ref["final_loss"] is not None and math.isfinite(ref["final_loss"])  # TRL trained
    assert result["ratio"]["stages_s"] == pytest.approx(ref["stages_s"] / ours["stages_s"])
    assert json.loads(out.read_text())["ratio"] == result["ratio"]
    for row in (ours, ref):  # the training stage's split adds up to the stage
        parts = row["train_setup_s"] + row["train_steps_s"] + row["train_save_s"]
        assert parts == pytest.approx(row["training_s"], rel=0.05), row["pipeline"]
        assert row["train_steps_s"] > 0 and 0 < row["train_step_median_s"] <= row["train_steps_s"]
    for kind in ("sampling", "validation"):  # the static sampler's parts, within their stage
        assert ours[f"{kind}_decode_s"] > 0 and ours[f"{kind}_prefill_s"] > 0, kind
        assert ours[f"{kind}_rest_s"] >= 0, kind
    assert ours["validation_merge_s"] > 0  # iteration 1 validates on the adapter, merged
