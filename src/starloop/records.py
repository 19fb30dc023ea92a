"""Records passed between stages, and their CSV files (written atomically, read back with pandas)."""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from starloop.errors import DataError
from starloop.io import atomic_path

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question. `answer` indexes `choices`."""

    id: str
    subject: str
    language: str
    question: str
    choices: tuple[str, ...]
    answer: int
    source: str = ""

    @property
    def gold_letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]


@dataclass
class Sample:
    """One generated rationale for one question, scored.

    `status` is correct / wrong / no_answer. `hinted` marks rationalization samples (generated with
    the gold answer as a hint; `prompt` is the hint-free prompt saved for training).
    """

    question_id: str
    sample_index: int
    prompt: str
    rationale: str
    extracted: str = ""
    gold: str = ""
    correct: bool = False
    status: str = "no_answer"
    hinted: bool = False
    language: str = ""
    subject: str = ""
    n_tokens: int = 0
    truncated: bool = False
    degenerate: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SAMPLE_COLUMNS = [f.name for f in fields(Sample) if f.name != "extra"]
_BOOL_COLUMNS = {"correct", "hinted", "truncated"}
_INT_COLUMNS = {"sample_index", "n_tokens"}
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no", ""}


def write_samples(path: str | os.PathLike, samples: list[Sample]) -> None:
    """Write samples as CSV, one row per sample; `extra` keys become extra columns (e.g. rewards)."""
    extra_cols: list[str] = []
    for s in samples:
        for k in s.extra:
            if k not in extra_cols and k not in SAMPLE_COLUMNS:
                extra_cols.append(k)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_COLUMNS + extra_cols)
        w.writeheader()
        for s in samples:
            row = {k: v for k, v in asdict(s).items() if k != "extra"}
            row.update({k: s.extra.get(k, "") for k in extra_cols})
            w.writerow(row)


def read_samples(path: str | os.PathLike) -> list[Sample]:
    """Read a generations CSV written by `write_samples` (or preloaded from another run).

    Missing required columns or malformed values raise DataError naming the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "generations file not found")
    required = {"question_id", "prompt", "rationale"}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, strict=True)  # strict: an unterminated quote (truncated file) is an error
            cols = set(reader.fieldnames or [])
            missing = sorted(required - cols)
            if missing:
                raise DataError(path, f"missing column(s) {', '.join(missing)}")
            out = []
            for i, row in enumerate(reader, start=2):
                out.append(_row_to_sample(path, i, row))
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(path, f"malformed CSV: {e}", row=reader.line_num or None) from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    return out


def _row_to_sample(path: Path, row_no: int, row: dict[str, str]) -> Sample:
    known = {f.name for f in fields(Sample)}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in row.items():
        if k is None:
            raise DataError(path, "more fields than header columns", row=row_no)
        if v is None:
            raise DataError(path, f"fewer fields than header columns (no {k}; file truncated?)", row=row_no)
        if k in known:
            if k in _BOOL_COLUMNS:
                b = str(v).strip().lower()
                if b not in _TRUE | _FALSE:
                    raise DataError(path, f"column {k} is not true or false: {v!r}", row=row_no)
                kwargs[k] = b in _TRUE
            elif k in _INT_COLUMNS:
                try:
                    kwargs[k] = int(v) if v not in ("", None) else 0
                except ValueError:
                    raise DataError(path, f"column {k} is not an integer: {v!r}", row=row_no) from None
            else:
                kwargs[k] = v if v is not None else ""
        else:
            extra[k] = _maybe_float(v)
    if not kwargs.get("question_id"):
        raise DataError(path, "empty question_id", row=row_no)
    kwargs.setdefault("sample_index", 0)  # a preloaded file may number nothing
    return Sample(**kwargs, extra=extra)


def _maybe_float(v: str | None) -> Any:
    if v is None or v == "":
        return v
    try:
        return float(v)
    except ValueError:
        return v


@dataclass
class PreferencePair:
    """A chosen (correct) and a rejected (wrong or unanswered) rationale of one question."""

    question_id: str
    prompt: str
    chosen: str
    rejected: str
    # False when that rationale was cut by max_new_tokens: it is trained without an end-of-sequence token.
    chosen_eos: bool = True
    rejected_eos: bool = True
