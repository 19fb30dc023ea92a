"""Raw rows -> validated `Question`s: text cleaning, checks with file/row errors, stable unique ids.

Every loader (hendrycks CSV, hub datasets, local copies of them) funnels its rows through `Collector.add`, so
the same cleaning and the same checks apply whatever the source.

Question ids are `<prefix>/<split>/<subject>/<NNNN>`: prefix = source name, plus the language code for
multilingual sources (`mmlu/val/virology/0003`, `mmlu-afr/zu/val/virology/0003`); NNNN = 0-based position of
the row within its subject's file (or the row number the source itself gives). The last three parts (see
`aligned_id`) are shared by the translations of one question.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starloop.errors import DataError
from starloop.records import LETTERS, Question

_SPLIT_ALIASES = {
    "validation": "val",
    "valid": "val",
    "dev": "dev",
    "val": "val",
    "test": "test",
    "train": "train",
}

# Latin-1 bytes of UTF-8 text read as cp1252/Latin-1 ("Ã©" for "é", "Â§" for "§"): inherited by MMLU's
# professional_law files. "Ã"/"Â" followed by a Latin-1 symbol or accented letter never occurs in real text
# in any language here, so undoing it is safe.
_MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")


def native_split(name: str) -> str | None:
    """`validation`/`val` -> `val` etc.; None if `name` is no split name."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def _unmojibake(match: re.Match[str]) -> str:
    try:
        return match.group(0).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return match.group(0)


def clean_text(value: Any) -> str:
    """Strip, unify line endings, undo Latin-1 mojibake, normalise to NFC.

    NFC matters: some files write one letter two ways (Igbo `ụ`+U+0301 vs `ú`+U+0323); after NFC they are
    equal, so matching, de-duplication and tokenisation see one string.
    """
    if value is None:
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n").strip()
    if "\u00c2" in text or "\u00c3" in text:
        text = _MOJIBAKE.sub(_unmojibake, text)
    return unicodedata.normalize("NFC", text)


def clean_subject(value: Any) -> str:
    """`High School Biology` / `high-school-biology` -> `high_school_biology`."""
    return re.sub(r"[\s\-]+", "_", clean_text(value).lower())


def parse_choices(value: Any, where: Location) -> list[Any]:
    """A list of choices, also from its Python/JSON string form (AfriMMLU stores `"['a', 'b', ...]"`)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise DataError(
                where.path, "choices is neither a list nor a list literal", row=where.row
            ) from None
    if hasattr(value, "tolist"):  # numpy arrays from parquet/pandas
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(where.path, f"choices is a {type(value).__name__}, not a list", row=where.row)
    return list(value)


def answer_index(value: Any, n_choices: int, where: Location, allow_int: bool = False) -> int:
    """The 0-based answer index from a letter (`B`), or from an int when the source stores ints (cais/mmlu)."""
    letters = LETTERS[:n_choices]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if allow_int and (is_int or (isinstance(value, str) and value.strip().isdigit())):
        idx = int(value)
        if 0 <= idx < n_choices:
            return idx
        raise DataError(where.path, f"answer index {idx} is out of range 0-{n_choices - 1}", row=where.row)
    letter = clean_text(value).upper()
    if len(letter) != 1 or letter not in letters:
        raise DataError(
            where.path,
            f"answer {clean_text(value)!r} is not one of the choice letters {', '.join(letters)}",
            row=where.row,
        )
    return letters.index(letter)


@dataclass(frozen=True)
class Location:
    """Where a row came from, for error messages: a file (or hub dataset) and a 1-based row number."""

    path: str
    row: int | None = None

    def __str__(self) -> str:
        return self.path if self.row is None else f"{self.path}, row {self.row}"


class Collector:
    """Builds the questions of one native split of one language, checking each row and id uniqueness."""

    def __init__(self, prefix: str, split: str, language: str, source: str):
        self.prefix, self.split, self.language, self.source = prefix, split, language, source
        self.questions: list[Question] = []
        self._seen: dict[str, Location] = {}
        self._keys: dict[str, Location] = {}
        self._next: dict[str, int] = {}

    def add(
        self,
        where: Location,
        subject: Any,
        question: Any,
        choices: Sequence[Any],
        answer: Any,
        *,
        index: int | None = None,
        key: str | None = None,
        int_answer: bool = False,
    ) -> Question:
        """Validate one row and append its Question.

        `index`: the row's number within its subject as the source gives it (else the next free one);
        `key`: a row id the source promises unique (Global-MMLU `sample_id`), checked for repeats.
        """
        subj = clean_subject(subject)
        if not subj:
            raise DataError(where.path, "empty subject", row=where.row)
        text = clean_text(question)
        if not text:
            raise DataError(where.path, "empty question", row=where.row)
        opts = [clean_text(c) for c in choices]
        while opts and not opts[-1]:  # a 3-choice row padded with empty columns keeps letters A-C
            opts.pop()
        if sum(1 for o in opts if o) < 2:
            raise DataError(where.path, "fewer than 2 non-empty choices", row=where.row)
        if len(opts) > len(LETTERS):
            raise DataError(where.path, f"more than {len(LETTERS)} choices", row=where.row)
        ans = answer_index(answer, len(opts), where, allow_int=int_answer)
        if not opts[ans]:
            raise DataError(where.path, f"answer {LETTERS[ans]} points at an empty choice", row=where.row)

        if key is not None:
            if key in self._keys:
                raise DataError(
                    where.path, f"duplicate row id {key!r} (first at {self._keys[key]})", row=where.row
                )
            self._keys[key] = where
        if index is None:
            index = self._next.get(subj, 0)
        self._next[subj] = max(self._next.get(subj, 0), index + 1)
        qid = f"{self.prefix}/{self.split}/{subj}/{index:04d}"
        if qid in self._seen:
            raise DataError(
                where.path,
                f"duplicate question id {qid} (first at {self._seen[qid]}); the same subject and "
                "split appear twice",
                row=where.row,
            )
        self._seen[qid] = where
        q = Question(
            id=qid,
            subject=subj,
            language=self.language,
            question=text,
            choices=tuple(opts),
            answer=ans,
            source=self.source,
        )
        self.questions.append(q)
        return q


def id_prefix(source: str, language: str) -> str:
    """`mmlu` for the English-only sources in English; `<source>/<language>` otherwise."""
    return source if source in ("mmlu", "cais-mmlu") and language == "en" else f"{source}/{language}"


def aligned_id(question: Question | str) -> str:
    """The language-free tail of an id (`val/virology/0003`): equal for a question and its translations.

    For the bundled sets it is also equal between `mmlu` and the English rows of `mmlu-afr`.
    """
    qid = question.id if isinstance(question, Question) else question
    return "/".join(qid.split("/")[-3:])
