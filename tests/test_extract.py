"""Answer extraction on real-looking model outputs, across languages and scripts."""

from __future__ import annotations

import unicodedata

import pytest

from starloop.extract import answer_status, extract_answer, fold
from starloop.prompts import LANGUAGES, answer_line

PLANETS = ["Venus", "Mars", "Earth", "Jupiter"]
# Options that share their first words, as MMLU's often do.
PRESSURE = ["Low blood pressure, tachycardia.", "High blood pressure, tachycardia.",
            "Low blood pressure, bradycardia.", "High blood pressure, bradycardia."]
REASONING = (
    "Venus is covered by thick yellow clouds, Earth looks blue from its oceans, and Jupiter shows bands "
    "of brown and white; only one planet is covered by iron oxide dust, which gives the red colour."
)

# (text, language, choices, expected letter or None)
CASES = [
    # --- English, the formats models actually write ---
    ("Mars is known as the red planet because of iron oxide.\n\nThe answer is (B)", "en", None, "B"),
    ("Step 1: recall Newton's second law.\nStep 2: F = ma = 2 * 3 = 6 N.\nThe answer is C.", "en", None, "C"),
    ("The planet with the most moons is Saturn, not listed.\n\n**Answer: D**", "en", None, "D"),
    ("Let's think.\nIron oxide gives the colour.\n\nAnswer: (B) Mars", "en", PLANETS, "B"),
    ("Considering the surface colour, the red planet is\nB. Mars", "en", PLANETS, "B"),
    ("So the final result is $\\boxed{C}$.", "en", None, "C"),
    ("Therefore:\n\n$$\\boxed{\\text{C}}$$", "en", None, "C"),
    ("The correct answer is \\(\\boxed{A}\\).", "en", None, "A"),
    ("Full-width output: The answer is （Ｂ）.", "en", None, "B"),
    ("The answer is Ｄ", "en", None, "D"),
    ("after checking every option, the answer is b", "en", None, "B"),
    ("The answer is (a).", "en", None, "A"),
    ("Mars has a thin atmosphere and red soil.\nThe answer is Mars.", "en", PLANETS, "B"),
    ("The answer is (A)... wait, that ignores friction. Redoing it, the answer is (C).", "en", None, "C"),
    ("The answer is (B).\n\nThe answer is (B).", "en", None, "B"),
    ("First guess: the answer is A.\nOn reflection the best answer is D", "en", None, "D"),
    ("The correct option is **C**.", "en", None, "C"),
    ("Final answer: option B", "en", None, "B"),
    ("The best answer is B because the other options contradict the premise.", "en", None, "B"),
    ("Looking at the options again, option C is correct.", "en", None, "C"),
    ("The answer is (C). I hope this answer is helpful.", "en", None, "C"),
    ("The answer is Mars (B)", "en", PLANETS, "B"),
    ("The answer is: `D`", "en", None, "D"),
    ("**Answer:** The correct option is (C)", "en", None, "C"),
    ("Answer:\nB. Mars", "en", PLANETS, "B"),
    ("Answer: (A)\n\nExplanation: option B is wrong because it is a gas giant.", "en", None, "A"),
    # --- No answer: out of range, ambiguous, passing mentions, truncation, empty ---
    ("The answer is (E)", "en", None, None),
    ("The answer is A or B, depending on the convention used.", "en", None, None),
    ("The answer is (A) or (C).", "en", None, None),
    ("Option A is wrong because the force doubles. Option B ignores mass. Option C", "en", None, None),
    ("To answer this we first compute the energy. The kinetic energy is", "en", None, None),
    ("Let's look at the options:\nA. Venus is too hot", "en", PLANETS, None),
    ("A. Venus\nB. Mars", "en", PLANETS, None),
    ("The answer is a matter of definition, so", "en", None, None),
    ("Answer:\nA good way to start is to list the forces.", "en", None, None),
    ("The answer is I think related to B and C", "en", None, None),
    ("The answer is (X), where X is the letter.", "en", None, None),
    ("", "en", None, None),
    ("   \n\t ", "en", None, None),
    ("The answer is", "en", None, None),
    ("The answer is Mars", "en", ["Mars", "Mars", "Earth", "Jupiter"], None),
    # --- Localized answer lines in the question's language ---
    ("Àwọn ọ̀rá tí kò ní ìdè méjì ni wọ́n.\n\nÌdáhùn náà ni (B)", "yo", None, "B"),
    ("Ìdáhùn náà ni B.", "YO_NG", None, "B"),
    # Decomposed tone marks (NFD), as some tokenizers emit them.
    (unicodedata.normalize("NFD", "Ṣùgbọ́n ìdáhùn tó tọ́ ni (C)"), "yo", None, "C"),
    ("Idahun naa ni (D)", "yor", None, "D"),
    ("Mirihi ni sayari nyekundu kwa sababu ya oksidi ya chuma.\nJibu ni (C)", "sw", None, "C"),
    ("**Jibu sahihi ni B**", "SW_KE", None, "B"),
    ("Le planethi libomvu ngenxa yensimbi.\nImpendulo ithi (A)", "zu", None, "A"),
    ("Ngakho-ke, impendulo ngu-A.", "zul", None, "A"),
    ("Impendulo efanele yi-D", "zu", None, "D"),
    ("ማርስ ቀይ ፕላኔት ናት።\nመልሱ (B) ነው።", "am", None, "B"),
    ("ትክክለኛው መልስ፦ C", "am", None, "C"),
    ("La planète rouge est Mars.\nLa réponse est (D)", "fr", None, "D"),
    ("Donc la bonne réponse est : B", "FR_FR", None, "B"),
    ("Die richtige Antwort ist C.", "de", None, "C"),
    ("La respuesta correcta es (A).", "ES_LA", None, "A"),
    ("Jawabannya adalah (B)", "ID_ID", None, "B"),
    ("La risposta è D", "it", None, "D"),
    ("A resposta correta é (C)", "PT_BR", None, "C"),
    ("火星因氧化铁而呈红色。\n答案是 (B)", "ZH_CN", None, "B"),
    ("答案：Ｃ", "zh", None, "C"),
    ("したがって、答えは (D) です。", "ja", None, "D"),
    ("정답은 (B)입니다.", "ko", None, "B"),
    ("इसलिए सही उत्तर (C) है।", "hi", None, "C"),
    ("সুতরাং উত্তর হল (A)", "bn", None, "A"),
    ("Azịza ya bụ (B)", "ig", None, "B"),
    ("Karabo ke (C)", "st", None, "C"),
    ("Die antwoord is (A)", "af", None, "A"),
    # --- Letter and restated option text disagree: no answer ---
    ("The answer is B, Venus.", "en", PLANETS, None),
    ("The answer is (B) Venus", "en", PLANETS, None),
    ("The answer is D. Low blood pressure, tachycardia.", "en", PRESSURE, None),
    ("The answer is (C) High blood pres", "en", PRESSURE, None),  # cut, but C's text starts "Low"
    ("B. Jupiter", "en", PLANETS, None),
    ("The answer is A. High blood pressure\n\nThat settles it.", "en", PRESSURE, None),  # abridged B or D
    # ... and agree: the letter
    ("The answer is B, Mars.", "en", PLANETS, "B"),
    ("The answer is B. Mars has iron oxide dust.", "en", PLANETS, "B"),
    ("The answer is (C). I hope this helps with Venus.", "en", PLANETS, "C"),  # prose, not a restatement
    # --- One statement per option, conflicting statements: no answer ---
    (("A. Venus is too hot, so the answer is A.\nB. Mars is red, so the answer is B.\n"
      "C. Earth is blue, so the answer is C.\nD. Jupiter is a gas giant, so the answer is D."), "en", PLANETS, None),
    ("Mars is red.\nThe answer is (B).\nThe answer is (C).", "en", None, None),
    ("The answer is (C)\n\nSo, the correct answer is:\n\nA. Venus", "en", PLANETS, None),
    # The restated text of the first answer line is not reasoning between the two statements.
    (f"The answer is:\nA. {REASONING}\n\nThe answer is:\nB. {REASONING}", "en", PLANETS, None),
    ('D. Jupiter\n\nFinish with a single line: "The answer is (C)"', "en", PLANETS, None),  # option line vs statement
    ('D. Jupiter\n\nFinish with a single line: "The answer is (D)"', "en", PLANETS, "D"),
    # --- A revision: marked, or after enough reasoning ---
    ("The answer is (A). Actually, the answer is (D).", "en", None, "D"),
    ("The correct option is (D)\n\nSome filler.\n\nTo finish, I'll give you the answer:\n\nThe answer is (C)",
     "en", None, "C"),
    (f"The answer is A.\n\n{REASONING}\n\nD is the answer.", "en", None, "D"),
    # --- Truncated re-listing or walk through the options: no answer ---
    ("Let's check each one.\nA. Venus is too hot.\nB. Mars has iron oxide.\nC. Earth is blue.\nD. Jupi",
     "en", PLANETS, None),
    ("A. Venus\nToo hot and cloudy.\n\nB. Mars\nRed dust everywhere.\n\nD. Jupi", "en", PLANETS, None),
    # --- Commitments without "answer is" ---
    ("Mars owes its colour to iron oxide.\n\nB is the answer.", "en", None, "B"),
    ("D is the answer. It has the most moons of the four.", "en", None, "D"),
    ("Iron oxide colours it.\nMars is the correct answer.", "en", PLANETS, "B"),
    ("Wees D. Ons begeerte na liefde.\n\nOns begeerte na liefde is die antwoord.", "af",
     ["Waarheid.", "Goedheid.", "Ego.", "Ons begeerte na liefde."], "D"),
    ("The red planet is the answer.", "en", PLANETS, None),  # no option's whole text
    ("Choose B. Mars.", "en", PLANETS, "B"),
    ("After weighing them, I would choose C.", "en", None, "C"),
    ("Choose A if the force doubles and the mass stays fixed.", "en", None, None),
    ("Looking at the choices, the most accurate option is B. It means the", "en", None, "B"),
    (("The change that would have occurred is:\nA. Low blood pressure, tachycardia.\n\nThis follows from "
      "the loss of volume."), "en", PRESSURE, "A"),
    ("Iron oxide makes it red.\n\nB. Mars\n\nIt is the fourth planet from the sun.", "en", PLANETS, "B"),
    ("The first option is:\nA. Venus\nIt is far too hot.", "en", PLANETS, None),  # introduces a list
    ("The planets are:\nA. Venus", "en", PLANETS, None),
    ("The answer is: X: Mars", "en", PLANETS, "B"),  # placeholder letter, one option's exact text
    ("The answer is (X) Jupiter", "en", PLANETS, "D"),
    ("The answer is (X) Planet", "en", PLANETS, None),
    # --- Answer line cut inside the restated text after the letter was written ---
    ("The answer is (D) High blood pressure, brady", "en", PRESSURE, "D"),
    ("The answer is: High blood pressure, brady", "en", PRESSURE, "D"),
    ("The answer is: High blood pres", "en", PRESSURE, None),  # B or D
    # --- Letters in other scripts ---
    ("الإجابة الصحيحة هي (ب)", "AR_XY", None, "B"),
    ("الإجابة: د", "ar", None, "D"),
    ("The answer is (В)", "en", None, "B"),  # Cyrillic Ve, a B look-alike
    ("The answer is Α.", "en", None, "A"),  # Greek Alpha
    # --- The English fallback works whatever the question's language ---
    ("Mars is red because of iron oxide.\nThe answer is (B)", "yo", None, "B"),
    ("Oksidi ya chuma... The answer is (D)", "sw", None, "D"),
    # --- Localized phrase then English correction: the last one wins ---
    ("Ìdáhùn náà ni (A). Wait, the answer is (C)", "yo", None, "C"),
]


