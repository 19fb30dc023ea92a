"""Training-data builders and metrics on hand-made samples."""

from __future__ import annotations

import math

from starloop.build import preference_pairs, reward_examples, sft_examples
from starloop.metrics import summarize, wilson_interval
from starloop.records import Sample


def s(qid, i, text, correct, status=None, hinted=False, degenerate="", **extra):
    return Sample(question_id=qid, sample_index=i, prompt=f"P{qid}", rationale=text, correct=correct,
                  status=status or ("correct" if correct else "wrong"), hinted=hinted, degenerate=degenerate,
                  extra=extra)


SAMPLES = [
    s("a", 0, "r1 (A)", True), s("a", 1, "r1  (A)", True), s("a", 2, "r2", False), s("a", 3, "r3", False, "no_answer"),
    s("b", 0, "x", False), s("b", 1, "y", False),
    s("c", 0, "hint-rationale", True, hinted=True), s("c", 1, "loop loop", True, degenerate="repetition"),
]


def test_sft_keeps_correct_dedupes_caps_and_filters():
    ex = sft_examples(SAMPLES)
    assert [(e.group, e.completion) for e in ex] == [("a", "r1 (A)"), ("c", "hint-rationale"), ("c", "loop loop")]
    assert len(sft_examples(SAMPLES, dedupe=False)) == 4
    assert [e.completion for e in sft_examples(SAMPLES, max_per_question=1, dedupe=False)] == \
        ["r1 (A)", "hint-rationale"]
    assert [e.completion for e in sft_examples(SAMPLES, filter_degenerate=True)] == ["r1 (A)", "hint-rationale"]


def test_preference_pairs_policies():
    allp = preference_pairs(SAMPLES, pairing="all")
    # a: one unique chosen (r1 twice, whitespace-deduplicated) x two rejected; b: no chosen; c: no rejected
    assert [(p.chosen, p.rejected) for p in allp] == [("r1 (A)", "r2"), ("r1 (A)", "r3")]
    assert len(preference_pairs(SAMPLES, pairing="one")) == 1
    assert len(preference_pairs(SAMPLES, pairing="n", per_question=5)) == 2


def test_reward_examples_penalty_and_hint_exclusion():
    smp = [s("q", 0, "a", True, quiet_star=0.5), s("q", 1, "b", False, degenerate="repetition", quiet_star=-0.5),
           s("q", 2, "c", True, hinted=True, quiet_star=9.0)]
    ex = reward_examples(smp, "quiet_star", degenerate_penalty=1.0)
    assert [(e.completion, e.reward) for e in ex] == [("a", 0.5), ("b", -1.5)]
    assert [e.reward for e in reward_examples(smp, "correct")] == [1.0, 0.0]


def test_wilson_interval_hand_computed():
    # k=8, n=10: p=0.8, z=1.96: centre=(0.8+0.19208)/1.38415=0.71674, half=1.96*sqrt(0.016+0.00096)/1.38415=0.18436
    lo, hi = wilson_interval(8, 10)
    assert math.isclose(lo, 0.4902, abs_tol=1e-3) and math.isclose(hi, 0.9433, abs_tol=1e-3)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_summarize_counts():
    m = summarize(SAMPLES[:4])
    assert m["n"] == 4 and m["accuracy"] == 0.5 and m["parse_rate"] == 0.75


def test_min_rationale_words_drops_bare_guesses_from_sft_and_chosen():
    from starloop.build import reasoning_words

    bare = "The answer is (B).\n"
    reasoned = "Mars is the fourth planet.\nIt is red.\n\nThe answer is (B).\n"
    assert reasoning_words(bare) == 0 and reasoning_words(reasoned) == 8 and reasoning_words("") == 0
    smp = [s("q", 0, bare, True), s("q", 1, reasoned, True), s("q", 2, "Guess.\nThe answer is (C).", False)]
    assert [e.completion for e in sft_examples(smp)] == [bare, reasoned]
    assert [e.completion for e in sft_examples(smp, min_rationale_words=8)] == [reasoned]
    assert sft_examples(smp, min_rationale_words=9) == []
    assert [p.chosen for p in preference_pairs(smp, min_rationale_words=5)] == [reasoned]
    # a short wrong answer stays a rejected example
    assert [p.rejected for p in preference_pairs(smp, min_rationale_words=5)] == ["Guess.\nThe answer is (C)."]
