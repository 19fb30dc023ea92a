"""The source registry, and the sources added through it: CommonsenseQA (5 options), ARC (letter or digit
keys, 3-5 options) and MMLU-Pro (up to 10 options), each read through its real converter from a fixture in
the hub schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from starloop.config import CHOICES, DataConfig
from starloop.data import load_questions
from starloop.data.sources import SOURCES, SPECS

HUB = Path(__file__).parent / "fixtures" / "hub"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _load(name, split, folder=None, **kw):
    return load_questions(DataConfig(name=name, path=str(HUB / (folder or name)), **kw), split)


def test_every_list_of_sources_derives_from_the_registry():
    from starloop.data.languages import available_languages
    from starloop.hydra_config import GROUP_OPTIONS

    assert CHOICES["data.name"] == tuple(SOURCES)
    assert set(GROUP_OPTIONS["data"]) == set(SOURCES)
    for name, s in SOURCES.items():
        assert GROUP_OPTIONS["data"][name].name == name
        assert available_languages(name) == list(s.languages)
        assert (name in SPECS) == (s.hub is not None)
        assert s.license and s.title and s.options[0] <= s.options[1] <= 10
    bundled = [n for n, s in SOURCES.items() if s.hub is None]
    from starloop.data.loader import bundled_path

    assert all(bundled_path(n).exists() for n in bundled)


def test_commonsense_qa_five_options_native_train_and_val():
    train, val = _load("commonsense-qa", "train"), _load("commonsense-qa", "val")
    assert len(train) == 6 and len(val) == 4
    assert all(len(q.choices) == 5 for q in train + val)
    q = train[[x.question.startswith("Sammy") for x in train].index(True)]
    assert q.gold_letter == "B" and q.choices[q.answer] == "populated areas"
    from starloop.errors import ConfigError

    with pytest.raises(ConfigError, match="no 'test' split"):
        _load("commonsense-qa", "heldout")


def test_arc_digit_keys_are_positions_and_option_counts_vary():
    train = _load("arc-challenge", "train", "arc")
    by_text = {q.question: q for q in train}
    switch = by_text["When a switch is used in an electrical circuit, the switch can"]
    assert switch.answer == 3 and switch.choices[3].startswith("stop and start")  # key "4" of labels 1-4
    assert sorted({len(q.choices) for q in train}) == [3, 4, 5]
    assert _load("arc-challenge", "val", "arc")[0].source == "arc-challenge"
    easy = _load("arc-easy", "test", "arc")
    assert len(easy) == 3 and {q.question for q in easy}.isdisjoint({q.question for q in train})
    whale = next(q for q in easy if q.question.startswith("Which animal"))
    assert whale.choices[whale.answer] == "whale"


def test_mmlu_pro_up_to_ten_options_and_dev_from_validation():
    test = _load("mmlu-pro", "test")
    assert len(test) == 8 and max(len(q.choices) for q in test) == 10 and min(len(q.choices) for q in test) == 3
    q = next(q for q in test if q.question.startswith("Typical advertising"))
    assert q.gold_letter == "I" and q.letters == "ABCDEFGHI"
    assert len(_load("mmlu-pro", "dev")) == 2
    train, val = _load("mmlu-pro", "train"), _load("mmlu-pro", "val")
    assert len(train) + len(val) == 8 and not {x.id for x in train} & {x.id for x in val}


def test_labelled_answer_errors_name_the_row():
    from starloop.data.rows import Location
    from starloop.data.source import labelled_answer
    from starloop.errors import DataError

    assert labelled_answer(["A", "B", "C"], "C", Location("f")) == 2
    assert labelled_answer(["1", "2", "3", "4"], "2", Location("f")) == 1
    with pytest.raises(DataError, match=r"f, row 7: answer key 'E' is not one of the choice labels A, B"):
        labelled_answer(["A", "B"], "E", Location("f", 7))


@pytest.mark.parametrize("name,folder", [("commonsense-qa", None), ("arc-challenge", "arc"), ("mmlu-pro", None)])
def test_new_sources_keep_train_and_val_apart(name, folder):
    from starloop.data.splits import fingerprint

    train = {fingerprint(q) for q in _load(name, "train", folder)}
    assert not any(fingerprint(q) in train for q in _load(name, "val", folder))


def test_ten_options_end_to_end_prompt_extraction_logits_and_rewards(tiny):
    """A 10-option MMLU-Pro question through the prompt, the extractor, letter-logit scoring and the
    answer-likelihood rewards."""
    from starloop import evaluate, extract, prompts
    from starloop.config import PromptConfig
    from starloop.records import Sample
    from starloop.scoring import add_reward_columns

    model, tok = tiny
    qs = [q for q in _load("mmlu-pro", "test") if len(q.choices) == 10]
    q = qs[0]
    text = evaluate.chat_prompts(tok, [q], PromptConfig())[0]
    assert "J." in text or "J)" in text
    assert extract.extract_answer("So the answer is (J).", n_choices=10, choices=q.choices) == "J"
    assert extract.extract_answer("So the answer is (K).", n_choices=10, choices=q.choices) is None
    assert "J" in prompts.letter_prompt(q)
    logit = evaluate.letter_logit_samples(model, tok, qs, batch_size=2, progress=False)
    assert all(s.extracted in "ABCDEFGHIJ" and len([k for k in s.extra if k.startswith("logp_")]) == 10
               for s in logit)
    smp = [Sample(question_id=q.id, sample_index=0, prompt=text, rationale="Hmm. The answer is (J).",
                  correct=q.gold_letter == "J", status="correct", language="en")]
    add_reward_columns(model, tok, smp, {q.id: q}, label_dist="smoothed", label_smoothing=0.1)
    assert len(smp[0].extra["answer_dist"].split()) == 10
