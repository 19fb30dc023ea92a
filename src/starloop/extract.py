"""Answer extraction: the option letter a rationale commits to, or None when it does not commit.

Wrong extraction is the usual source of wrong scores (a regex that reads the first "answer is", a
localized "Answer:" it does not know, option text restated instead of a letter), so the rules are:

1. Fold the text: NFKC (full-width "Ｂ" -> "B", "（B）" -> "(B)", "𝐁" -> "B"), then drop combining
   marks, so "Ìdáhùn náà ni", "Idahun naa ni" and a decomposed "Ìdáhùn" all read "idahun naa ni".
2. Find every answer statement: an answer phrase of the question's language or of English (the
   phrases live in `starloop.prompts.LANGUAGES`), `\\boxed{...}`, "the most accurate option is",
   "I choose B.", English "B is correct." / "D is the answer.", or a line ending in "is:" before a
   single option line. Each resolves to a letter (in parentheses, or bare: an upper-case letter not
   followed by a letter, a lower-case one only before punctuation or the line end, so "the answer is
   a combination" is no answer), or else to the option text that follows it when exactly one choice
   matches.
3. Check a letter against the option text restated after it: another option's text ("B, <text of
   A>") makes the statement no answer; a placeholder letter ("X: <text of A>") takes the option its
   text restates. A letter out of range or two letters ("A or B") are no answer.
4. The last statement decides, if it is not contradicted: statements naming three or more letters
   (one "the answer is X" per option) give None, and so do two different letters unless a revision
   lies between them (a marker such as "wait" or "actually", or enough new reasoning):
   "the answer is (A)... wait, the answer is (C)" -> C; "The answer is (B). The answer is (C)." -> None.
5. Without any statement, the last option line ("B", "(B) Mars", "B. Mars") counts when it is the
   only option line (not a re-listing or a walk through the options, complete or cut off) and its
   text agrees with its option; text may follow it only when it restates the option in full.

docs/extraction.md explains the rules with examples and the figures measured on hand-labelled outputs.

Letters in other scripts are read where models write them: Greek Α Β Γ Δ Ε, Cyrillic look-alikes
А В С Е, Arabic أ ب ج د ه (the Arabic MMLU labels).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
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
_LINE_RE = re.compile(r"[^\n]+")
# English "Option B is correct." / "D is the answer." as a sentence of its own.
_IS_CORRECT_RE = re.compile(
    r"(?<![A-Za-z])(?i:(?:option|choice)\s+)?(?:\(\s*(?P<p>[A-Z])\s*\)|(?P<u>[A-Z]))"
    r"(?i:\s+is\s+(?:the\s+)?(?:(?:correct|right|best)(?:\s+(?:answer|option|choice))?|(?:answer|correct\s+one)))"
    r"\s*[.!]?[*_]*(?=[^\S\n]*(?:\n|\Z)|[^\S\n]+[A-Z])"
)
# "<text of B> is the answer" (English, Afrikaans, Dutch): the option's whole text as the subject.
_TEXT_IS_ANSWER_RE = re.compile(
    r"(?i)(?:^|(?<=[.!?:\n]))(?P<subject>[^.!?:\n]+?)\s+is\s+(?:the|die|het)\s+"
    r"(?:(?:correct|right|best|korrekte|regte|juiste)\s+)?(?:answer|antwoord)\b"
)
# "I choose A." / "Choose A. <option>": the letter must end its clause (see `_check_letter`).
_CHOOSE_RE = re.compile(r"(?i:(?<![A-Za-z])(?:choose|select|pick|go\s+with))")
# "the most accurate option is B": answer phrases beyond the prompt's own ones (English).
_QUALIFIED_RE = re.compile(
    r"(?i:(?<![A-Za-z])(?:most\s+)?(?:accurate|appropriate|likely|suitable|plausible|probable|reasonable|"
    r"sensible|valid|logical|fitting)\s+(?:option|choice|answer|letter)(?:\s+here)?\s+(?:is|would\s+be))"
)
_CLAUSE_END_RE = re.compile(r"[^\S\n]*(?:[.,;:!?)\]*_]|\n|\Z)")
# "The event that would have occurred is:" ending a line, before one option line.
_INTRO_RE = re.compile(r"(?im:^(?P<intro>[^\n]*\b(?:is|would\s+be|will\s+be|should\s+be))[^\S\n]*[*_]*:[*_]*[^\S\n]*$)")
# ... but "The first option is:" / "The following is:" introduce a list, not an answer.
_LISTING_INTRO_RE = re.compile(r"(?i)\b(?:options?|choices?|following|each|list|first|second|third|fourth|next)\b")
# Words that mark a later answer statement as a revision of an earlier, different one.
_REVISION_RE = re.compile(
    r"(?i)\b(?:wait|actually|however|but|instead|correction|mistake|reconsider\w*|re-?evaluat\w*|re-?check\w*"
    r"|re-?examin\w*|rethink\w*|on\s+(?:second|further)\s+thought|on\s+reflection|upon\s+(?:further|closer)"
    r"|after\s+(?:further|careful|closer)|final(?:ly)?|in\s+(?:conclusion|summary)|to\s+(?:finish|conclude|sum\s+up)"
    r"|no,)"
)
_WORD_RE = re.compile(r"[^\W_]+")
# Two different letters separated by at least this many words of reasoning: the later one is a revision.
_REVISION_WORDS = 25
# A restatement cut by the token limit must keep this many characters to name an option.
_MIN_CUT_CHARS = 4
# ... and an abridged restatement elsewhere this many, in two words or more.
_MIN_ABRIDGED_CHARS = 12
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


@dataclass(frozen=True)
class _Statement:
    """One answer statement: where it starts and ends, the letter it resolves to (None: no valid
    answer), and the letter it names (None for a placeholder), which conflicts are judged on."""

    start: int
    end: int
    letter: str | None
    named: str | None


def _separator_stripped(rest: str) -> str:
    return rest.lstrip(" \t.:,;)]}-–—*_\"'“”‘’`")


def _restated(rest: str, choices: Sequence[str] | None, at_end: bool) -> set[int]:
    """Indices of the options that `rest` (the text after a letter, up to the line end) restates.

    A restatement is an option's whole text, or its text followed by more words ("Mars has iron
    oxide"), or the start of an option's text: at the very end of the output (cut by the token
    limit), or abridged when it is long enough. Empty when `rest` is prose that restates no option.
    """
    if not choices:
        return set()
    r = _norm_option(_separator_stripped(rest))
    if not r:
        return set()
    index = _match_choice(r, choices)
    if index is not None:
        return {index}
    normed = [_norm_option(c) for c in choices]
    if r in normed:  # two options with the same text
        return {i for i, c in enumerate(normed) if c == r}
    # The start of an option's text: cut by the token limit, or abridged ("C. Ho tswa ha" for "D. Ho
    # tswa ha dikokwanahloko seleng") when long enough not to be a chance match.
    if (at_end and len(r) >= _MIN_CUT_CHARS) or (len(r) >= _MIN_ABRIDGED_CHARS and " " in r):
        return {i for i, c in enumerate(normed) if c.startswith(r) and c != r}
    return set()


def _check_letter(text: str, m: re.Match[str], n: int, choices: Sequence[str] | None,
                  strict: bool) -> tuple[str | None, str | None] | None:
    """(letter, named letter) of a letter slot, or None when the slot is no answer after all.

    A letter contradicted by the option text written after it ("B, <text of option A>") is no
    answer; a placeholder letter ("X: <text of option A>") takes the one option its text restates.
    `strict`: the letter must end its clause ("Choose A." but not "Choose A if ...").
    """
    letter = _letter(m)
    line = _LINE_END.match(text, m.end()).group(0)  # type: ignore[union-attr]
    at_end = not text[m.end() + len(line):].strip()
    restated = _restated(line, choices, at_end)
    index = LETTERS.find(letter)
    if index not in range(n):
        if len(restated) == 1:
            return LETTERS[restated.pop()], None
        return None, None
    second = _SECOND_RE.match(text, m.end())
    if second and _letter(second) != letter:
        return None, letter
    if restated and index not in restated:
        return None, letter
    if strict and not restated and not _CLAUSE_END_RE.match(text, m.end()):
        return None
    return letter, letter


def _resolve(text: str, end: int, n: int, choices: Sequence[str] | None,
             strict: bool = False) -> tuple[str | None, str | None, int] | None:
    """Resolve the statement whose phrase ends at `end`: (letter, named letter, end) or None."""
    m = _SLOT_RE.match(text, end)
    if m:
        checked = _check_letter(text, m, n, choices, strict)
        return None if checked is None else (*checked, m.end())
    if choices and not strict:
        fill = _FILL_RE.match(text, end)
        start = fill.end() if fill else end
        line = _LINE_END.match(text, start).group(0)  # type: ignore[union-attr]
        restated = _restated(line, choices, not text[start + len(line):].strip())
        if len(restated) == 1:
            letter = LETTERS[restated.pop()]
            return letter, letter, start + len(line)
    return None


def _statements(text: str, language: str, n: int, choices: Sequence[str] | None) -> list[_Statement]:
    found: list[_Statement] = []
    for rx, strict in ((_phrase_re(language), False), (_QUALIFIED_RE, False), (_CHOOSE_RE, True)):
        for m in rx.finditer(text):
            resolved = _resolve(text, m.end(), n, choices, strict)
            if resolved is not None:
                found.append(_Statement(m.start(), resolved[2], resolved[0], resolved[1]))
    # English "B is correct." / "D is the answer." is accepted for every language.
    for m in _IS_CORRECT_RE.finditer(text):
        letter = _letter(m)
        valid = LETTERS.find(letter) in range(n)
        found.append(_Statement(m.start(), m.end(), letter if valid else None, letter if valid else None))
    found += _introduced_options(text, n, choices)
    if choices:
        for m in _TEXT_IS_ANSWER_RE.finditer(text):
            subject = _norm_option(m.group("subject"))
            exact = [i for i, c in enumerate(choices) if subject and _norm_option(c) == subject]
            if len(exact) == 1:
                letter = LETTERS[exact[0]]
                found.append(_Statement(m.start("subject"), m.end(), letter, letter))
    return sorted(found, key=lambda s: s.start)


def _introduced_options(text: str, n: int, choices: Sequence[str] | None) -> list[_Statement]:
    """"... would have occurred is:" followed by one option line (not a list of them)."""
    found = []
    for m in _INTRO_RE.finditer(text):
        if _LISTING_INTRO_RE.search(m.group("intro")):
            continue
        lines = [ln for ln in text[m.end():].splitlines() if ln.strip(_MARKDOWN_EDGE)]
        if not lines:
            continue
        first = _option_line(lines[0])
        if first is None or (len(lines) > 1 and _option_line(lines[1]) is not None):
            continue
        letter, rest = first
        index = LETTERS.find(letter)
        if index not in range(n):
            continue
        at_end = len(lines) == 1
        restated = _restated(rest, choices, at_end)
        ok = not rest or index in restated or not restated
        found.append(_Statement(m.start(), m.end() + len(lines[0]), letter if ok else None, letter))
    return found


def _decide(text: str, statements: list[_Statement]) -> str | None:
    """The last statement's letter, unless the statements conflict without a marked revision.

    Statements naming three or more different letters are a walk through the options, not an
    answer. Two different letters: the later one wins when a revision is marked between them
    ("wait", "actually", ...) or enough reasoning separates them; otherwise they conflict.
    """
    final = statements[-1]
    if final.letter is None:
        return None
    named = [s for s in statements if s.named is not None]
    if len({s.named for s in named}) >= 3:
        return None
    earlier = [s for s in named if s.named != final.named and s.start < final.start]
    if not earlier:
        return final.letter
    between = text[earlier[-1].end : final.start]
    # Reasoning is counted on the lines between the two statements' lines: the rest of an answer line
    # (a restated option) is not a new round of reasoning.
    after, before = text.find("\n", earlier[-1].end), text.rfind("\n", 0, final.start)
    gap = text[after:before] if 0 <= after < before else between
    if _REVISION_RE.search(between) or len(_WORD_RE.findall(gap)) >= _REVISION_WORDS:
        return final.letter
    return None


def _option_line(line: str) -> tuple[str, str] | None:
    m = _OPTION_LINE_RE.match(line.strip(_MARKDOWN_EDGE))
    if not m:
        return None
    return _letter(m), m.group("rest").strip(_MARKDOWN_EDGE)


def _option_line_answer(text: str, n: int, choices: Sequence[str] | None, truncated: bool) -> _Statement | None:
    """The last option line ("B", "(B) Mars", "B. Mars") as a statement when it is an answer, else None.

    It is no answer when other options are listed too (the model was re-listing or walking through
    them), after a listing introduction ("Let's look at the options:"), when its text is another
    option's, or when the output was cut at the token limit on or inside it. Text may follow it
    only when the line restates its option in full ("C. 924 Hz" and then one more sentence).
    """
    lines = [m for m in _LINE_RE.finditer(text) if m.group(0).strip(_MARKDOWN_EDGE)]
    found = [(i, opt) for i, m in enumerate(lines) if (opt := _option_line(m.group(0))) is not None]
    if not found:
        return None
    at, (letter, rest) = found[-1]
    if any(other != letter for _, (other, _) in found):
        return None
    index = LETTERS.find(letter)
    if index not in range(n):
        return None
    if at > 0 and lines[at - 1].group(0).strip(_MARKDOWN_EDGE).endswith(":"):
        return None
    statement = _Statement(lines[at].start(), lines[at].end(), letter, letter)
    last = at == len(lines) - 1
    known = bool(rest and choices and index < len(choices))
    restated = _restated(rest, choices, last) if known else set()
    full = known and index in restated and _norm_option(rest).startswith(_norm_option(choices[index]))
    if not last:
        return statement if full else None
    if truncated and not full:
        return None
    if known:
        # A restated option must agree with that option's text, or it is prose that starts with "A.".
        r, c = _norm_option(rest), _norm_option(choices[index])
        if not (c and (c in r or r in c)) or (restated and index not in restated):
            return None
    return statement


def extract_answer(
    text: str,
    n_choices: int = 4,
    choices: Sequence[str] | None = None,
    language: str = "en",
    truncated: bool = False,
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
    # An answer given as an option line takes part too: it may agree or conflict with the statements.
    line = _option_line_answer(folded, n, choices, truncated)
    if line is not None:
        statements = sorted([*statements, line], key=lambda s: s.start)
    return _decide(folded, statements) if statements else None


def answer_status(extracted: str | None, gold_letter: str) -> str:
    """correct / wrong / no_answer: the `Sample.status` of an extracted letter against the gold letter."""
    if not extracted:
        return "no_answer"
    return "correct" if extracted.strip().upper() == gold_letter.strip().upper() else "wrong"
