"""The score stage's model-based part: answer-likelihood rewards of sampled rationales.

For each sample, z is the rationale with its final answer line cut off, and the model scores the
answer line after it: log p(answer line with letter X | x, z) for every letter X. From those:

    answer_logprob       log p(y* | x, z)
    quiet_star           log p(y* | x, z) - mean_{z' of the same question} log p(y* | x, z')
    gain                 log p(y* | x, z) - log p(y* | x)            (no rationale)
    expected_likelihood  log sum_y D(y | x) p(y | x, z)              (D: trainer.label_dist)

The reward functions themselves are the pure functions of `starloop.rewards`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from starloop import prompts, rewards
from starloop.errors import DataError, StarloopError
from starloop.logprobs import answer_letter_logprobs
from starloop.oom import release_cached_memory
from starloop.records import LETTERS, Question, Sample

_MARK = "\u0000"


def answer_template(language: str) -> tuple[str, str]:
    """Split the localized answer line into (prefix, letter format), e.g. ('The answer is (', '{})')."""
    line = prompts.answer_line(_MARK, language)
    prefix, _, suffix = line.partition(_MARK)
    return prefix, "{}" + suffix


def strip_answer(rationale: str, language: str) -> str:
    """The rationale without its final answer statement (so the reward scores the answer, not a copy)."""
    prefix, _ = answer_template(language)
    candidates = [prefix.strip(), prompts.answer_line(_MARK, "en").partition(_MARK)[0].strip()]
    cut = -1
    for c in candidates:
        if c:
            m = list(re.finditer(re.escape(c.rstrip("(").strip()), rationale, flags=re.IGNORECASE))
            if m:
                cut = max(cut, m[-1].start())
    return rationale[:cut].rstrip() if cut >= 0 else rationale.rstrip()


def add_reward_columns(model, tok, samples: Sequence[Sample], questions: dict[str, Question],
                batch_size: int = 16, label_dist: str = "gold", label_smoothing: float = 0.0,
                soft_labels: dict[str, Sequence[float]] | None = None) -> None:
    """Write every reward column into `sample.extra` (in place). Hinted samples are scored too, but stay
    out of quiet_star's baseline. label_dist picks D(y|x) of expected_likelihood: gold, smoothed
    (label_smoothing), model (p(y|x) without a rationale) or file (`soft_labels`, question id -> D)."""
    if not samples:
        return
    by_lang: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_lang.setdefault(questions[s.question_id].language, []).append(i)
    n_max = max(len(q.choices) for q in questions.values())
    letter_lp = torch.full((len(samples), n_max), float("-inf"))
    base_lp: dict[str, torch.Tensor] = {}
    for lang, idx in by_lang.items():
        prefix, fmt = answer_template(lang)
        ctx = [samples[i].prompt + strip_answer(samples[i].rationale, lang) for i in idx]
        letter_lp[idx] = answer_letter_logprobs(model, tok, ctx, n_max, "\n" + prefix, letter_format=fmt,
                                                batch_size=batch_size)
        qids = sorted({samples[i].question_id for i in idx})
        prompts_by_q = {s.question_id: s.prompt for s in (samples[i] for i in idx)}
        no_rat = answer_letter_logprobs(model, tok, [prompts_by_q[q] for q in qids], n_max, prefix,
                                        letter_format=fmt, batch_size=batch_size)
        base_lp.update(dict(zip(qids, no_rat)))
    gold = torch.tensor([questions[s.question_id].answer for s in samples])
    n_choices = torch.tensor([len(questions[s.question_id].choices) for s in samples])
    no_rationale = torch.stack([base_lp[s.question_id] for s in samples])
    dist = label_distribution(label_dist, gold, n_choices, n_max, label_smoothing, no_rationale,
                              [s.question_id for s in samples], soft_labels)
    inputs = rewards.RewardInputs(
        logp_gold=letter_lp.gather(1, gold[:, None]).squeeze(1), logp_letters=letter_lp,
        logp_without=no_rationale.gather(1, gold[:, None]).squeeze(1), groups=[s.question_id for s in samples],
        on_policy=torch.tensor([not s.hinted for s in samples]), label_dist=dist)
    cols = {name: fn(inputs) for name, fn in rewards.REWARDS.items()}
    for name, values in cols.items():
        for s, v in zip(samples, values.tolist()):
            s.extra[name] = round(float(v), 6)
    for s, row in zip(samples, letter_lp.tolist()):
        s.extra["answer_dist"] = " ".join(f"{LETTERS[j]}:{v:.4f}" for j, v in enumerate(row) if v > float("-inf"))
    release_cached_memory(model)


def label_distribution(kind: str, gold: torch.Tensor, n_choices: torch.Tensor, n_max: int, eps: float,
                       no_rationale: torch.Tensor, qids: Sequence[str],
                       soft_labels: dict[str, Sequence[float]] | None) -> torch.Tensor:
    """D(y|x) per sample, [N, n_max] (trainer.label_dist)."""
    if kind == "gold":
        return rewards.smoothed_labels(gold, n_choices, n_max, 0.0)
    if kind == "smoothed":
        return rewards.smoothed_labels(gold, n_choices, n_max, eps)
    if kind == "model":
        return rewards.model_labels(no_rationale, n_choices)
    dist = torch.zeros(len(qids), n_max)
    for i, q in enumerate(qids):
        if soft_labels is None or q not in soft_labels:
            raise StarloopError(f"trainer.soft_labels: no label distribution for question {q}")
        row = list(soft_labels[q])[: int(n_choices[i])]
        dist[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return dist


def read_soft_labels(path: str | Path) -> dict[str, list[float]]:
    """trainer.soft_labels: a CSV with `question_id` and one column per option letter (A, B, ...); each row
    finite, non-negative and summing to 1 (within 1e-3). Bad input: DataError naming file, row and column."""
    import csv
    import math

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file (trainer.soft_labels)")
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        letters = [c for c in fields if c in LETTERS]
        if "question_id" not in fields or not letters:
            raise DataError(p, "needs a question_id column and option columns A, B, ...")
        out: dict[str, list[float]] = {}
        for row_no, row in enumerate(reader, start=2):
            vals = []
            for c in letters:
                try:
                    v = float(row[c]) if row[c] not in (None, "") else 0.0
                except ValueError:
                    raise DataError(p, f"row {row_no}, column {c}: {row[c]!r} is not a number") from None
                if not math.isfinite(v) or v < 0:
                    raise DataError(p, f"row {row_no}, column {c}: {v} is not a finite non-negative number")
                vals.append(v)
            if abs(sum(vals) - 1.0) > 1e-3:
                raise DataError(p, f"row {row_no}: the label distribution sums to {sum(vals):.4f}, not 1")
            out[str(row["question_id"])] = vals
    return out
