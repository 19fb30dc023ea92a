"""Training-data builders and metrics on hand-made samples."""

from __future__ import annotations

import math

import pytest

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


def test_dpo_pairing_n_uses_every_distinct_pair_before_any_repeat():
    """Bug: 2 chosen x 3 rejected with 6 pairs asked gave 6 pairs of which 2 were distinct (one rejected
    never used). Now all 6 distinct pairs, each chosen 3 times, each rejected twice."""
    from starloop.build import spread_pairs

    smp = [s("q", i, f"good {i} (A)", True) for i in range(2)] + [s("q", 2 + i, f"bad {i}", False) for i in range(3)]
    pairs = preference_pairs(smp, pairing="n", per_question=6)
    got = [(p.chosen, p.rejected) for p in pairs]
    assert len(got) == 6 and len(set(got)) == 6
    assert spread_pairs(2, 3, 3) in ([(0, 0), (1, 1), (0, 2)], [(0, 0), (1, 1), (1, 2)])  # all 3 rejected used
    assert len(set(spread_pairs(2, 3, 3))) == 3 and {r for _, r in spread_pairs(2, 3, 3)} == {0, 1, 2}
    assert len(spread_pairs(2, 3, 10)) == 6  # never a repeated pair
    assert sorted(spread_pairs(3, 2, 6)) == [(c, r) for c in range(3) for r in range(2)]


def test_truncated_samples_are_not_imitated_by_default():
    """Bug: a sample cut by max_new_tokens was trained with an appended EOS. Now it is left out of the SFT
    set and dpo's chosen side (keep_truncated=true keeps it, marked eos=False); a cut wrong answer is still a
    rejected example (without EOS); reward strategies keep it without EOS."""
    cut_good = Sample(question_id="q", sample_index=0, prompt="P", rationale="long (A)", correct=True,
                      status="correct", truncated=True)
    good = Sample(question_id="q", sample_index=1, prompt="P", rationale="short (A)", correct=True, status="correct")
    cut_bad = Sample(question_id="q", sample_index=2, prompt="P", rationale="loop loop", correct=False,
                     status="no_answer", truncated=True)
    assert [e.completion for e in sft_examples([cut_good, good])] == ["short (A)"]
    kept = sft_examples([cut_good, good], keep_truncated=True)
    assert [(e.completion, e.eos) for e in kept] == [("long (A)", False), ("short (A)", True)]
    pairs = preference_pairs([cut_good, good, cut_bad])
    assert [(p.chosen, p.chosen_eos, p.rejected, p.rejected_eos) for p in pairs] == \
        [("short (A)", True, "loop loop", False)]
    assert [e.eos for e in reward_examples([cut_good, good], "correct")] == [False, True]


def test_require_gain_keeps_rationales_that_beat_no_rationale():
    smp = [s("q", 0, "helps (A)", True, gain=0.4), s("q", 1, "no help (A)", True, gain=-0.1),
           s("q", 2, "wrong", False, gain=0.2)]
    assert [e.completion for e in sft_examples(smp, require_gain=True)] == ["helps (A)"]
    assert [e.completion for e in reward_examples(smp, "correct", require_gain=True)] == ["helps (A)", "wrong"]
    assert [p.chosen for p in preference_pairs(smp, require_gain=True)] == ["helps (A)"]


def test_mcnemar_by_hand():
    from starloop.metrics import mcnemar

    before = {f"q{i}": i < 5 for i in range(10)}  # q0-q4 right
    after = {f"q{i}": i in (0, 5, 6, 7, 8, 9) for i in range(10)}  # lost q1-q4 (b = 4), gained q5-q9 (c = 5)
    r = mcnemar(before, after)
    assert (r["n"], r["b"], r["c"]) == (10, 4, 5)
    # 2 * P(Bin(9, 1/2) <= 4) = 2 * (1 + 9 + 36 + 84 + 126) / 512 = 1.0
    assert r["p"] == 1.0
    r = mcnemar({"a": False, "b": False, "c": False, "d": True}, {"a": True, "b": True, "c": True, "d": True, "e": 1})
    # b = 0, c = 3: 2 * (1/8) = 0.25; "e" is in one evaluation only
    assert (r["n"], r["b"], r["c"], r["p"]) == (4, 0, 3, 0.25)


def test_clustered_interval_by_hand():
    from starloop.metrics import clustered_interval

    # two languages of 4 questions: en 4/4 right, zu 0/4. p = 0.5; residuals per cluster +2, -2;
    # var = 2/1 * (4 + 4) / 64 = 0.25, se 0.5, t(1) = 12.706 -> the whole [0, 1]
    assert clustered_interval([1, 1, 1, 1, 0, 0, 0, 0], ["en"] * 4 + ["zu"] * 4) == (0.0, 1.0)
    # three languages alike (2 of 4 right each): residuals 0 -> zero width
    assert clustered_interval([1, 1, 0, 0] * 3, ["a"] * 4 + ["b"] * 4 + ["c"] * 4) == (0.5, 0.5)
    # six languages of 4 questions, right 3, 1, 2, 2, 3, 1: p = .5, residuals +1 -1 0 0 +1 -1;
    # var = 6/5 * 4 / 24^2, half = t(5) * sqrt(var) = 2.571 * 0.0913 = 0.2347
    right = [3, 1, 2, 2, 3, 1]
    ys = [int(j < r) for r in right for j in range(4)]
    lo, hi = clustered_interval(ys, [g for g in "abcdef" for _ in range(4)])
    half = 2.571 * math.sqrt(6 / 5 * 4 / 24**2)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert clustered_interval([1, 0], ["en", "en"]) is None


def test_mcnemar_with_numpy_booleans_matches_python_booleans():
    """Correctness read from arrays (numpy bools) must give the same test: the counts once stayed numpy
    integers, and 2**n overflowed for n > 62 discordant questions, giving p = 1 for any result."""
    import numpy as np

    from starloop.metrics import mcnemar

    before = {f"q{i}": i < 80 for i in range(200)}  # q0-q79 right
    after = {f"q{i}": 70 <= i < 160 for i in range(200)}  # lost q0-q69 (b = 70), gained q80-q159 (c = 80)
    want = mcnemar(before, after)
    got = mcnemar({k: np.bool_(v) for k, v in before.items()}, {k: np.bool_(v) for k, v in after.items()})
    assert (want["b"], want["c"]) == (70, 80) and 0.4 < want["p"] < 0.5  # 2 P(Bin(150, 1/2) <= 70) = 0.46
    assert got == want and all(type(got[k]) is int for k in ("n", "b", "c"))
