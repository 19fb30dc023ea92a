"""Scored samples -> training data: SFT examples, preference pairs, or rewarded samples (pure functions)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starloop.degenerate import parse_flags
from starloop.errors import StarloopError
from starloop.records import PreferencePair, Sample

# Degenerate flags that disqualify a sample from training data when trainer.filter_degenerate is on.
BAD_FLAGS = {"repetition", "empty", "wrong_language", "truncated"}


@dataclass
class Example:
    """One training sequence: the loss covers `completion` only. `group` ties samples of one question."""

    prompt: str
    completion: str
    group: str
    reward: float = 0.0


def is_degenerate(s: Sample) -> bool:
    return bool(set(parse_flags(s.degenerate)) & BAD_FLAGS)


def reasoning_words(rationale: str) -> int:
    """Words before the rationale's last non-empty line (the answer line): 0 for a bare "The answer is (B)."."""
    lines = [ln for ln in rationale.strip().splitlines() if ln.strip()]
    return sum(len(ln.split()) for ln in lines[:-1])


def _reasoned(s: Sample, min_words: int) -> bool:
    return min_words <= 0 or reasoning_words(s.rationale) >= min_words


def by_question(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.question_id].append(s)
    return groups


def sft_examples(samples: Sequence[Sample], *, max_per_question: int | None = None, dedupe: bool = True,
                 filter_degenerate: bool = False, min_rationale_words: int = 0) -> list[Example]:
    """Correct rationales (rationalized ones included), hint-free prompts, in question order.

    min_rationale_words drops correct answers with less reasoning than that before the answer line
    (`reasoning_words`): on a model near chance, bare lucky guesses otherwise take over the data."""
    out: list[Example] = []
    for qid, group in by_question(samples).items():
        seen: set[str] = set()
        kept = 0
        for s in group:
            if not s.correct or (filter_degenerate and is_degenerate(s)) or not _reasoned(s, min_rationale_words):
                continue
            key = " ".join(s.rationale.split())
            if dedupe and key in seen:
                continue
            if max_per_question is not None and kept >= max_per_question:
                break
            seen.add(key)
            kept += 1
            out.append(Example(s.prompt, s.rationale, qid, 1.0))
    return out


def preference_pairs(samples: Sequence[Sample], *, pairing: str = "all", per_question: int = 4,
                     filter_degenerate: bool = False, min_rationale_words: int = 0) -> list[PreferencePair]:
    """Pairs (correct, wrong-or-unanswered) of one question.

    pairing: all = every chosen x rejected combination; one = the first pair; n = up to `per_question`
    pairs, cycling through chosen and rejected so that each is reused as little as possible.
    Degenerate samples (with filter_degenerate) and correct answers with less reasoning than
    min_rationale_words are never chosen, but remain good rejected examples when wrong.
    Hinted (rationalization) samples are never used: DPO wants on-policy pairs.
    """
    out: list[PreferencePair] = []
    for qid, group in by_question(samples).items():
        chosen = _unique([s for s in group if s.correct and not s.hinted and _reasoned(s, min_rationale_words)
                          and not (filter_degenerate and is_degenerate(s))])
        rejected = _unique([s for s in group if not s.correct and not s.hinted])
        if not chosen or not rejected:
            continue
        if pairing == "all":
            combos = [(c, r) for c in chosen for r in rejected]
        else:
            n = 1 if pairing == "one" else per_question
            total = min(n, len(chosen) * len(rejected))
            combos = [(chosen[i % len(chosen)], rejected[(i + i // len(chosen)) % len(rejected)])
                      for i in range(total)]
        out += [PreferencePair(qid, c.prompt, c.rationale, r.rationale) for c, r in combos]
    return out


def _unique(samples: list[Sample]) -> list[Sample]:
    seen, out = set(), []
    for s in samples:
        key = " ".join(s.rationale.split())
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def reward_examples(samples: Sequence[Sample], reward_column: str, *, filter_degenerate: bool = False,
                    degenerate_penalty: float = 0.0) -> list[Example]:
    """Every on-policy sample with its reward (for reinforce and weighted SFT).

    Rewards come from the scored generations CSV: `correct` or a reward column written by the score
    stage. Degenerate samples are dropped (filter_degenerate) or penalized (degenerate_penalty).
    """
    if reward_column != "correct" and any(reward_column not in s.extra for s in samples):
        raise StarloopError(f"generations have no '{reward_column}' reward column (score them with the model first)")
    out = []
    for s in samples:
        if s.hinted or (filter_degenerate and is_degenerate(s)):
            continue
        r = float(s.correct) if reward_column == "correct" else float(s.extra[reward_column])
        if degenerate_penalty and is_degenerate(s):
            r -= degenerate_penalty
        out.append(Example(s.prompt, s.rationale, s.question_id, r))
    return out
