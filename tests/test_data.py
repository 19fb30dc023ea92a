"""Bundled datasets (mmlu, mmlu-afr) and the logical splits, subject filter and limit built on them."""

from __future__ import annotations

import functools
import unicodedata
from collections import defaultdict
from dataclasses import replace

import pytest

from starloop.config import DataConfig
from starloop.data import aligned_id, available_languages, load_questions
from starloop.errors import ConfigError


@functools.cache
def _load(split: str, **kw) -> tuple:
    # Cached per (split, config): the bundled test split takes ~0.5 s to read.
    return tuple(load_questions(DataConfig(**kw), split))


def _ids(qs) -> list[str]:
    return [q.id for q in qs]


def test_bundled_mmlu_counts_and_ids():
    assert len(_load("val")) == 1531
    assert len(_load("dev")) == 285
    assert len(_load("test")) == 14042
    val = _load("val")
    assert "mmlu/val/abstract_algebra/0007" in _ids(val)
    assert len(set(_ids(val))) == len(val)
    q = next(q for q in val if q.id == "mmlu/val/abstract_algebra/0000")
    assert (
        q.language == "en" and q.source == "mmlu" and len(q.choices) == 4 and q.subject == "abstract_algebra"
    )


def test_validation_alias_and_unknown_split():
    assert _ids(load_questions(DataConfig(), "validation")) == _ids(_load("val"))
    with pytest.raises(ConfigError, match="data.train_split"):
        load_questions(DataConfig(train_split="training"), "training")


def test_train_and_heldout_partition_test():
    test, train, held = _load("test"), _load("train"), _load("heldout")
    assert set(_ids(train)).isdisjoint(_ids(held))
    assert sorted(_ids(train) + _ids(held)) == sorted(_ids(test))
    # About heldout_fraction of every subject is held out.
    n_test, n_held = defaultdict(int), defaultdict(int)
    for q in test:
        n_test[q.subject] += 1
    for q in held:
        n_held[q.subject] += 1
    for subject, n in n_test.items():
        assert abs(n_held[subject] - 0.1 * n) <= 7, subject
    # Native val is MMLU's val; no val question (even one repeated in test) is trained on.
    val = _load("val")
    assert all(q.id.startswith("mmlu/val/") for q in val)
    val_text = {(q.subject, q.question, q.choices) for q in val}
    assert not any((q.subject, q.question, q.choices) in val_text for q in train)
    # Exact duplicate rows of a subject stay on one side of the cut.
    side = {q.id: "train" for q in train} | {q.id: "held" for q in held}
    groups = defaultdict(set)
    for q in test:
        groups[(q.subject, q.question, q.choices)].add(side[q.id])
    assert all(len(sides) == 1 for sides in groups.values())


def test_partition_is_deterministic_seeded_and_independent_of_limit():
    held = set(_ids(_load("heldout")))
    few = ["virology", "anatomy", "college_physics"]
    again = load_questions(DataConfig(subjects=few), "heldout")
    assert set(_ids(again)) == {i for i in held if i.split("/")[2] in few}
    assert set(_ids(load_questions(DataConfig(subjects=few, seed=7), "heldout"))) != set(_ids(again))
    small = load_questions(DataConfig(limit=20, subjects=few), "heldout")
    assert len(small) == 20 and set(_ids(small)) <= held
    assert set(_ids(load_questions(DataConfig(limit=300, subjects=few), "train"))).isdisjoint(held)


def test_limit_is_a_seeded_prefix_across_subjects():
    first = load_questions(DataConfig(limit=50), "val")
    assert len(first) == 50
    assert len({q.subject for q in first}) >= 15
    assert _ids(first) == _ids(load_questions(DataConfig(limit=50), "val"))
    assert _ids(first) == _ids(_load("val"))[:50]
    assert _ids(load_questions(DataConfig(limit=20), "val")) == _ids(first)[:20]
    assert _ids(load_questions(DataConfig(limit=50, seed=99), "val")) != _ids(first)


def test_subjects_filter():
    qs = load_questions(DataConfig(subjects=["virology", "High School Biology"]), "val")
    assert {q.subject for q in qs} == {"virology", "high_school_biology"}
    assert len(qs) == 18 + 32
    with pytest.raises(ConfigError, match=r"data\.subjects.*virologie.*abstract_algebra") as e:
        load_questions(DataConfig(subjects=["virologie"]), "val")
    assert "\n" not in str(e.value)


def test_mmlu_afr_zulu_val_aligned_with_english():
    zu = load_questions(DataConfig(name="mmlu-afr", language="zu"), "val")
    en = load_questions(DataConfig(name="mmlu-afr", language="en"), "val")
    assert len(zu) == len(en) == 69
    assert "mmlu-afr/zu/val/virology/0003" in _ids(zu)
    assert {q.language for q in zu} == {"zu"}
    by_tail = {aligned_id(q): q for q in en}
    assert {aligned_id(q) for q in zu} == set(by_tail)
    for q in zu:
        assert q.answer == by_tail[aligned_id(q)].answer and q.subject == by_tail[aligned_id(q)].subject
    # The English rows of mmlu-afr are MMLU's rows, under the same aligned id.
    mmlu = {aligned_id(q): q for q in _load("val")}
    assert all(mmlu[aligned_id(q)].question == q.question for q in en)


