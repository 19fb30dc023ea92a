"""The training figures each validation line carries (stages.validation._training_summary), on files written
by hand: how many questions were solved with and without a rationalization hint, and how many hinted samples
reached the gold answer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from starloop.config import Config
from starloop.records import Sample, write_samples
from starloop.stages.validation import _training_summary


def test_solved_with_and_without_a_hint_and_the_rationalized_count(tmp_path):
    cfg = Config()
    cfg.trainer.strategy = "sft"
    it = tmp_path / "iter_1"
    (it / "train").mkdir(parents=True)

    def s(q, i, correct, hinted=False):
        return Sample(question_id=q, sample_index=i, prompt="p", rationale="r", correct=correct, hinted=hinted,
                      status="correct" if correct else "wrong", gold="A", extracted="A" if correct else "B")

    # q1 solved unhinted; q2 solved only with a hint; q3 hinted but still wrong; q4 unsolved, no hint drawn.
    write_samples(it / "generations.csv", [s("q1", 0, True), s("q1", 1, False), s("q2", 0, False),
                                           s("q2", 1, True, hinted=True), s("q3", 0, False),
                                           s("q3", 1, False, hinted=True), s("q4", 0, False)])
    (it / "train" / "DONE").write_text(json.dumps({"loss": 0.5}))
    (it / "train_data.jsonl").write_text("".join(json.dumps({"prompt": "p", "completion": c, "group": "q"}) + "\n"
                                                 for c in ("a", "b")))
    run = SimpleNamespace(cfg=cfg, iter=lambda k: tmp_path / f"iter_{k}",
                          questions={"train": ["q1", "q2", "q3", "q4", "q5"]})
    got = _training_summary(run, 1)
    assert got["kept"] == 2
    assert got["kept_fraction"] == 2 / 5  # q1, q2 (the hint counts)
    assert got["solved_fraction"] == 1 / 5  # q1 only
    assert got["rationalized"] == 1  # q2's hinted sample; q3's stayed wrong
    assert got["train_accuracy"] == 1 / 5  # the unhinted samples: 1 of 5 correct
    assert "positive_weight_on_wrong" not in got  # sft trains on correct rationales only

    cfg.trainer.strategy, cfg.trainer.reward = "weighted_sft", "correct"
    rows = [("q1", 1.0, True), ("q1", 0.0, False), ("q2", 0.0, False), ("q2", 0.0, False)]
    (it / "train_data.jsonl").write_text("".join(json.dumps({"prompt": "p", "completion": "c", "group": q,
                                                             "reward": r, "correct": ok}) + "\n" for q, r, ok in rows))
    assert _training_summary(run, 1)["positive_weight_on_wrong"] == pytest.approx((1 / (2.718281828 + 1) + 1) / 2)
    # A file written before correctness was recorded: the figure is left out, the rest stays.
    (it / "train_data.jsonl").write_text("".join(json.dumps({"prompt": "p", "completion": "c", "group": q,
                                                             "reward": r}) + "\n" for q, r, _ in rows))
    got = _training_summary(run, 1)
    assert "positive_weight_on_wrong" not in got and got["kept"] == 4


def _rewarded(rows):
    from starloop.build import Example

    return [Example("p", "c", q, r, correct=ok) for q, r, ok in rows]


def test_positive_weight_on_wrong_by_hand():
    from math import e

    from starloop import strategies

    cfg = Config()
    # q1: one right (reward 1) and one wrong (0); q2: both wrong.
    data = _rewarded([("q1", 1.0, True), ("q1", 0.0, False), ("q2", 0.0, False), ("q2", 0.0, False)])
    # weighted_sft, lambda 1: q1's weights e/(e+1) and 1/(e+1), q2's 1/2 and 1/2; wrong: 1/(e+1) + 1 of 2.
    got = strategies.get("weighted_sft").positive_weight_on_wrong(data, cfg.trainer)
    assert got == pytest.approx((1 / (e + 1) + 1) / 2)
    # reinforce, rloo: q1's advantages +1 and -1, q2's 0 and 0: all positive mass on the right sample.
    assert strategies.get("reinforce").positive_weight_on_wrong(data, cfg.trainer) == 0.0
    # A likelihood reward can rank a wrong rationale first: q1's wrong sample -0.5 over its right one -2.0 (rloo:
    # +1.5 and -1.5); q2's wrong samples -1.0 and -3.0 (+2 and -2; both wrong);
    # q3 adds +1 on a right one: 3.5 of 4.5 on wrong answers.
    likely = _rewarded([("q1", -2.0, True), ("q1", -0.5, False), ("q2", -1.0, False), ("q2", -3.0, False),
                        ("q3", 0.0, True), ("q3", -1.0, False)])
    assert strategies.get("reinforce").positive_weight_on_wrong(likely, cfg.trainer) == pytest.approx(3.5 / 4.5)
    # grpo: centred and divided by the group's standard deviation, so each group's positive mass is the same
    # (std of two values a, b: |a - b| / sqrt(2) unbiased -> +-1/sqrt(2)): two of three groups favour a wrong one.
    assert strategies.get("grpo").positive_weight_on_wrong(likely, cfg.trainer) == pytest.approx(2 / 3)
    # No positive mass at all (every reward equal): no figure rather than 0/0.
    flat = _rewarded([("q1", 0.0, True), ("q1", 0.0, False)])
    assert strategies.get("reinforce").positive_weight_on_wrong(flat, cfg.trainer) is None
    # Strategies that train on correct rationales or pairs: no figure.
    assert strategies.get("sft").positive_weight_on_wrong(data, cfg.trainer) is None
    assert strategies.get("dpo").positive_weight_on_wrong(data, cfg.trainer) is None
    # Without correctness recorded (data written before the field existed): no figure.
    assert strategies.get("weighted_sft").positive_weight_on_wrong(_rewarded([("q1", 1.0, None)]), cfg.trainer) is None


def test_reward_examples_record_correctness():
    from starloop.build import reward_examples

    ex = reward_examples([Sample(question_id="q", sample_index=0, prompt="p", rationale="r", correct=True),
                          Sample(question_id="q", sample_index=1, prompt="p", rationale="r", correct=False)],
                         "correct")
    assert [x.correct for x in ex] == [True, False]
