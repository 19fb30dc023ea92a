"""Sampling parts: sized to fill the generation batch, and reused on resume whatever size wrote them."""

from __future__ import annotations

import pytest

from starloop import evaluate
from starloop.config import Config, ModelConfig
from starloop.policy import Policy
from starloop.records import Question, read_samples
from starloop.stages import sampling


def test_part_questions_fills_every_batch():
    assert sampling.part_questions(batch_size=16, k=4) == sampling.PART_QUESTIONS  # small batches: the floor
    assert sampling.part_questions(batch_size=256, k=1) == 256
    assert sampling.part_questions(batch_size=256, k=4) == 64
    assert sampling.part_questions(batch_size=256, k=3) == 86  # rounded up: no half-empty last batch
    assert sampling.part_questions(batch_size=256, k=4, processes=2) == 128


@pytest.fixture
def policy():
    return Policy(Config(model=ModelConfig(name="tiny-random")))


def _questions(n):
    return [Question(id=f"q/{i:03d}", subject="s", language="en", question=f"Question {i}?",
                     choices=("a", "b", "c", "d"), answer=i % 4) for i in range(n)]


def _sample(policy, folder, questions, batch_size, calls):
    real = evaluate.sample_questions

    def counting(sampler, tok, qs, *args, **kwargs):
        calls.append(len(qs))
        return real(sampler, tok, qs, *args, **kwargs)

    evaluate.sample_questions = counting
    try:
        return sampling.sample_to_folder(policy, policy.cfg, questions, folder, k=2, seed_parts=(0, "t"), temperature=1.0,
                                             top_p=1.0, max_new_tokens=4, batch_size=batch_size, desc="t")
    finally:
        evaluate.sample_questions = real


def test_resume_reuses_parts_written_with_another_batch_size(policy, tmp_path, monkeypatch):
    qs = _questions(40)
    calls: list[int] = []
    first = _sample(policy, tmp_path / "ref", qs, batch_size=8, calls=calls)
    assert calls == [32, 8]  # parts of PART_QUESTIONS questions (8 // 2 samples is below the floor)
    assert [(s.question_id, s.sample_index) for s in first] == [(q.id, j) for q in qs for j in range(2)]
    assert not list((tmp_path / "ref").glob("part_*.csv"))  # merged into generations.csv, then removed

    # A run killed after its first part: the part is saved, nothing else. Resume with a larger batch.
    folder = tmp_path / "a"
    monkeypatch.setattr(sampling, "write_samples", _fail_after_first_part(sampling.write_samples))
    with pytest.raises(KeyboardInterrupt):
        _sample(policy, folder, qs, batch_size=8, calls=[])
    monkeypatch.undo()
    assert [p.name for p in folder.glob("*.csv")] == ["part_00000.csv"]
    calls.clear()
    again = _sample(policy, folder, qs, batch_size=128, calls=calls)
    assert calls == [8]  # only the 8 questions no saved part holds
    assert [(s.question_id, s.sample_index, s.rationale) for s in again] == \
        [(s.question_id, s.sample_index, s.rationale) for s in first]
    assert read_samples(folder / "generations.csv") == again


def _fail_after_first_part(write):
    def write_then_stop(path, samples):
        write(path, samples)
        raise KeyboardInterrupt  # as a kill right after the first part is on disk

    return write_then_stop


def test_duplicate_question_ids_are_refused(policy, tmp_path):
    qs = _questions(3)
    with pytest.raises(Exception, match="duplicate question ids"):
        _sample(policy, tmp_path / "d", qs + qs[:1], batch_size=8, calls=[])
