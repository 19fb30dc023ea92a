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
    # False for a rationale cut by max_new_tokens: trained without an end-of-sequence token.
    eos: bool = True
    # Whether the sample's answer was right (rewarded samples; None where not recorded): for diagnostics only.
    correct: bool | None = None


def is_degenerate(s: Sample) -> bool:
    return bool(set(parse_flags(s.degenerate)) & BAD_FLAGS)


def reasoning_words(rationale: str) -> int:
    """Words before the rationale's last non-empty line (the answer line): 0 for a bare "The answer is (B)."."""
    lines = [ln for ln in rationale.strip().splitlines() if ln.strip()]
    return sum(len(ln.split()) for ln in lines[:-1])


def _reasoned(s: Sample, min_words: int) -> bool:
    return min_words <= 0 or reasoning_words(s.rationale) >= min_words


def _gains(s: Sample) -> bool:
    """The rationale makes the gold answer likelier than answering without one (reward column `gain` > 0)."""
    if "gain" not in s.extra:
        raise StarloopError("trainer.require_gain needs the 'gain' reward column (scored by the model)")
    return float(s.extra["gain"]) > 0


def _usable_chosen(s: Sample, filter_degenerate: bool, min_words: int, keep_truncated: bool,
                   require_gain: bool) -> bool:
    """A correct sample that may be imitated: with reasoning, not degenerate, ended by itself (a rationale
    cut by max_new_tokens would teach stopping at an arbitrary point), and helping when asked to."""
    return (s.correct and not (filter_degenerate and is_degenerate(s)) and _reasoned(s, min_words)
            and (keep_truncated or not s.truncated) and (not require_gain or _gains(s)))


def by_question(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.question_id].append(s)
    return groups


def sft_examples(samples: Sequence[Sample], *, max_per_question: int | None = None, dedupe: bool = True,
                 filter_degenerate: bool = False, min_rationale_words: int = 0, keep_truncated: bool = False,
                 require_gain: bool = False) -> list[Example]:
    """Correct rationales (rationalized ones included), hint-free prompts, in question order.

    min_rationale_words drops correct answers with less reasoning than that before the answer line
    (`reasoning_words`): on a model near chance, bare lucky guesses otherwise take over the data.
    Truncated samples are dropped unless keep_truncated (then trained without EOS); require_gain keeps
    only rationales whose `gain` reward is positive (the notes' "beat answering without one")."""
    out: list[Example] = []
    for qid, group in by_question(samples).items():
        seen: set[str] = set()
        kept = 0
        for s in group:
            if not _usable_chosen(s, filter_degenerate, min_rationale_words, keep_truncated, require_gain):
                continue
            key = " ".join(s.rationale.split())
            if dedupe and key in seen:
                continue
            if max_per_question is not None and kept >= max_per_question:
                break
            seen.add(key)
            kept += 1
            out.append(Example(s.prompt, s.rationale, qid, 1.0, eos=not s.truncated, correct=s.correct))
    return out


def preference_pairs(samples: Sequence[Sample], *, pairing: str = "all", per_question: int = 4,
                     filter_degenerate: bool = False, min_rationale_words: int = 0, keep_truncated: bool = False,
                     require_gain: bool = False) -> list[PreferencePair]:
    """Pairs (correct, wrong-or-unanswered) of one question.

    pairing: all = every chosen x rejected combination; one = the first pair; n = up to `per_question`
    pairs, every distinct pair used before any repeats and each sample as evenly as possible (`spread_pairs`).
    Chosen samples follow `sft_examples`' rules (degenerate, min_rationale_words, truncated, gain); a
    truncated or degenerate wrong answer remains a good rejected example (trained without EOS when cut).
    Hinted (rationalization) samples are never used: DPO wants on-policy pairs.
    """
    out: list[PreferencePair] = []
    for qid, group in by_question(samples).items():
        chosen = _unique([s for s in group if not s.hinted and _usable_chosen(
            s, filter_degenerate, min_rationale_words, keep_truncated, require_gain)])
        rejected = _unique([s for s in group if not s.correct and not s.hinted])
        if not chosen or not rejected:
            continue
        n = len(chosen) * len(rejected) if pairing == "all" else 1 if pairing == "one" else per_question
        out += [PreferencePair(qid, chosen[c].prompt, chosen[c].rationale, rejected[r].rationale,
                               chosen_eos=not chosen[c].truncated, rejected_eos=not rejected[r].truncated)
                for c, r in spread_pairs(len(chosen), len(rejected), n)]
    return out


def spread_pairs(n_chosen: int, n_rejected: int, n: int) -> list[tuple[int, int]]:
    """Up to n distinct (chosen, rejected) index pairs, each next one using the least-used samples.

    With 2 chosen x 3 rejected and n = 6: all six pairs, each chosen used 3 times and each rejected twice
    (pairs never repeat: n above n_chosen * n_rejected gives every pair once)."""
    used_c, used_r = [0] * n_chosen, [0] * n_rejected
    left = {(c, r) for c in range(n_chosen) for r in range(n_rejected)}
    out = []
    while left and len(out) < n:
        c, r = min(left, key=lambda p: (used_c[p[0]] + used_r[p[1]], max(used_c[p[0]], used_r[p[1]]), p))
        left.remove((c, r))
        used_c[c] += 1
        used_r[r] += 1
        out.append((c, r))
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
                    degenerate_penalty: float = 0.0, require_gain: bool = False) -> list[Example]:
    """Every on-policy sample with its reward (for reinforce and weighted SFT).

    Rewards come from the scored generations CSV: `correct` or a reward column written by the score
    stage. Degenerate samples are dropped (filter_degenerate) or penalized (degenerate_penalty);
    require_gain keeps only samples whose `gain` is positive. Truncated samples stay (they are on-policy
    and their reward says how they did) but are trained without EOS.
    """
    if reward_column != "correct" and any(reward_column not in s.extra for s in samples):
        raise StarloopError(f"generations have no '{reward_column}' reward column (score them with the model first)")
    out = []
    for s in samples:
        if s.hinted or (filter_degenerate and is_degenerate(s)) or (require_gain and not _gains(s)):
            continue
        r = float(s.correct) if reward_column == "correct" else float(s.extra[reward_column])
        if degenerate_penalty and is_degenerate(s):
            r -= degenerate_penalty
        out.append(Example(s.prompt, s.rationale, s.question_id, r, eos=not s.truncated, correct=s.correct))
    return out
