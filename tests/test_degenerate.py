"""Degenerate-output flags: the research notes' Yoruba loops, ordinary rationales, language checks."""

from __future__ import annotations

import unicodedata

import pytest

from starloop.degenerate import (
    FLAGS,
    degenerate_rates,
    detect,
    format_flags,
    is_repetitive,
    is_wrong_language,
    parse_flags,
)

# The two degenerate Llama 3.1 8B Instruct outputs quoted in the research notes (the second keeps the
# literal "\n\n" the notes show).
NOTES_LOOP = "Ṣeese esi lati " + " ".join(["ṣe"] * 90) + " ..."
NOTES_COUNTING = (
    r"Ipa italẹ fun awọn ohun elo ti awọn asidi ọra polyunsaturated adayeba ninu awọn epo ẹfọ ni.\n\n"
    "Awọn asidi ọra polyunsaturated ni awọn asidi ọra ti o ni iwe ifowopamọ carbon-carbon meji. Awọn iwe "
    "ifowopamọ carbon-carbon meji ni awọn iwe ifowopamọ meji ti o ni awọn atomu carbon 2, 3, 4, 5, 6, 7, 8, "
    "9, 10, 11, 12, 13, ..."
)

ENGLISH = (
    "To answer this question, we need to consider why Mars appears red. The surface of Mars is covered "
    "with iron oxide, commonly known as rust, which gives the planet its reddish colour. Venus is covered "
    "by thick clouds, Earth is mostly blue because of its oceans, and Jupiter has bands of white and brown "
    "clouds. Therefore, the red planet is Mars.\n\nThe answer is (B)"
)
ENGLISH_MATH = (
    "Step 1: The force is F = m * a.\nStep 2: The mass is 2 kg and the acceleration is 3 m/s^2.\n"
    "Step 3: So F = 2 * 3 = 6 N.\nStep 4: Option A says 5 N, option B says 6 N, option C says 1.5 N and "
    "option D says 12 N. Only option B matches the computed value of 6 N, since 1 + 2 + 3 = 6 as well.\n\n"
    "The answer is (B)"
)
YORUBA = (
    "Láti dáhùn ìbéèrè yìí, a ní láti wo ohun tí ó fa àwọ̀ pupa ti pílánẹ́ẹ̀tì Mars. Ilẹ̀ Mars ní "
    "ọ̀pọ̀lọpọ̀ irin oxide, èyí tí a mọ̀ sí ipata. Ipata yìí ni ó fún un ní àwọ̀ pupa. Nítorí náà, Mars ni a "
    "ń pè ní pílánẹ́ẹ̀tì pupa, kì í ṣe Venus tàbí Jupiter.\n\nÌdáhùn náà ni (B)"
)
ZULU = (
    "Ukuze siphendule lo mbuzo, kufanele sicabange ukuthi kungani iplanethi uMars ibomvu. Inhlabathi "
    "kaMars inensimbi eningi ehlangene ne-oxygen, futhi lokhu kwenza umbala obomvu. Ngakho-ke uMars "
    "waziwa ngokuthi iplanethi ebomvu, hhayi uVenus noma uJupiter.\n\nImpendulo ithi (B)"
)
SWAHILI = (
    "Ili kujibu swali hili, tunahitaji kufikiria kwa nini sayari ya Mirihi inaonekana nyekundu. Udongo wa "
    "Mirihi una oksidi ya chuma kwa wingi, ambayo pia inajulikana kama kutu, na hii ndiyo sababu ya rangi "
    "yake nyekundu. Zuhura na Sumbula hazina rangi hiyo.\n\nJibu ni (B)"
)
AMHARIC = (
    "ይህንን ጥያቄ ለመመለስ ማርስ ለምን ቀይ እንደሆነ ማሰብ አለብን። የማርስ አፈር ብዙ የብረት ኦክሳይድ ይዟል፤ ይህም ዝገት "
    "በመባል ይታወቃል። ይህ ዝገት ለፕላኔቷ ቀይ ቀለሟን ይሰጣታል። ስለዚህ ቀዩ ፕላኔት ማርስ ናት።\n\nመልሱ (B) ነው"
)


