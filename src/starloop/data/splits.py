"""Logical splits (train/val/heldout from a source's native dev/val/test), subject filter, seeded limit.

- `test`, `dev`: the native split.
- `heldout`: a seeded fraction (`data.heldout_fraction`) of the native `test`, per subject.
- `train`: the native train split if the source has one, else native `test` minus `heldout`.
- `val`: the native val split if the source has one, else `heldout`.
So `train` and `val` never share a row.

The held-out choice depends only on `data.seed` and the language-free aligned id (never on `limit`,
`subjects` or the requested language), so translations of one question land on the same side. Rows that are
the same question (`fingerprint`: text and choice set, across subjects, and in any language of an aligned
set) go to the same side, and `test` rows that repeat a native `val` row are held out, so no val question is
ever trained on (MMLU files 12 of its val questions again in test, some under another subject).

`limit` takes a prefix of a seeded order keyed on the aligned id: `limit=50` draws across subjects, a
smaller limit is a prefix of a larger one, and every language gets the same questions.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from starloop.data.rows import aligned_id, clean_subject
from starloop.errors import ConfigError
from starloop.records import Question

LOGICAL_SPLITS = ("train", "val", "test", "dev", "heldout")


def _hash(seed: int, purpose: str, key: str) -> int:
    # sha256, not hash(): Python salts str hashes per process.
    return int.from_bytes(hashlib.sha256(f"{seed}\0{purpose}\0{key}".encode()).digest()[:8], "big")


def fingerprint(q: Question) -> tuple[str, tuple[str, ...]]:
    """What makes two rows the same question: the question text and the set of choices, each compared
    after NFKC, case folding and whitespace folding. The subject is not part of it (MMLU files some
    questions under two subjects), nor is the order of the choices."""
    return _norm(q.question), tuple(sorted(_norm(c) for c in q.choices))


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split())


class _Groups:
    """Union-find over aligned ids: rows that are the same question in any language end up together."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def heldout_ids(test: list[Question], val: list[Question] | None, fraction: float, seed: int) -> set[str]:
    """Aligned ids of the held-out part of `test`: round(fraction * n) rows per subject (at least 1 when
    fraction > 0 and the subject has 2+ rows).

    `test` and `val` may hold several languages of an aligned set: rows that are the same question
    (`fingerprint`) in any language, in any subject, form one group that lands on one side of the cut, and
    a group that contains a `val` row is always held out, so that `train` never shares a question with
    `val` or `heldout`."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("data.heldout_fraction", f"must be in [0, 1), got {fraction}")
    groups = _Groups()
    first: dict[tuple[str, tuple[str, tuple[str, ...]]], str] = {}
    for q in [*(val or []), *test]:
        key = (q.language, fingerprint(q))
        groups.union(first.setdefault(key, aligned_id(q)), aligned_id(q))
    val_roots = {groups.find(aligned_id(q)) for q in val or []}
    members: dict[str, set[str]] = {}
    subject_of: dict[str, str] = {}
    for q in test:
        members.setdefault(groups.find(aligned_id(q)), set()).add(aligned_id(q))
        subject_of[aligned_id(q)] = q.subject
    held: set[str] = set()
    for root, ids in members.items():
        if root in val_roots:
            held.update(ids)
    by_subject: dict[str, set[str]] = {}
    for root, ids in members.items():
        for a in ids:
            by_subject.setdefault(subject_of[a], set()).add(root)
    for subject in sorted(by_subject):
        rows = [a for a, s in subject_of.items() if s == subject]
        n = len(rows)
        target = round(fraction * n)
        if fraction > 0 and n >= 2:
            target = max(target, 1)
        count = sum(a in held for a in rows)
        for root in sorted(by_subject[subject], key=lambda r: (_hash(seed, "heldout", r), r)):
            if count >= target:
                break
            ids = members[root]
            if ids <= held:
                continue
            held.update(ids)
            count += sum(subject_of[a] == subject for a in ids)
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
