"""The score stage's reward columns on the tiny model: D(y|x) of expected_likelihood reaches the reward,
hinted samples stay out of quiet_star's baseline, soft-label files are checked, and scoring forwards keep
to their token budget without changing a score."""

from __future__ import annotations

import math

import pytest
import torch

from starloop import logprobs
from starloop.errors import DataError
from starloop.records import Sample
from starloop.scoring import add_reward_columns, read_soft_labels


def _samples(questions, hinted_last=False):
    out = []
    for q in questions[:2]:
        for j in range(3):
            out.append(Sample(question_id=q.id, sample_index=j, prompt=f"Q: {q.question}\n",
                              rationale=f"Thinking {j} about it. The answer is ({'ABCD'[j]}).", correct=j == q.answer,
                              status="correct" if j == q.answer else "wrong", language="en",
                              hinted=hinted_last and j == 2))
    return out


def _letters(s):
    return {kv.split(":")[0]: float(kv.split(":")[1]) for kv in s.extra["answer_dist"].split()}


def test_expected_likelihood_uses_the_configured_label_distribution(tiny, questions):
    model, tok = tiny
    by_id = {q.id: q for q in questions}
    gold = _samples(questions)
    add_reward_columns(model, tok, gold, by_id, label_dist="gold")
    from starloop.config import CHOICES
    from starloop.rewards import REWARDS

    assert all(set(REWARDS) <= set(s.extra) for s in gold)  # every registered reward is a column
    assert CHOICES["trainer.reward"] == ("correct", *REWARDS)
    assert all(s.extra["expected_likelihood"] == pytest.approx(s.extra["answer_logprob"], abs=1e-5) for s in gold)
    smooth = _samples(questions)
    add_reward_columns(model, tok, smooth, by_id, label_dist="smoothed", label_smoothing=0.3)
    for s in smooth:  # log(0.7 p(gold) + 0.1 sum of the others), from the saved per-letter log-probs
        lp = _letters(s)
        g = "ABCD"[by_id[s.question_id].answer]
        want = math.log(sum((0.7 if k == g else 0.1) * math.exp(v) for k, v in lp.items()))
        assert s.extra["expected_likelihood"] == pytest.approx(want, abs=1e-3)
        assert s.extra["expected_likelihood"] != pytest.approx(s.extra["answer_logprob"], abs=1e-3)
    model_d = _samples(questions)
    add_reward_columns(model, tok, model_d, by_id, label_dist="model")
    assert any(abs(a.extra["expected_likelihood"] - b.extra["expected_likelihood"]) > 1e-4
               for a, b in zip(model_d, smooth))
    soft = {q.id: [0.25, 0.25, 0.25, 0.25] for q in questions}
    uni = _samples(questions)
    add_reward_columns(model, tok, uni, by_id, label_dist="file", soft_labels=soft)
    for s in uni:  # uniform D: the log of the mean letter probability
        want = math.log(sum(math.exp(v) for v in _letters(s).values()) / 4)
        assert s.extra["expected_likelihood"] == pytest.approx(want, abs=1e-3)


def test_hinted_samples_stay_out_of_the_quiet_star_baseline(tiny, questions):
    model, tok = tiny
    by_id = {q.id: q for q in questions}
    smp = _samples(questions, hinted_last=True)
    add_reward_columns(model, tok, smp, by_id)
    for i in (0, 3):  # each question: samples i, i+1 on-policy, i+2 hinted
        a, b, h = (smp[i + j].extra["answer_logprob"] for j in range(3))
        base = (a + b) / 2
        got = [smp[i + j].extra["quiet_star"] for j in range(3)]
        assert got == pytest.approx([a - base, b - base, h - base], abs=1e-5)


def test_soft_label_file_errors_name_row_and_column(tmp_path):
    p = tmp_path / "soft.csv"
    p.write_text("question_id,A,B,C,D\nq1,0.5,0.5,0,0\nq2,0.5,abc,0,0\n")
    with pytest.raises(DataError, match=r"row 3, column B: 'abc'"):
        read_soft_labels(p)
    p.write_text("question_id,A,B\nq1,0.5,0.4\n")
    with pytest.raises(DataError, match=r"row 2: .*sums to 0.9000"):
        read_soft_labels(p)
    p.write_text("question_id,A,B\nq1,nan,1\n")
    with pytest.raises(DataError, match="row 2, column A"):
        read_soft_labels(p)
    p.write_text("question_id,A,B\nq1,0.25,0.75\n")
    assert read_soft_labels(p) == {"q1": [0.25, 0.75]}
    with pytest.raises(DataError, match="no such file"):
        read_soft_labels(tmp_path / "none.csv")


