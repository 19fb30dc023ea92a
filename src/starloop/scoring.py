"""The score stage's model-based part: answer-likelihood rewards of sampled rationales.

For each sample, z is the rationale with its final answer line cut off, and the model scores the
answer line after it: log p(answer line with letter X | x, z) for every letter X. From those:

    answer_logprob       log p(y* | x, z)
    quiet_star           log p(y* | x, z) - mean_{z' of the same question} log p(y* | x, z')
    gain                 log p(y* | x, z) - log p(y* | x)            (no rationale)
    expected_likelihood  log sum_y D(y | x) p(y | x, z)              (D one-hot unless soft labels)

The reward functions themselves are the pure functions of `starloop.rewards`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from starloop import prompts, rewards
from starloop.logprobs import answer_letter_logprobs
from starloop.records import LETTERS, Question, Sample

REWARD_COLUMNS = ("answer_logprob", "quiet_star", "gain", "expected_likelihood")
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


def add_rewards(model, tok, samples: Sequence[Sample], questions: dict[str, Question],
                batch_size: int = 16, label_dists: dict[str, Sequence[float]] | None = None) -> None:
    """Write every reward column into `sample.extra` (in place). Hinted samples are scored too."""
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
    # Choices a question lacks (3-option rows among 4-option ones) get zero label mass.
    dist = torch.zeros(len(samples), n_max)
    for i, s in enumerate(samples):
        q = questions[s.question_id]
        if label_dists and s.question_id in label_dists:
            dist[i, : len(q.choices)] = torch.tensor(list(label_dists[s.question_id]), dtype=torch.float32)
        else:
            dist[i, q.answer] = 1.0
    logp_gold = letter_lp.gather(1, gold[:, None]).squeeze(1)
    groups = [s.question_id for s in samples]
    without = torch.stack([base_lp[s.question_id].gather(0, gold[i : i + 1]).squeeze(0)
                           for i, s in enumerate(samples)])
    cols = {
        "answer_logprob": rewards.answer_logprob_reward(logp_gold),
        "quiet_star": rewards.quiet_star_reward(logp_gold, groups),
        "gain": rewards.gain_reward(logp_gold, without),
        "expected_likelihood": rewards.expected_likelihood_reward(letter_lp, dist),
    }
    for name, values in cols.items():
        for s, v in zip(samples, values.tolist()):
            s.extra[name] = round(float(v), 6)
    for s, row in zip(samples, letter_lp.tolist()):
        s.extra["answer_dist"] = " ".join(f"{LETTERS[j]}:{v:.4f}" for j, v in enumerate(row) if v > float("-inf"))
