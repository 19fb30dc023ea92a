"""Logical splits (train/val/heldout from a source's native dev/val/test), subject filter, seeded limit.

- `test`, `dev`: the native split.
- `heldout`: a seeded fraction (`data.heldout_fraction`) of the native `test`, per subject.
- `train`: the native train split if the source has one, else native `test` minus `heldout`.
- `val`: the native val split if the source has one, else `heldout`.
So `train` and `val` never share a row.

The held-out choice depends only on `data.seed` and the language-free aligned id (never on `limit`,
`subjects` or the language), so translations of one question land on the same side. Two refinements keep
the held-out set clean: exact duplicate rows (same question and choices) of a subject go to the same side,
and `test` rows that repeat a native `val` row are held out, so no val question is ever trained on (MMLU has
13 such rows).

`limit` takes a prefix of a seeded order keyed on the aligned id: `limit=50` draws across subjects, a
smaller limit is a prefix of a larger one, and every language gets the same questions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from starloop.data.rows import aligned_id, clean_subject
from starloop.errors import ConfigError
from starloop.records import Question

LOGICAL_SPLITS = ("train", "val", "test", "dev", "heldout")


def _hash(seed: int, purpose: str, key: str) -> int:
    # sha256, not hash(): Python salts str hashes per process.
    return int.from_bytes(hashlib.sha256(f"{seed}\0{purpose}\0{key}".encode()).digest()[:8], "big")


def _fingerprint(q: Question) -> tuple[str, tuple[str, ...]]:
    return (q.question, q.choices)


def heldout_ids(test: list[Question], val: list[Question] | None, fraction: float, seed: int) -> set[str]:
    """Aligned ids of the held-out part of `test`: round(fraction * n) rows per subject (at least 1 when
    fraction > 0 and the subject has 2+ rows), duplicates kept together, val repeats always held out."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("data.heldout_fraction", f"must be in [0, 1), got {fraction}")
    val_prints = {(q.subject, _fingerprint(q)) for q in val or []}
    by_subject: dict[str, dict[tuple[str, tuple[str, ...]], list[str]]] = {}
    for q in test:
        by_subject.setdefault(q.subject, {}).setdefault(_fingerprint(q), []).append(aligned_id(q))
    held: set[str] = set()
    for subject, groups in by_subject.items():
        n = sum(len(g) for g in groups.values())
        target = round(fraction * n)
        if fraction > 0 and n >= 2:
            target = max(target, 1)
        forced = [g for fp, g in groups.items() if (subject, fp) in val_prints]
        rest = [g for fp, g in groups.items() if (subject, fp) not in val_prints]
        count = 0
        for g in forced:
            held.update(g)
            count += len(g)
        for g in sorted(rest, key=lambda g: (_hash(seed, "heldout", g[0]), g[0])):
            if count >= target:
                break
            held.update(g)
            count += len(g)
    return held


def check_split(split: str, cfg: object) -> str:
    """The logical split name (`validation` -> `val`), or ConfigError naming the config key that holds it."""
    s = str(split).strip().lower()
    s = {"validation": "val", "valid": "val", "held_out": "heldout", "held-out": "heldout"}.get(s, s)
    if s not in LOGICAL_SPLITS:
        key = next(
            (f"data.{k}" for k in ("split", "train_split", "val_split") if getattr(cfg, k, None) == split),
            "data.split",
        )
        raise ConfigError(key, f"unknown split {split!r}; choose one of {', '.join(LOGICAL_SPLITS)}")
    return s


def check_subjects(subjects: Iterable[str] | str | None, present: Iterable[str]) -> set[str] | None:
    """The wanted subjects in canonical spelling (`High School Biology` -> `high_school_biology`), None for
    all; a subject not in `present` raises ConfigError on `data.subjects` listing valid ones."""
    if not subjects:
        return None
    wanted = {clean_subject(s) for s in ([subjects] if isinstance(subjects, str) else subjects)}
    have = sorted(set(present))
    unknown = sorted(wanted - set(have))
    if unknown:
        shown = ", ".join(have[:12]) + (f", ... ({len(have)} in all)" if len(have) > 12 else "")
        raise ConfigError("data.subjects", f"unknown subject(s) {', '.join(unknown)}; valid: {shown}")
    return wanted


def filter_subjects(questions: list[Question], subjects: Iterable[str] | str | None) -> list[Question]:
    """Keep the given subjects (any spelling); unknown ones raise ConfigError."""
    keep = check_subjects(subjects, {q.subject for q in questions})
    return questions if keep is None else [q for q in questions if q.subject in keep]


def seeded_order(questions: list[Question], seed: int, language_order: list[str]) -> list[Question]:
    """A deterministic shuffle keyed on the aligned id, translations of one question kept together."""
    rank = {code: i for i, code in enumerate(language_order)}
    return sorted(
        questions,
        key=lambda q: (
            _hash(seed, "order", aligned_id(q)),
            aligned_id(q),
            rank.get(q.language, len(rank)),
            q.id,
        ),
    )


def apply_limit(questions: list[Question], limit: int | None) -> list[Question]:
    if limit is None:
        return questions
    if int(limit) < 0:
        raise ConfigError("data.limit", f"must be >= 0 or null, got {limit}")
    return questions[: int(limit)]
