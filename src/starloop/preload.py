"""Preloaded generations (`trainer.preload_data_for_training` / `_for_val`): read and checked against the run.

A preload file comes from another run or another tool, so it is checked before it is used: every
question id belongs to the run's data (rows of questions outside the run's limited question set are
left out), `correct` agrees with `extracted` and `gold`, and reward columns hold finite numbers. A bad
value stops the command with one line naming the file, row and column.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from starloop.errors import DataError
from starloop.records import Question, Sample, read_samples
from starloop.rewards import REWARDS

log = logging.getLogger("starloop.preload")

# Columns read as rewards (a preloaded reward is used as is; an empty cell is computed by the model).
REWARD_COLUMNS = (*REWARDS, "reward", "advantage")  # the registered rewards and two generic names


def _columns(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def read_preload(path: str | Path, questions: Sequence[Question], key: str,
                 split_questions: Sequence[Question] | None = None) -> list[Sample]:
    """Samples of `path` for `questions` (the run's questions of that split), checked.

    `split_questions`: every question of the split (before limits); an id outside it is refused, an id in
    it but not in `questions` is left out. `key`: the config key that named the file (for messages).
    """
    path = Path(path)
    samples = read_samples(path)
    if not samples:
        raise DataError(path, "no rows (a header only): nothing to preload")
    cols = set(_columns(path))
    if "correct" not in cols:
        raise DataError(path, f"missing column correct (which samples are right: needed by {key})")
    wanted = {q.id: q for q in questions}
    known = {q.id for q in split_questions} if split_questions is not None else set(wanted)
    kept = []
    for row, s in enumerate(samples, start=2):
        if s.question_id not in known:
            raise DataError(path, f"column question_id: {s.question_id!r} is not a question of this run's data "
                                  "(another dataset, language or split?)", row=row)
        q = wanted.get(s.question_id)
        if "gold" in cols and q is not None and s.gold and s.gold != q.gold_letter:
            raise DataError(path, f"column gold: {s.gold!r}, but the answer of {s.question_id} is "
                                  f"{q.gold_letter!r}", row=row)
        gold = s.gold or (q.gold_letter if q is not None else "")
        if "extracted" in cols and gold and s.correct != (s.extracted.strip() == gold):
            raise DataError(path, f"column correct: {s.correct} disagrees with extracted {s.extracted!r} and gold "
                                  f"{gold!r}", row=row)
        for col in cols:
            if col in REWARD_COLUMNS or col.startswith("logp_"):
                v = s.extra.get(col, "")
                if v == "" or v is None:
                    continue
                if not isinstance(v, float) or not math.isfinite(v):
                    raise DataError(path, f"column {col}: {v!r} is not a finite number", row=row)
        if q is not None:
            kept.append(s)
    if not kept:
        raise DataError(path, f"none of its questions is among this run's {len(wanted)} questions (raise "
                              "trainer.train_limit / trainer.val_limit / data.limit, or preload another file)")
    if len(kept) < len(samples):
        log.info("%s: %d of %d rows are for questions outside this run's question set; left out", path,
                 len(samples) - len(kept), len(samples))
    return kept
