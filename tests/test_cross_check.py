"""The forced-choice cross-check of extraction and the repetition scoring policy."""

from __future__ import annotations

import json

import pytest
import torch

from starloop.config import PromptConfig
from starloop.degenerate import apply_repetition_policy
from starloop.evaluate import add_forced_choice, generation_to_sample
from starloop.metrics import cross_check, summarize
from starloop.records import Question, Sample
from starloop.sampling import Generation


def _sample(extracted: str, forced: str | None, gold: str = "A", language: str = "en") -> Sample:
    extra = {"forced_choice": forced} if forced else {}
    return Sample(question_id="q", sample_index=0, prompt="p", rationale="r", extracted=extracted, gold=gold,
                  correct=extracted == gold, status="correct" if extracted == gold else "wrong",
                  language=language, extra=extra)


def test_cross_check_rates_hand_computed():
    samples = [_sample("A", "A"), _sample("B", "A"), _sample("C", "C", gold="C"), _sample("", "D")]
    # Read answers (extracted/forced): A/A, B/A, C/C -> 1 of 3 disagree. Forced choice against gold
    # over all four: A=A, A=A, C=C, D!=A -> 3 of 4.
    got = cross_check(samples)
    assert got["cross_check_n"] == 3
    assert got["cross_check_disagreement"] == pytest.approx(1 / 3)
    assert got["forced_choice_accuracy"] == pytest.approx(3 / 4)
    assert cross_check([_sample("A", None)]) == {}
    assert "cross_check_disagreement" not in summarize([_sample("A", None)])
    assert summarize(samples)["cross_check_disagreement"] == pytest.approx(1 / 3)


def test_repetition_policy():
    flags = ["truncated", "repetition"]
    assert apply_repetition_policy("B", flags) == (None, ["truncated", "repetition", "no_answer"])
    assert apply_repetition_policy("B", flags, "extracted") == ("B", flags)
    assert apply_repetition_policy("B", ["truncated"]) == ("B", ["truncated"])
    with pytest.raises(ValueError, match="repetition policy"):
        apply_repetition_policy("B", flags, "maybe")


def test_score_generation_applies_the_policy_and_keeps_the_raw_letter():
    q = Question(id="q", subject="s", language="en", question="?", choices=("w", "x", "y", "z"), answer=1)
    loop = "The answer is (B).\n" * 12
    gen = Generation(text=loop, n_tokens=96, truncated=True)
    scored = generation_to_sample(q, "prompt", gen, 0)
    assert (scored.extracted, scored.status, scored.extra) == ("", "no_answer", {"extracted_raw": "B"})
    assert "no_answer" in scored.degenerate and "repetition" in scored.degenerate
    kept = generation_to_sample(q, "prompt", gen, 0, repetition="extracted")
    assert (kept.extracted, kept.status, kept.extra) == ("B", "correct", {})


class _FavourLetter(torch.nn.Module):
    """The tiny model's output head plus a large bonus on one token: every forced choice must be it."""

    def __init__(self, head: torch.nn.Linear, token_id: int):
        super().__init__()
        self.head, self.token_id = head, token_id

    def forward(self, hidden):
        logits = self.head(hidden)
        logits[..., self.token_id] += 50.0
        return logits


@pytest.mark.parametrize("letter", ["A", "C"])
def test_forced_choice_on_the_tiny_model_follows_the_model(letter):
    from starloop.config import ModelConfig
    from starloop.models import load_model

    model, tok = load_model(ModelConfig(name="tiny-random"))
    token_id = tok.convert_tokens_to_ids(letter)
    model.lm_head = _FavourLetter(model.lm_head, token_id)
    qs = {f"q{i}": Question(id=f"q{i}", subject="s", language=lang, question="?",
                            choices=("w", "x", "y", "z")[: 3 + i % 2], answer=0)
          for i, lang in enumerate(["en", "zu", "en", "yo"])}
    samples = [Sample(question_id=q.id, sample_index=0, prompt=f"Question {q.id}\n", rationale="I think (B).",
                      extracted="B", language=q.language) for q in qs.values()]
    for pcfg in (PromptConfig(), PromptConfig(strategy="english")):
        out = add_forced_choice(model, tok, samples, qs, pcfg, batch_size=3)
        assert [s.extra["forced_choice"] for s in out] == [letter] * 4
        assert cross_check(out)["cross_check_disagreement"] == 1.0


def test_eval_writes_the_cross_check_per_language_and_report_shows_it(tmp_path):
    from starloop import cli
    from starloop.report import main as report_main

    out = tmp_path / "e"
    cli.main(["eval", "model=tiny-random", "data=mmlu-afr", "data.language=all", "data.limit=6",
              "eval.max_new_tokens=6", "progress=false", f"out={out}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["by_language"]
    for line in metrics["by_language"].values():
        assert "forced_choice_accuracy" in line
    header = (out / "generations.csv").read_text().splitlines()[0]
    assert "forced_choice" in header
    md = report_main([str(out), "--out", str(tmp_path / "r")]).read_text()
    assert "extraction vs forced choice" in md
    off = tmp_path / "off"
    cli.main(["eval", "model=tiny-random", "data.limit=2", "eval.max_new_tokens=4", "progress=false",
              "scoring.cross_check=false", f"out={off}"])
    assert "forced_choice_accuracy" not in json.loads((off / "metrics.json").read_text())