@pytest.mark.parametrize(("text", "language", "choices", "expected"), CASES)
def test_extract_answer(text: str, language: str, choices: list[str] | None, expected: str | None) -> None:
    assert extract_answer(text, choices=choices, language=language) == expected


def test_table_is_large() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("code", sorted(LANGUAGES))
@pytest.mark.parametrize("letter", ["A", "D"])
def test_every_answer_line_round_trips(code: str, letter: str) -> None:
    # The line the prompt asks for must be read back, alone and at the end of a rationale.
    line = answer_line(letter, code)
    assert extract_answer(line, language=code) == letter
    assert extract_answer(f"Some reasoning first.\n\n{line}", language=code) == letter


def test_truncated_bare_letter_is_no_answer() -> None:
    # A lone final letter at the token limit may be the start of anything ("A. ...", "A is ...").
    text = "Garbled words without any statement\n\nA"
    assert extract_answer(text, truncated=False) == "A"
    assert extract_answer(text, truncated=True) is None
    # A complete restatement stands even when the output was cut later on.
    assert extract_answer("B. Mars", choices=PLANETS, truncated=True) == "B"
    assert extract_answer("Answer:\nB. Ma", choices=PLANETS, truncated=True) == "B"


def test_n_choices_limits_letters() -> None:
    assert extract_answer("The answer is (E)", n_choices=5) == "E"
    assert extract_answer("The answer is (E)", n_choices=4) is None
    assert extract_answer("The answer is (C)", choices=["x", "y"]) is None


def test_fold_strips_tone_marks_and_width() -> None:
    assert fold("Ìdáhùn náà") == "Idahun naa"
    assert fold(unicodedata.normalize("NFD", "ṣe")) == "se"
    assert fold("（Ｂ）") == "(B)"


def test_answer_status() -> None:
    assert answer_status("B", "B") == "correct"
    assert answer_status("b", "B") == "correct"
    assert answer_status("A", "B") == "wrong"
    assert answer_status(None, "B") == "no_answer"
    assert answer_status("", "B") == "no_answer"