@pytest.mark.parametrize("text", [NOTES_LOOP, NOTES_COUNTING, NOTES_COUNTING.replace(r"\n", "\n")])
def test_notes_examples_are_repetition(text: str) -> None:
    assert is_repetitive(text)
    assert is_repetitive(unicodedata.normalize("NFD", text))
    assert detect(text, expected_language="yo", extracted=None) == ["repetition", "no_answer"]


@pytest.mark.parametrize(
    ("text", "language"),
    [(ENGLISH, "en"), (ENGLISH_MATH, "en"), (YORUBA, "yo"), (YORUBA, "YO_NG"), (ZULU, "zu"),
     (SWAHILI, "sw"), (AMHARIC, "am")],
)
def test_ordinary_rationales_are_clean(text: str, language: str) -> None:
    assert detect(text, expected_language=language, extracted="B") == []


@pytest.mark.parametrize(
    "text",
    [
        "The answer is (B). " * 6,  # a sentence loop
        " ".join(f"Step {i}: we add the mass of the block to the mass of the cart." for i in range(12)),
        "火星是红色的，" + "因为因为因为" * 6,  # a loop in a script without spaces
        "The carbon atoms are numbered 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and so on",
        "Even numbers: 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22",
        "x" + "!" * 250,
    ],
)
def test_loops_are_repetition(text: str) -> None:
    assert is_repetitive(text)


@pytest.mark.parametrize(
    "text",
    [
        "It is very, very, very unlikely.",
        "Avogadro's number is 602000000000000000000000 per mole.",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "The sides are 3, 4 and 5, and 5, 12, 13 is another triple; 1, 2, 3, 4, 5, 6 are the faces.",
        "=" * 60,
    ],
)
def test_ordinary_repeats_are_not_repetition(text: str) -> None:
    assert not is_repetitive(text)


def test_english_rationale_for_yoruba_prompt_is_wrong_language() -> None:
    assert detect(ENGLISH, expected_language="yo", extracted="B") == ["wrong_language"]
    assert is_wrong_language(ENGLISH, "zul")
    # And the reverse: a Yoruba rationale where English was asked for (english/translate strategies).
    assert is_wrong_language(YORUBA, "en")


def test_script_mismatch_is_wrong_language() -> None:
    assert is_wrong_language(ENGLISH, "am")
    assert is_wrong_language(ENGLISH, "AR_XY")
    assert is_wrong_language(AMHARIC, "en")
    assert not is_wrong_language(AMHARIC, "amh")


def test_short_texts_never_wrong_language() -> None:
    assert not is_wrong_language("The answer is (B)", "yo")
    assert not is_wrong_language("Mars is red because of rust.\nThe answer is (B)", "yo")
    assert detect("The answer is (B)", expected_language="am", extracted="B") == []


def test_unknown_language_is_only_flagged_when_clearly_english() -> None:
    assert is_wrong_language(ENGLISH, "ha")  # Hausa: no profile, but this is plainly English
    assert not is_wrong_language(ZULU, "ha")


def test_empty_and_truncated() -> None:
    assert detect("", extracted=None) == ["empty", "no_answer"]
    assert detect("  \n\t", extracted=None, expected_language="yo") == ["empty", "no_answer"]
    assert detect(ENGLISH[:120], truncated=True, extracted=None) == ["truncated", "no_answer"]
    assert detect(ENGLISH, truncated=True, extracted="B") == ["truncated"]
    assert detect(NOTES_LOOP, truncated=True) == ["truncated", "repetition", "no_answer"]


def test_rates_and_flag_cells() -> None:
    flags = [["repetition", "no_answer"], [], ["truncated"], "repetition,wrong_language"]
    rates = degenerate_rates(flags)
    assert set(rates) == {*FLAGS, "any"}
    assert rates["repetition"] == 0.5
    assert rates["truncated"] == 0.25
    assert rates["empty"] == 0.0
    assert rates["any"] == 0.75
    assert degenerate_rates([]) == dict.fromkeys((*FLAGS, "any"), 0.0)
    assert parse_flags(format_flags(["truncated", "repetition"])) == ["truncated", "repetition"]
    assert parse_flags("") == [] and parse_flags(None) == [] and parse_flags(float("nan")) == []
