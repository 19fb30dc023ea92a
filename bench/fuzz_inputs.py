"""Shared pieces of `bench/fuzz.py`: the valid inputs every broken case starts from, the case records and
the case builder (`Gen`) the generators in fuzz_data.py, fuzz_settings.py and fuzz_cases.py add to."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


SUBJECTS = ("anatomy", "virology")
SPLITS = ("dev", "val", "test")
ROWS = 5  # rows per subject file
# A tiny run folder every case points out= at (created once, by a real run).
RUN_ARGS = ["model=tiny-random", "model.device=cpu", "data.limit=4", "trainer.iterations=1",
            "trainer.samples_per_question=1", "trainer.max_new_tokens=4", "eval.max_new_tokens=4",
            "trainer.val_limit=2", "progress=false"]


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]  # command first
    needles: tuple[str, ...]  # each must appear in the error line
    out: Path | None  # a run folder that must stay untouched (None: not checked)
    inprocess_only: bool = False
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    real: bool = False  # run for real (Hydra not stubbed): the fault happens while the run works


@dataclass
class Result:
    case: Case
    code: object
    stderr: str
    problems: list[str] = field(default_factory=list)


# --- valid inputs ----------------------------------------------------------------------------------


def q_row(subject: str, split: str, i: int) -> list[str]:
    return [f"{subject} {split} question {i}: which option is right?", f"option one {i}", f"option two {i}",
            f"option three {i}", f"option four {i}", "ABCD"[i % 4]]


def csv_bytes(rows: list[list[str]]) -> bytes:
    # Every field quoted, so a file cut anywhere inside a row is malformed (never a shorter valid row).
    return "".join(",".join('"' + f.replace('"', '""') + '"' for f in r) + "\n" for r in rows).encode("utf-8")


def write_dataset(folder: Path) -> None:
    for split in SPLITS:
        d = folder / split
        d.mkdir(parents=True, exist_ok=True)
        for s in SUBJECTS:
            (d / f"{s}_{split}.csv").write_bytes(csv_bytes([q_row(s, split, i) for i in range(ROWS)]))


def hub_rows(n: int = ROWS) -> list[dict]:
    return [{"sample_id": f"anatomy/test/{i}", "subject": "anatomy", "question": f"Global question {i}?",
             "option_a": "a", "option_b": "b", "option_c": "c", "option_d": "d", "answer": "ABCD"[i % 4]}
            for i in range(n)]


def write_preload(path: Path, n: int = 4) -> None:
    from starloop.records import Sample, write_samples

    write_samples(path, [Sample(question_id=f"mmlu/train/anatomy/{i:04d}", sample_index=0,
                                prompt=f"prompt {i}", rationale=f"rationale {i}. The answer is (A)",
                                extracted="A", gold="A", correct=True, status="correct", n_tokens=7)
                         for i in range(n)])


def snapshot(folder: Path | None) -> dict:
    if folder is None or not folder.exists():
        return {}
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file():
            st = p.stat()
            snap[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            snap[rel] = "dir"
    return snap




class Gen:
    def __init__(self, root: Path, rng: random.Random, run: Path, data_ok: Path, preload_ok: Path):
        self.root, self.rng, self.run, self.data_ok, self.preload_ok = root, rng, run, data_ok, preload_ok
        self.cases: list[Case] = []
        self.n = 0

    def folder(self, kind: str) -> Path:
        self.n += 1
        d = self.root / "cases" / f"{kind}_{self.n:04d}"
        d.mkdir(parents=True)
        return d

    def base(self, command: str, *extra: str, out: Path | None = None) -> list[str]:
        return [command, *RUN_ARGS, f"data.path={self.data_ok}", *extra, f"out={out or self.run}"]

    def add(self, category: str, name: str, argv: list[str], needles, out: Path | None = None, **kw) -> None:
        self.cases.append(Case(category, name, argv, tuple(needles), self.run if out is None else out, **kw))
