"""Answer extraction: the option letter a rationale commits to, or None when it does not commit.

Wrong extraction is the usual source of wrong scores (a regex that reads the first "answer is", a
localized "Answer:" it does not know, option text restated instead of a letter), so the rules are:

1. Fold the text: NFKC (full-width "Ｂ" -> "B", "（B）" -> "(B)", "𝐁" -> "B"), then drop combining
   marks, so "Ìdáhùn náà ni", "Idahun naa ni" and a decomposed "Ìdáhùn" all read "idahun naa ni".
2. Find every answer statement: an answer phrase of the question's language or of English (the
   phrases live in `starloop.prompts.LANGUAGES`), `\\boxed{...}`, or English "B is correct." Each
   resolves to a letter (in parentheses, or bare: an upper-case letter not followed by a letter, a
   lower-case one only before punctuation or the line end, so "the answer is a combination" is no
   answer), or else to the option text that follows it when exactly one choice matches.
3. The LAST statement that resolves wins ("the answer is (A)... wait, the answer is (C)" -> C). It
   gives None if its letter is out of range or it names two different letters ("A or B").
4. Without any statement, a final line that is just an option ("B", "(B) Mars", "B. Mars") counts,
   unless the line before it is an option too (the model was listing options, not answering).

Letters in other scripts are read where models write them: Greek Α Β Γ Δ Ε, Cyrillic look-alikes
А В С Е, Arabic أ ب ج د ه (the Arabic MMLU labels).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from starloop.prompts import LANGUAGES, normalize_language
from starloop.records import LETTERS

# Letters models write in other scripts, mapped to the Latin option letter. Arabic alef with hamza
# folds to bare alef (combining hamza removed), so only the bare forms are needed.
_SCRIPT_LETTERS = {
    "Α": "A", "Β": "B", "Γ": "C", "Δ": "D", "Ε": "E",  # Greek (order and look agree for A, B)
    "А": "A", "В": "B", "С": "C", "Е": "E",  # Cyrillic look-alikes
    "а": "a", "в": "b", "с": "c", "е": "e",
    "ا": "A", "ب": "B", "ج": "C", "د": "D", "ه": "E",  # Arabic abjad order
}
_UP = "A-Z" + "ΑΒΓΔΕАВСЕ" + "ابجده"
_LOW = "a-z" + "авсе"
# A bare letter must not run into a word of an alphabetic script ("Bread"), but may run into CJK or
# Hangul ("B입니다", "B です").
_NOT_WORD = r"(?![0-9A-Za-z\u00C0-\u02AF\u0370-\u03FF\u0400-\u04FF\u0600-\u06FF])"
_SLOT = (
    rf"(?:[(\[{{]\s*(?P<p>[{_UP}{_LOW}])\s*[)\]}}]"
    # "I" followed by a word is the pronoun ("the answer is I think B"), not option I; on a new line,
    # "A good way..." starts a sentence.
    rf"|(?!I\s+[a-z])(?!(?<=\n)[A-Z][^\S\n]+[a-z])(?P<u>[{_UP}]){_NOT_WORD}"
    rf"|(?P<l>[{_LOW}])(?=[^\S\n]*(?:[.,;:!?)\]}}*_$]|\n|\Z)))"
)
# What may sit between an answer phrase and the letter: markdown, quotes, colons, LaTeX wrappers,
# and a word for "option".
_FILL = (
    r"(?:[\s*_\"'“”‘’`«»「」『』<>:=~$\-–—፡፦]|\\\(|\\\[|\\(?:boxed|text|textbf|mathrm|mathbf)\s*\{)*"
    r"(?:(?:option|choice|letter|opci[oó]n|op[cç][aã]o|opzione|chaguo|herufi)\s*[:\-]?\s*)?"
    r"(?:[\s*_\"'“”‘’`«»「」『』:$]|\\(?:text|textbf|mathrm|mathbf)\s*\{)*"
)
_SLOT_RE = re.compile(_FILL + _SLOT)
_FILL_RE = re.compile(_FILL)
# "A or B", "(A), (B)", "A/B": a second letter right after the first makes the statement ambiguous.
_SECOND_RE = re.compile(
    r"[^\S\n]*(?:,|/|\||&|\bor\b|\band\b|\bou\b|\bo\b|\by\b|\bet\b|\boder\b|\bau\b|\bna\b|\btabi\b"
    r"|\bnoma\b|или|أو|或者|或|还是|または)[^\S\n]*" + _SLOT
)
_LINE_END = re.compile(r"[^\n]*")
# English "Option B is correct." as the end of a sentence.
_IS_CORRECT_RE = re.compile(
    r"(?<![A-Za-z])(?i:(?:option|choice)\s+)?(?:\(\s*(?P<p>[A-Z])\s*\)|(?P<u>[A-Z]))"
    r"(?i:\s+is\s+(?:the\s+)?(?:correct|right|best)(?:\s+(?:answer|option|choice))?)\s*[.!]?[*_]*\s*(?:\n|\Z)"
)
_BOXED = r"\\boxed\s*\{"
_OPTION_LINE_RE = re.compile(
    rf"^(?:[(\[]\s*(?P<p>[{_UP}{_LOW}])\s*[)\]][.:]?|(?P<u>[{_UP}{_LOW}])(?:[^\S\n]*[.):]|$))[^\S\n]*(?P<rest>.*)$"
)
_MARKDOWN_EDGE = " \t*_#>`\"'“”"


def fold(text: str) -> str:
    """NFKC, then drop combining marks (tone marks, accents, Arabic hamza/harakat), then NFC.

    Applied to texts and to the answer-phrase regexes alike, so both sides meet in the same form.
    """
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", stripped)


@lru_cache(maxsize=64)
def _phrase_re(language: str) -> re.Pattern[str]:
    """One alternation of the answer phrases of `language` and English, compiled once per language."""
    patterns = list(LANGUAGES["en"].patterns)
    if language in LANGUAGES and language != "en":
        patterns += LANGUAGES[language].patterns
    alternation = "|".join(f"(?:{fold(p)})" for p in patterns)
    # A Latin phrase must start a word ("answer", not "reanswer"); CJK phrases have no spaces.
    return re.compile(rf"(?i:(?<![A-Za-z])(?:{alternation}))|{_BOXED}")


def _letter(m: re.Match[str]) -> str:
    groups = m.groupdict()
    raw = groups.get("p") or groups.get("u") or groups.get("l") or ""
    return _SCRIPT_LETTERS.get(raw, raw).upper()


def _norm_option(text: str) -> str:
    """Option text in a comparable form: folded, case-free, markdown and end punctuation removed."""
    t = fold(text).casefold()
    t = re.sub(r"[*_`$]|\\text\{|\\textbf\{", "", t)
    t = re.sub(r"\s+", " ", t)
    return t.strip(" \t.,;:!?。、\"'“”‘’()[]{}")


def _match_choice(rest: str, choices: Sequence[str]) -> int | None:
    """Index of the one choice that `rest` restates (equal, or followed by a word boundary), else None."""
    r = _norm_option(rest)
    if not r:
        return None
    normed = [_norm_option(c) for c in choices]
    exact = [i for i, c in enumerate(normed) if c and c == r]
    if exact:
        return exact[0] if len(exact) == 1 else None
    prefix = [i for i, c in enumerate(normed) if c and r.startswith(c) and not r[len(c)].isalnum()]
    if len(prefix) > 1:  # "Mars" and "Mars and Venus": keep the longest, if it is unique
        longest = max(len(normed[i]) for i in prefix)
        prefix = [i for i in prefix if len(normed[i]) == longest]
    return prefix[0] if len(prefix) == 1 else None


# A resolved statement: (position, letter or None for "no valid answer").
_Statement = tuple[int, str | None]


def _resolve(text: str, end: int, n: int, choices: Sequence[str] | None) -> str | None | bool:
    """Resolve the statement whose phrase ends at `end`: a letter, None (invalid), False (unresolved)."""
    m = _SLOT_RE.match(text, end)
    if m:
        letter = _letter(m)
        if LETTERS.find(letter) not in range(n):
            return None
        second = _SECOND_RE.match(text, m.end())
        if second and _letter(second) != letter:
            return None
        return letter
    if choices:
        fill = _FILL_RE.match(text, end)
        start = fill.end() if fill else end
        line = _LINE_END.match(text, start).group(0)  # type: ignore[union-attr]
        index = _match_choice(line, choices)
        if index is not None:
            return LETTERS[index]
    return False


def _statements(text: str, language: str, n: int, choices: Sequence[str] | None) -> list[_Statement]:
    found: list[_Statement] = []
    for m in _phrase_re(language).finditer(text):
        resolved = _resolve(text, m.end(), n, choices)
        if resolved is not False:
            found.append((m.start(), resolved))  # type: ignore[arg-type]
    # English "B is correct." is part of the English fallback, accepted for every language.
    for m in _IS_CORRECT_RE.finditer(text):
        letter = _letter(m)
        found.append((m.start(), letter if LETTERS.find(letter) in range(n) else None))
    return found


def _option_line(line: str) -> tuple[str, str] | None:
    m = _OPTION_LINE_RE.match(line.strip(_MARKDOWN_EDGE))
    if not m:
        return None
    return _letter(m), m.group("rest").strip(_MARKDOWN_EDGE)


def _final_line(text: str, n: int, choices: Sequence[str] | None) -> str | None:
    """The letter of a final line that only names an option ("B", "(B) Mars", "B. Mars"), else None."""
    lines = [ln for ln in text.splitlines() if ln.strip(_MARKDOWN_EDGE)]
    if not lines:
        return None
    last = _option_line(lines[-1])
    if last is None:
        return None
    if len(lines) > 1:
        before = lines[-2].strip(_MARKDOWN_EDGE)
        # After another option line or an introduction ("Let's look at the options:") the model is
        # listing options, not answering.
        if _option_line(lines[-2]) is not None or before.endswith(":"):
            return None
    letter, rest = last
    index = LETTERS.find(letter)
    if index not in range(n):
        return None
    if rest and choices and index < len(choices):
        # A restated option must agree with that option's text, or it is prose that starts with "A.".
        r, c = _norm_option(rest), _norm_option(choices[index])
        if not (c and (c in r or r in c)):
            return None
    return letter


def extract_answer(
    text: str,
    n_choices: int = 4,
    choices: Sequence[str] | None = None,
    language: str = "en",
) -> str | None:
    """The option letter ("A".."J") that `text` commits to, or None (no answer, never a guess).

    choices: the option texts, used to read a restated option ("The answer is Mars") and to check a
    final "B. Mars" line; when given, their number overrides `n_choices`.
    language: the question's language (any code `prompts.normalize_language` accepts); its answer
    phrases are tried together with the English ones.
    """
    if not text or not text.strip():
        return None
    n = len(choices) if choices else n_choices
    folded = fold(text)
    statements = _statements(folded, normalize_language(language), n, choices)
    if statements:
        return max(statements, key=lambda s: s[0])[1]
    return _final_line(folded, n, choices)


def score(extracted: str | None, gold_letter: str) -> str:
    """correct / wrong / no_answer: the `Sample.status` of an extracted letter against the gold letter."""
    if not extracted:
        return "no_answer"
    return "correct" if extracted.strip().upper() == gold_letter.strip().upper() else "wrong"
