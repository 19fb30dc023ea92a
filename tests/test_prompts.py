"""Prompts: chat messages per strategy, the rationalization hint, the lm-eval letter prompt."""

from __future__ import annotations

import pytest

from starloop.errors import ConfigError
from starloop.prompts import (
    LANGUAGES,
    answer_line,
    build_messages,
    continuations,
    hint_text,
    language_info,
    letter_prompt,
    normalize_language,
    render_chat,
)
from starloop.records import Question


def q(language: str = "en", qid: str = "q1", answer: int = 1, question: str = "Which planet is red? ",
      ) -> Question:
    choices = ("Venus", "Mars", "Earth", "Jupiter")
    return Question(qid, "high_school_astronomy", language, question, choices, answer)


MMMLU_LOCALES = ["AR_XY", "BN_BD", "DE_DE", "ES_LA", "FR_FR", "HI_IN", "ID_ID", "IT_IT", "JA_JP", "KO_KR",
                 "PT_BR", "SW_KE", "YO_NG", "ZH_CN"]
REQUIRED = ["en", "yo", "sw", "zu", "xh", "af", "am", "ig", "sn", "st", "tn", "ts", "nso", "bm"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [("YO_NG", "yo"), ("yor", "yo"), ("zul", "zu"), ("SW_KE", "sw"), ("swa", "sw"), ("ES_LA", "es"),
     ("zh-CN", "zh"), ("amh", "am"), ("en", "en"), ("", "en"), (None, "en"), ("nso", "nso"), ("ha", "ha")],
)
def test_normalize_language(code: str | None, expected: str) -> None:
    assert normalize_language(code) == expected


def test_table_covers_required_languages_and_locales() -> None:
    for code in REQUIRED + MMMLU_LOCALES:
        assert normalize_language(code) in LANGUAGES, code
    assert language_info("ha").code == "en"  # unknown -> English strings
    assert answer_line("B", "am") == "መልሱ (B) ነው"
    assert answer_line("C") == "The answer is (C)"
    for lang in LANGUAGES.values():
        assert "{X}" in lang.line and "{X}" in lang.hint and lang.patterns


def test_native_english_prompt() -> None:
    msgs = build_messages(q())
    assert msgs == [{
        "role": "user",
        "content": "Which planet is red?\n\nA. Venus\nB. Mars\nC. Earth\nD. Jupiter\n\n"
        + LANGUAGES["en"].instruction,
    }]
    assert '"The answer is (X)"' in msgs[0]["content"]


def test_native_uses_the_question_language() -> None:
    content = build_messages(q("YO_NG"))[0]["content"]
    assert "Ìdáhùn náà ni (X)" in content and "The answer is" not in content
    assert "መልሱ (X) ነው" in build_messages(q("am"))[0]["content"]


def test_english_and_translate_strategies() -> None:
    english = build_messages(q("yo"), strategy="english")[0]["content"]
    assert "in English" in english and "The answer is (X)" in english and "Ìdáhùn" not in english
    translate = build_messages(q("yo"), strategy="translate")[0]["content"]
    assert translate.index("translate the question") < translate.index("step by step")
    assert "The answer is (X)" in translate
    # For English questions the strategies coincide.
    native = build_messages(q())
    assert build_messages(q(), strategy="translate") == native == build_messages(q(), strategy="english")


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="prompt.strategy"):
        build_messages(q(), strategy="pirate")


@pytest.mark.parametrize(("language", "strategy"), [("en", "native"), ("yo", "native"), ("zu", "english"),
                                                   ("am", "translate")])
def test_hinted_prompt_differs_only_by_the_hint(language: str, strategy: str) -> None:
    shots = [q(language, "q0", 0)]
    plain = build_messages(q(language), strategy=strategy, system="Be brief.", few_shot=shots)
    hinted = build_messages(q(language), strategy=strategy, system="Be brief.", few_shot=shots, hint="B")
    assert len(plain) == len(hinted) and plain[:-1] == hinted[:-1]
    hint = hint_text(q(language), "B", strategy)
    assert "(B)" in hint
    assert hinted[-1]["content"] == plain[-1]["content"] + "\n\n" + hint


def test_hint_must_be_an_option_letter() -> None:
    assert build_messages(q(), hint="b") == build_messages(q(), hint="B")
    with pytest.raises(ValueError, match="q1"):
        build_messages(q(), hint="E")


def test_system_and_few_shot_turns() -> None:
    shot = q(qid="q0", answer=2, question="Which planet do we live on?")
    worked = (shot, "We live on Earth.\nThe answer is (C)")
    msgs = build_messages(q(), system="You are careful.", few_shot=[shot, worked])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "You are careful."
    assert msgs[2]["content"] == "The answer is (C)"
    assert msgs[4]["content"] == "We live on Earth.\nThe answer is (C)"
    assert msgs[1]["content"].startswith("Which planet do we live on?")
    # Few-shot answer lines follow the prompt language.
    assert build_messages(q("sw"), few_shot=[q("sw", "q0", 2)])[1]["content"] == "Jibu ni (C)"


def test_letter_prompt_matches_lm_eval_mmlu() -> None:
    expected = (
        "The following are multiple choice questions (with answers) about high school astronomy.\n\n"
        "Which planet is red?\nA. Venus\nB. Mars\nC. Earth\nD. Jupiter\nAnswer:"
    )
    assert letter_prompt(q()) == expected
    assert continuations(q()) == [" A", " B", " C", " D"]


def test_letter_prompt_few_shot() -> None:
    shot = q(qid="q0", answer=2, question="  Which planet do we live on?\n")
    expected = (
        "The following are multiple choice questions (with answers) about high school astronomy.\n\n"
        "Which planet do we live on?\nA. Venus\nB. Mars\nC. Earth\nD. Jupiter\nAnswer: C\n\n"
        "Which planet is red?\nA. Venus\nB. Mars\nC. Earth\nD. Jupiter\nAnswer:"
    )
    assert letter_prompt(q(), few_shot=[shot]) == expected


class _ChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


class _BaseTokenizer:
    chat_template = None


def test_render_chat() -> None:
    msgs = build_messages(q(), system="S")
    assert render_chat(_ChatTokenizer(), msgs).startswith("<|system|>S<|user|>Which planet")
    plain = render_chat(_BaseTokenizer(), msgs)
    assert plain.startswith("System: S\n\nUser: Which planet") and plain.endswith("\n\nAssistant:")