def _forward_shapes(model):
    """[rows, padded length] of every forward, read at the input embedding (every path runs it)."""
    seen = []
    embed = model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    return handle, seen


def _long_prompts(questions):
    """Prompts of three lengths, so that batches are padded."""
    return [f"Q: {q.question} " + " ".join(f"word{j}" for j in range(i % 3 * 4)) + "\n"
            for i, q in enumerate(questions)]


def test_reward_scoring_forwards_stay_within_the_token_budget(tiny, questions, monkeypatch):
    model, tok = tiny
    by_id = {q.id: q for q in questions}
    samples = [Sample(question_id=q.id, sample_index=j, prompt=p, rationale=f"Thinking {j} it over, slowly.")
               for q, p in zip(questions, _long_prompts(questions)) for j in range(2)]
    monkeypatch.setattr(logprobs, "SCORING_TOKENS", 64, raising=False)
    handle, seen = _forward_shapes(model)
    try:
        add_reward_columns(model, tok, samples, by_id, batch_size=1024)
    finally:
        handle.remove()
    assert len(seen) > 2 and max(rows for rows, _ in seen) > 1  # batched, and more than one batch
    assert all(rows * width <= 64 or rows == 1 for rows, width in seen), seen
    assert sum(rows for rows, _ in seen) == (len(samples) + len(questions)) * 4  # every row scored once


def test_budgeted_scores_equal_row_at_a_time_scores(tiny, questions, monkeypatch):
    model, tok = tiny
    ctx = [p + "Thinking it over." for p in _long_prompts(questions)]
    one = logprobs.answer_letter_logprobs(model, tok, ctx, 4, "\nThe answer is (", letter_format="{})",
                                          batch_size=1)
    monkeypatch.setattr(logprobs, "SCORING_TOKENS", 64, raising=False)
    handle, seen = _forward_shapes(model)
    try:
        got = logprobs.answer_letter_logprobs(model, tok, ctx, 4, "\nThe answer is (", letter_format="{})",
                                              batch_size=1024)
    finally:
        handle.remove()
    assert max(rows for rows, _ in seen) > 1 and all(r * w <= 64 or r == 1 for r, w in seen)
    # Not bitwise: a padded row's float32 sums differ in the last bits from the unpadded row's (main's
    # row-capped batches do too), so the same tolerance as the padding tests of test_logprobs.
    torch.testing.assert_close(got, one, atol=1e-5, rtol=0)


def test_letter_logit_forwards_stay_within_the_token_budget(tiny, questions, monkeypatch):
    from starloop.evaluate import letter_logit_samples

    model, tok = tiny
    expected = letter_logit_samples(model, tok, questions, batch_size=1, progress=False)
    longest = max(len(tok(s.prompt)["input_ids"]) for s in expected)
    monkeypatch.setattr(logprobs, "SCORING_TOKENS", 2 * longest + 1, raising=False)  # two rows a forward
    handle, seen = _forward_shapes(model)
    try:
        got = letter_logit_samples(model, tok, questions, batch_size=1024, progress=False)
    finally:
        handle.remove()
    assert [rows for rows, _ in seen] == [2, 2, 2]
    assert [s.extracted for s in got] == [s.extracted for s in expected]
    for a, b in zip(got, expected):
        assert a.extra == pytest.approx(b.extra, abs=1e-5)


def test_cached_memory_released_once_per_scoring_pass_and_only_on_cuda(tiny, questions, monkeypatch):
    from types import SimpleNamespace

    from starloop import oom, scoring

    model, tok = tiny
    passes = []
    monkeypatch.setattr(scoring, "release_cached_memory", passes.append)
    add_reward_columns(model, tok, _samples(questions), {q.id: q for q in questions}, batch_size=2)
    assert passes == [model]  # once at the end, not per batch
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    oom.release_cached_memory(model)
    assert emptied == []  # a CPU model: nothing to release
    on_cuda = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]))
    oom.release_cached_memory(on_cuda)
    assert emptied == [1]
