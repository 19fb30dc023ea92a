"""prompt.few_shot reaches every generation (eval, the loop's sampling and its validation); the saved
training prompt stays zero-shot and hint-free."""

from __future__ import annotations

import pytest

from starloop import evaluate
from starloop.config import Config, DataConfig, EvalConfig, ModelConfig, PromptConfig, TrainerConfig
from starloop.sampling import Generation


class Recorder:
    """A sampler that records its prompts and answers "The answer is (A)." at once."""

    def __init__(self):
        self.prompts: list[str] = []

    def generate(self, prompts, seeds, *, max_new_tokens, temperature=0.0, top_p=1.0, progress=None):
        self.prompts += list(prompts)
        if progress:
            progress(len(prompts))
        return [Generation("Reasoning. The answer is (A).", 6, False) for _ in prompts]


def test_sample_questions_shows_few_shot_and_saves_zero_shot(tiny, questions):
    _, tok = tiny
    rec = Recorder()
    shots = {"en": [questions[5]]}
    out = evaluate.sample_questions(rec, tok, questions[:2], PromptConfig(), k=2, seed_parts=(0,),
                                    max_new_tokens=8, temperature=0.7, top_p=1.0, few_shot=shots, progress=False)
    assert len(rec.prompts) == 4 and all(questions[5].question in p for p in rec.prompts)
    assert all(questions[5].question not in s.prompt for s in out)
    assert out[0].prompt == evaluate.chat_prompts(tok, questions[:1], PromptConfig())[0]


def test_few_shot_examples_are_per_language():
    cfg = Config(data=DataConfig(name="mmlu-afr", language="all", limit=20), prompt=PromptConfig(few_shot=2))
    shots = evaluate.few_shot_examples(cfg)
    assert len(shots) == 12 and all(len(v) == 2 and {q.language for q in v} == {lang} for lang, v in shots.items())


def test_train_loop_samples_and_validates_with_few_shot(tmp_path, monkeypatch):
    """Bug: prompt.few_shot never reached the loop's sampling or its validation."""
    from starloop import loop
    from starloop.stages import sampling

    rec = Recorder()
    monkeypatch.setattr(sampling, "make_sampler", lambda *a, **k: rec)
    cfg = Config(model=ModelConfig(name="tiny-random"), data=DataConfig(limit=6), prompt=PromptConfig(few_shot=1),
                 eval=EvalConfig(max_new_tokens=8),
                 trainer=TrainerConfig(iterations=1, samples_per_question=2, max_new_tokens=8, train_limit=4,
                                       val_limit=3, lr=1e-3),
                 out=str(tmp_path / "run"), progress=False)
    shot = evaluate.few_shot_examples(cfg)["en"][0].question
    loop.run_train(cfg)
    assert len(rec.prompts) == 3 + 4 * 2 + 3  # val 0, train sampling, val 1
    assert all(shot in p for p in rec.prompts)


def test_model_max_length_is_gone():
    """It was documented and never read; trainer.max_seq_len is the one training length."""
    with pytest.raises(TypeError):
        ModelConfig(max_length=100)  # type: ignore[call-arg]
