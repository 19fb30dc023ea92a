"""Degenerate-output detection: flags for generations that should not count as rationales.

The research notes' Yoruba runs started below chance because Llama 3.1 8B looped ("ṣe ṣe ṣe ...")
or counted ("carbon 2, 3, 4, ..., 13, ...") until the token limit. `detect` names such outputs so
the loop can report their rate and, optionally, drop them from training data. Flags:

- empty: blank or whitespace only.
- truncated: generation stopped at the token limit (the caller knows; passed in).
- repetition: a loop. Any of
  * a unit of 1-11 characters repeated >= 8 times in a row, covering >= 24 characters
    ("ṣe " x 8; character units also catch scripts written without spaces);
  * a unit of 12-100 characters repeated >= 4 times in a row (a sentence or clause loop);
  * in the last 200 tokens (words; single characters for CJK), fewer than 35% distinct word
    4-grams, given >= 60 tokens (near-exact loops that vary a little; ordinary prose scores > 90%);
  * a counting run: >= 10 numbers in a row with a constant non-zero step ("2, 3, 4, ..., 13").
  A unit of digits only must cover >= 40 characters ("10000000000000000000000" is a number), one
  without letters or digits (a markdown rule "-----") >= 200.
- no_answer: `extracted` is None or empty (the caller passes `extract_answer`'s result).
- wrong_language: the rationale is not in the expected language. Only flagged when confident, and
  never on texts under 40 letters / 25 words:
  * script: under 30% of the letters in the expected script (Ethiopic for am, Arabic for ar, ...);
  * Latin-script languages other than English: English stopwords make >= 20% of the words and
    over three times the share of the expected language's stopwords (or >= 30% when the language
    has no profile here); for English: under 5% English stopwords while another profile has >= 15%.

Scoring policy (`scoring.repetition`, `apply_repetition_policy`): under the default no_answer, an
output flagged as a repetition loop scores as no answer whatever letter extraction reads in it (a loop
that repeats "The answer is (B)" has not reasoned its way to B); `extracted` scores the letter.

All functions are pure; `FLAGS` fixes the order in which flags are reported.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from starloop.extract import fold
from starloop.prompts import language_info, normalize_language

FLAGS = ("empty", "truncated", "repetition", "no_answer", "wrong_language")
# Values of `scoring.repetition`: how an output flagged as a repetition loop is scored.
REPETITION_POLICIES = ("no_answer", "extracted")
# Separator of flags in the `Sample.degenerate` CSV column.
FLAG_SEP = ","

_SHORT_UNIT_RE = re.compile(r"(.{1,11}?)\1{7,}", re.DOTALL)
_LONG_UNIT_RE = re.compile(r"(.{12,100}?)\1{3,}", re.DOTALL)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER_SEP_RE = re.compile(r"^[\s,;]*(?:and\s+)?$")
# CJK ideographs, kana and Hangul syllables count as one token each; other scripts split on spaces.
_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")
_WORD_RE = re.compile(r"[^\W\d_]{2,}")

_MIN_SHORT_SPAN = 24
_MIN_DIGIT_SPAN = 40
_MIN_PUNCT_SPAN = 200
_TAIL_TOKENS = 200
_MIN_TAIL_TOKENS = 60
_MIN_DISTINCT_4GRAMS = 0.35
_MIN_COUNTING_RUN = 10
_MIN_LETTERS = 40
_MIN_WORDS = 25
_MIN_SCRIPT_SHARE = 0.30

# Letters of each script, as regex classes (counted with one findall each: a per-character Python
# loop was the slowest part of `detect`).
_SCRIPTS: dict[str, re.Pattern[str]] = {name: re.compile(f"[{ranges}]") for name, ranges in {
    "Latin": "A-Za-z\u00c0-\u02af\u1e00-\u1eff",  # with IPA letters (Bambara ɛ ɔ)
    "Ethiopic": "\u1200-\u139f\u2d80-\u2ddf\uab00-\uab2f",
    "Arabic": "\u0620-\u064a\u066e-\u06d3\u06fa-\u06ff\u0750-\u077f\u08a0-\u08ff",
    "Han": "\u3400-\u4dbf\u4e00-\u9fff",
    "Kana": "\u3040-\u30ff",
    "Hangul": "\u1100-\u11ff\uac00-\ud7af",
    "Cyrillic": "\u0400-\u04ff",
    "Greek": "\u0370-\u03ff",
    "Devanagari": "\u0900-\u097f",
    "Bengali": "\u0980-\u09ff",
}.items()}
_LETTER_RE = re.compile(r"[^\W\d_]")
# Scripts a language's text is written in ("Japanese" mixes kanji and kana).
_EXPECTED_SCRIPTS = {"Japanese": ("Han", "Kana"), "Han": ("Han",), "Hangul": ("Hangul", "Han")}

# Frequent function words, folded (no tone marks or accents) and lower-cased. Words shared with
# English are left out, so a hit says which of the two languages a text is in.
_STOPWORDS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "en": "the is of and to in that it for this are be with as not which on by an was or from at these "
          "can we they have has their its would because so answer correct option question therefore "
          "step if than also but more other what when there does only all each",
    "yo": "ni ti awon ati si ko ninu fun je pe lati yii kan naa tabi lo won wa se bi fi le gbogbo eyi "
          "idahun nitori sugbon tun ohun re ki nipa jade",
    "sw": "na ya wa kwa ni za katika la kuwa hii ambayo cha au kama hiyo lakini pia sana yake zaidi "
          "jibu kwamba hivyo ili huu hizi ndiyo",
    "zu": "ukuthi futhi kanye noma uma kodwa lokhu ngoba kakhulu ukuze impendulo kusho lapho kuyinto "
          "ngakho yini nje njengoba akukho kufanele lokho wonke ngokuthi kungani",
    "xh": "ukuba kwaye okanye ukuze kodwa njengoko kuba ngoko oku le lo kakhulu impendulo ngenxa xa "
          "apho nje kwi kule ukuthi",
    "af": "die van en het nie wat om te dat vir word met aan ook sy hulle kan antwoord hierdie",
    "ig": "na nke bu ya ka ndi ihe nwere maka ihi ma ga kwa ozo gi anyi dika aziza site otu",
    "sn": "ne kuti uye iyo ku kana asi zvakare nekuti zvino mhinduro kune pane chete izvi ichi saka",
    "st": "le ho ka ya ke ba hore sa tse ena hobane empa karabo kapa hape moo jwalo",
    "tn": "le go ka ya ke ba gore sa tse mo fa gonne mme karabo kgotsa gape jaaka",
    "ts": "ku hi na leswi swa ya ra wa leyi kumbe nhlamulo hikuva kambe kutani loko eka tanihi",
    "nso": "le go ka ya ke ba gore sa tse mo ge gobane eupsa karabo goba gape bjalo",
    "bm": "ye ka ni ko la be kɛ min ani walima jaabi fɛ tɛ sɔrɔ kan ma",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf fur im dem es auch als wird "
          "sind oder antwort wenn dass bei",
    "es": "el la de que en los se del las un por con no una su para es al lo como mas pero respuesta esta",
    "fr": "le la les de des et est en un une du que qui dans pour pas sur au par ce il reponse sont avec ne",
    "it": "il la di che un una per non sono del della le gli con si da risposta questo come anche",
    "pt": "de que do da em um uma para com nao os no na por mais se resposta sao isso",
    "id": "yang dan di ini itu dengan untuk dari dalam tidak adalah akan pada jawaban jawabannya atau "
          "juga karena ke bisa ada",
}.items()}
_STOPWORDS = {k: (v if k == "en" else v - _STOPWORDS["en"]) for k, v in _STOPWORDS.items()}


def _may_have_long_loop(text: str) -> bool:
    """Cheap prefilter for `_LONG_UNIT_RE` (slow on long texts): a 12-100 character unit repeated 4
    times puts some 12-gram at 4 positions with the same gap of at most 100."""
    counts = Counter(text[i : i + 12] for i in range(max(len(text) - 11, 0)))
    for gram, count in counts.items():
        if count < 4:
            continue
        positions = [m.start() for m in re.finditer(f"(?={re.escape(gram)})", text)]
        at = set(positions)
        for i, a in enumerate(positions):
            for b in positions[i + 1 :]:
                if b - a > 100:
                    break
                if a + 2 * (b - a) in at and a + 3 * (b - a) in at:
                    return True
    return False


def _has_loop(text: str) -> bool:
    patterns = [(_SHORT_UNIT_RE, _MIN_SHORT_SPAN)]
    if _may_have_long_loop(text):
        patterns.append((_LONG_UNIT_RE, 0))
    for pattern, min_span in patterns:
        for m in pattern.finditer(text):
            span = m.end() - m.start()
            unit = m.group(1)
            # Digit-only units ("0000...") need a longer span than words, punctuation a much longer one.
            needed = min_span if any(c.isalpha() for c in unit) else (
                _MIN_DIGIT_SPAN if any(c.isdigit() for c in unit) else _MIN_PUNCT_SPAN)
            if span >= max(min_span, needed):
                return True
    return False


def _low_tail_diversity(text: str) -> bool:
    tokens = [t.casefold() for t in _TOKEN_RE.findall(text)][-_TAIL_TOKENS:]
    if len(tokens) < _MIN_TAIL_TOKENS:
        return False
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return len(set(grams)) / len(grams) < _MIN_DISTINCT_4GRAMS


def _has_counting_run(text: str) -> bool:
    """True if >= _MIN_COUNTING_RUN numbers follow each other with one constant non-zero step."""
    run, step, prev = 1, None, None
    for m in _NUMBER_RE.finditer(text):
        value = float(m.group(0))
        if prev is not None and _NUMBER_SEP_RE.match(text[prev[1] : m.start()]):
            diff = value - prev[0]
            if diff != 0 and (step is None or diff == step):
                run, step = run + 1, diff
            else:
                run, step = (2, diff) if diff != 0 else (1, None)
        else:
            run, step = 1, None
        if run >= _MIN_COUNTING_RUN:
            return True
        prev = (value, m.end())
    return False


def is_repetitive(text: str) -> bool:
    """True for loops: repeated units, a low-diversity tail, or a counting run (thresholds above)."""
    text = unicodedata.normalize("NFC", text)
    return _has_loop(text) or _low_tail_diversity(text) or _has_counting_run(text)


def _script_shares(text: str) -> tuple[int, dict[str, float]]:
    """(number of letters, share of the letters in each script)."""
    total = len(_LETTER_RE.findall(text))
    if not total:
        return 0, {}
    return total, {name: len(rx.findall(text)) / total for name, rx in _SCRIPTS.items()}


def _stopword_share(words: Sequence[str], language: str) -> float:
    profile = _STOPWORDS.get(language)
    if not profile or not words:
        return 0.0
    return sum(w in profile for w in words) / len(words)


def is_wrong_language(text: str, expected_language: str) -> bool:
    """True when `text` is confidently not in `expected_language` (rules in the module docstring)."""
    lang = normalize_language(expected_language)
    script = language_info(lang).script  # unknown languages get English's entry: Latin
    n_letters, shares = _script_shares(text)
    if n_letters < _MIN_LETTERS:
        return False
    expected_scripts = _EXPECTED_SCRIPTS.get(script, (script,))
    if sum(shares.get(s, 0.0) for s in expected_scripts) < _MIN_SCRIPT_SHARE:
        return True
    if script != "Latin":
        return False
    words = [w.casefold() for w in _WORD_RE.findall(fold(text))]
    if len(words) < _MIN_WORDS:
        return False
    english = _stopword_share(words, "en")
    if lang == "en":
        others = max(_stopword_share(words, k) for k in _STOPWORDS if k != "en")
        return english < 0.05 and others >= 0.15
    if lang not in _STOPWORDS:
        return english >= 0.30
    return english >= 0.20 and english > 3 * _stopword_share(words, lang)


def detect(
    text: str,
    *,
    truncated: bool = False,
    expected_language: str | None = None,
    extracted: str | None = None,
) -> list[str]:
    """Degenerate flags of one generation, in `FLAGS` order (empty list = looks like a rationale).

    extracted: the letter `extract_answer` read from `text`; None (the default) flags no_answer, so
    pass it. expected_language: the language the rationale should be in (the question's language
    for the native strategy, "en" for english/translate); None skips the language check.
    """
    flags: set[str] = set()
    if truncated:
        flags.add("truncated")
    if not extracted:
        flags.add("no_answer")
    if not text or not text.strip():
        flags.add("empty")
    else:
        if is_repetitive(text):
            flags.add("repetition")
        if expected_language and is_wrong_language(text, expected_language):
            flags.add("wrong_language")
    return [f for f in FLAGS if f in flags]


def apply_repetition_policy(extracted: str | None, flags: Sequence[str],
                            policy: str = "no_answer") -> tuple[str | None, list[str]]:
    """(scored letter, flags) of an output under `scoring.repetition`.

    no_answer: a repetition-flagged output scores None and gains the no_answer flag; extracted: the
    extracted letter and flags unchanged.
    """
    if policy not in REPETITION_POLICIES:
        raise ValueError(f"unknown repetition policy {policy!r}; use one of {', '.join(REPETITION_POLICIES)}")
    if policy == "extracted" or "repetition" not in flags:
        return extracted or None, list(flags)
    return None, [f for f in FLAGS if f in {*flags, "no_answer"}]


def format_flags(flags: Sequence[str]) -> str:
    """Flags as one CSV cell ("repetition,truncated"), for `Sample.degenerate`."""
    return FLAG_SEP.join(flags)


def parse_flags(cell: str | Sequence[str] | None) -> list[str]:
    """Flags back from a CSV cell (or a list, returned as is)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):  # pandas reads empty cells as NaN
        return []
    if isinstance(cell, str):
        return [f.strip() for f in cell.split(FLAG_SEP) if f.strip()]
    return list(cell)


def degenerate_rates(flag_lists: Iterable[Sequence[str] | str]) -> dict[str, float]:
    """Fraction of generations carrying each flag, plus "any" (at least one flag); 0.0 when empty.

    Accepts lists from `detect` or `Sample.degenerate` cells.
    """
    counts = dict.fromkeys((*FLAGS, "any"), 0)
    n = 0
    for item in flag_lists:
        flags = set(parse_flags(item))
        n += 1
        for f in flags:
            counts[f] = counts.get(f, 0) + 1
        if flags:
            counts["any"] += 1
    return {k: (v / n if n else 0.0) for k, v in counts.items()}