def test_mmlu_afr_all_languages_share_splits():
    cfg = DataConfig(name="mmlu-afr", language="all")
    assert available_languages("mmlu-afr") == [
        "en",
        "af",
        "am",
        "bm",
        "ig",
        "nso",
        "sn",
        "st",
        "tn",
        "ts",
        "xh",
        "zu",
    ]
    val = load_questions(cfg, "val")
    assert len(val) == 12 * 69
    held = load_questions(cfg, "heldout")
    per_lang = defaultdict(set)
    for q in held:
        per_lang[q.language].add(aligned_id(q))
    assert len(per_lang) == 12 and all(s == per_lang["en"] for s in per_lang.values())
    # Same held-out questions as plain mmlu on these subjects (the cut is keyed on the aligned id).
    subjects = ["clinical_knowledge", "college_medicine", "virology"]
    mmlu_held = {aligned_id(q) for q in load_questions(DataConfig(subjects=subjects), "heldout")}
    assert per_lang["en"] == mmlu_held
    # limit draws the same questions in every language, translations together.
    zu10 = load_questions(replace(cfg, language="zu", limit=10), "test")
    en10 = load_questions(replace(cfg, language="en", limit=10), "test")
    assert [aligned_id(q) for q in zu10] == [aligned_id(q) for q in en10]
    # With language=all the limit counts questions per language: 2 aligned questions in all 12 languages.
    both = load_questions(replace(cfg, limit=2), "test")
    assert len(both) == 24 and len({aligned_id(q) for q in both}) == 2


def test_igbo_text_is_nfc():
    qs = load_questions(DataConfig(name="mmlu-afr", language="ig", subjects=["clinical_knowledge"]), "test")
    assert len(qs) == 265
    for q in qs:
        for text in (q.question, *q.choices):
            assert unicodedata.is_normalized("NFC", text)
    # The raw file spells the same letter two ways; loaded, both spellings are one string.
    joined = " ".join(q.question + " " + " ".join(q.choices) for q in qs)
    assert "\u1ee5\u0301" in joined  # ụ + combining acute, the NFC form
    assert "\u00fa\u0323" not in joined


def test_mojibake_in_professional_law_is_repaired():
    qs = load_questions(DataConfig(subjects=["professional_law"]), "test")
    text = " ".join(q.question + " ".join(q.choices) for q in qs)
    assert "Ã©" not in text and "Â§" not in text
    assert "§" in text and "é" in text


def test_language_errors():
    with pytest.raises(ConfigError, match="data.language.*mmlu-afr"):
        load_questions(DataConfig(name="mmlu-afr", language="yo"), "val")
    with pytest.raises(ConfigError, match="data.name"):
        load_questions(DataConfig(name="mmlu-xx"), "val")
    assert load_questions(DataConfig(name="mmlu-afr", language="isiZulu", limit=3), "val")[0].language == "zu"


def _overlap(train, val) -> int:
    """Val rows whose question (text + choice set, any subject) is also a train row of the same language,
    or whose aligned id's translation in some language is."""
    from starloop.data.splits import fingerprint

    seen = {(q.language, fingerprint(q)) for q in train}
    leaked = {aligned_id(q) for q in val if (q.language, fingerprint(q)) in seen}
    return sum(aligned_id(q) in leaked for q in val)


@pytest.mark.parametrize("name,language", [("mmlu", "en"), ("mmlu-afr", "all"), ("mmlu-afr", "zu")])
def test_train_never_shares_a_question_with_val_or_heldout(name, language):
    """Before: 12 of MMLU's 1,531 val questions were in train (filed under another subject), and 117 of
    mmlu-afr's 828 val rows (all languages); now none, in every language, for val and heldout."""
    train = _load("train", name=name, language=language)
    for split in ("val", "heldout"):
        assert _overlap(train, _load(split, name=name, language=language)) == 0, split


def test_a_question_filed_under_two_subjects_lands_on_one_side():
    from starloop.data.splits import heldout_ids
    from starloop.records import Question

    def q(split, subject, i, text, choices):
        return Question(id=f"mmlu/{split}/{subject}/{i:04d}", question=text, choices=choices, answer=0,
                        subject=subject, language="en", source="mmlu")

    test = [q("test", "a", 0, "Same  Question?", ("x", "y")), q("test", "b", 0, "same question?", ("y", "x")),
            *[q("test", "a", i, f"other {i}", ("x", "y")) for i in range(1, 10)],
            *[q("test", "b", i, f"more {i}", ("x", "y")) for i in range(1, 10)]]
    for seed in range(20):
        held = heldout_ids(test, None, 0.1, seed)
        assert ("test/a/0000" in held) == ("test/b/0000" in held)
    val = [q("val", "c", 0, "SAME question?", ("x", "y"))]
    held = heldout_ids(test, val, 0.1, 0)
    assert {"test/a/0000", "test/b/0000"} <= held
