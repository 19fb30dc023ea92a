"""Rewards of sampled rationales: pure tensor functions, no model code.

Notation: x a question, z a sampled rationale, y* the gold answer letter, y a letter, K rationales per
question. Log-likelihood inputs come from `starloop.logprobs.answer_letter_logprobs`, which scores the
answer line after the rationale: logp_letters[n, c] = log p(" (c)" | x, z_n). Every function here treats
its inputs as constants (rewards are detached: gradients never flow through a reward).

Grouped inputs take either a [Q, K] tensor (K rationales of each of Q questions) or a flat [N] tensor
with `group_ids` [N] naming each sample's question (ints, or any hashables such as question ids);
groups of unequal size are fine in the flat form.

    correct              r = 1[answer(z) = y*]
    answer_logprob       r = log p(y* | x, z)
    quiet_star           r = log p(y* | x, z) - mean_{z' in group, on-policy} log p(y* | x, z')
    gain                 r = log p(y* | x, z) - log p(y* | x)                         (no rationale)
    expected_likelihood  r = log E_{y ~ D(y|x)} p(y | x, z) = log sum_y D(y|x) p(y | x, z)

Under a mean or leave-one-out baseline (reinforce), answer_logprob, quiet_star and gain give identical
advantages: they differ by a per-question constant (the group mean, or log p(y* | x)), which the baseline
removes. They differ under baseline=none, and as filters (gain > 0, trainer.require_gain).

Why expected_likelihood (the research notes): with r = log p(y* | x, z), a rationale that just asserts
"the answer is X" is rewarded whenever X happens to be right, while a rationale that states real
uncertainty is never preferred; and the reward is maximised by the rationale reproducing the reward
model's own answer distribution. Scoring z against a distribution D(y | x) of valid answers instead --
the gold letter with label smoothing, the model's own answer distribution without a rationale, or
per-question soft labels -- rewards rationales that put mass where D does, not only on one letter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

GroupIds = Tensor | Sequence[Hashable]


def as_reward(x: Tensor) -> Tensor:
    """Detached, floating (float32 at least; float64 stays float64)."""
    return x.detach().to(torch.promote_types(x.dtype, torch.float32))


def group_index(group_ids: GroupIds, device: torch.device | None = None) -> Tensor:
    """Dense group index in [0, G) for each sample, [N] int64 (only equality of ids matters)."""
    if isinstance(group_ids, Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].to(device or group_ids.device)
    lookup: dict[Hashable, int] = {}
    index = [lookup.setdefault(g, len(lookup)) for g in group_ids]
    return torch.tensor(index, dtype=torch.long, device=device)


def group_sum_count(values: Tensor, group_ids: GroupIds | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample (sum over its group, size of its group), same shape as `values`.

    values: [Q, K] (group_ids None: each row is a group) or [N] with group_ids [N]."""
    values = as_reward(values)
    if group_ids is None:
        if values.dim() != 2:
            raise ValueError(
                f"grouped values need shape [Q, K] or group_ids; got shape {tuple(values.shape)}"
            )
        sums = values.sum(dim=-1, keepdim=True).expand_as(values)
        return sums, torch.full_like(values, values.shape[-1])
    index = group_index(group_ids, values.device)
    if index.shape != values.shape:
        raise ValueError(f"group_ids shape {tuple(index.shape)} != values shape {tuple(values.shape)}")
    n_groups = int(index.max()) + 1 if index.numel() else 0
    sums = values.new_zeros(n_groups).index_add(0, index, values)
    counts = values.new_zeros(n_groups).index_add(0, index, torch.ones_like(values))
    return sums[index], counts[index]


def group_mean(values: Tensor, group_ids: GroupIds | None = None) -> Tensor:
    """Mean over each sample's group, the sample included; same shape as `values`."""
    sums, counts = group_sum_count(values, group_ids)
    return sums / counts


def answer_logprob_reward(logp_answer: Tensor) -> Tensor:
    """r = log p(y* | x, z). logp_answer: [...] log-prob of the gold answer line after the rationale."""
    return as_reward(logp_answer)


def quiet_star_reward(logp_answer: Tensor, group_ids: GroupIds | None = None,
                      on_policy: Tensor | None = None) -> Tensor:
    """Quiet-STaR's reward, adapted to multiple choice (research notes):

        r_i = log p(y* | x, z_i) - mean_{j in group(i), on_policy_j} log p(y* | x, z_j)

    The baseline is the mean over the question's on-policy rationales *including z_i* (Quiet-STaR's
    choice, not leave-one-out). Hinted (rationalization) samples are off-policy: they get a reward
    against the same baseline but never enter it (on_policy False). A group with no on-policy sample gets
    its own mean. logp_answer: [Q, K], or [N] with group_ids; on_policy: bool, same shape (None = all)."""
    logp = as_reward(logp_answer)
    if on_policy is None:
        return logp - group_mean(logp, group_ids)
    mask = on_policy.to(logp.device, torch.bool)
    on_sums, _ = group_sum_count(torch.where(mask, logp, torch.zeros_like(logp)), group_ids)
    n_on, _ = group_sum_count(mask.to(logp.dtype), group_ids)
    baseline = torch.where(n_on > 0, on_sums / n_on.clamp(min=1), group_mean(logp, group_ids))
    return logp - baseline


def gain_reward(logp_with: Tensor, logp_without: Tensor) -> Tensor:
    """Gain of reasoning over answering directly:

        r_{q,k} = log p(y* | x_q, z_{q,k}) - log p(y* | x_q)

    logp_with: [Q, K] (or [N]); logp_without: [Q] (broadcast over K) or the same shape as logp_with.
    r <= 0 marks rationales that do not help, which the notes propose to drop."""
    with_ = as_reward(logp_with)
    without = as_reward(logp_without)
    if without.dim() == with_.dim() - 1:
        without = without.unsqueeze(-1)
    return with_ - without


def expected_likelihood_reward(logp_letters: Tensor, label_dist: Tensor) -> Tensor:
    """Expected likelihood under a distribution of valid answers (research notes, aleatoric case):

        r(x, z) = log E_{y ~ D(y|x)} p(y | x, z) = logsumexp_y [ log D(y|x) + log p(y | x, z) ]

    computed in log space (letters with D = 0 contribute exp(-inf) = 0). A one-hot D on y* gives
    log p(y* | x, z), i.e. `answer_logprob_reward`.

    logp_letters: [N, C] log p(letter c | x, z_n); label_dist: [N, C] (or [C]) rows summing to 1.
    Returns [N].
    """
    logp = as_reward(logp_letters)
    log_d = torch.log(as_reward(label_dist).to(logp.device))
    return torch.logsumexp(logp + log_d, dim=-1)


def smoothed_labels(gold: Tensor, n_choices: Tensor, n_max: int, eps: float) -> Tensor:
    """D(y|x) = 1 - eps on the gold option, eps / (C - 1) on each other option of the question.

    gold, n_choices: [N] ints; returns [N, n_max] (options a question lacks get 0). eps = 0: one-hot."""
    cols = torch.arange(n_max)[None, :]
    n = n_choices.to(torch.float32)[:, None]
    rest = torch.where(n > 1, eps / (n - 1).clamp(min=1), torch.zeros_like(n))
    dist = torch.where(cols < n_choices[:, None], rest.expand(-1, n_max), torch.zeros(1))
    dist = dist.scatter(1, gold[:, None], torch.where(n > 1, 1 - eps, torch.ones_like(n)))
    return dist


def model_labels(logp_no_rationale: Tensor, n_choices: Tensor) -> Tensor:
    """D(y|x) = the model's own answer distribution without a rationale, renormalised over the question's
    options: softmax of log p(letter | x). logp_no_rationale: [N, n_max]; returns [N, n_max]."""
    cols = torch.arange(logp_no_rationale.shape[1])[None, :]
    masked = torch.where(cols < n_choices[:, None], as_reward(logp_no_rationale), torch.tensor(float("-inf")))
    return torch.softmax(masked, dim=-1)


@dataclass(frozen=True)
class RewardInputs:
    """What the score stage computes once for every sample (N samples, C option letters)."""

    logp_gold: Tensor  # [N] log p(y* | x, z)
    logp_letters: Tensor  # [N, C] log p(y | x, z) for every letter (-inf for options a question lacks)
    logp_without: Tensor  # [N] log p(y* | x), no rationale
    groups: Sequence[Hashable]  # [N] question ids
    on_policy: Tensor  # [N] bool: not a hinted (rationalization) sample
    label_dist: Tensor  # [N, C] D(y | x) (trainer.label_dist)


# The model-scored rewards, each a column of the scored generations; trainer.reward is one of these or
# `correct` (read from the extracted answer, no model pass). A new reward: a pure function above with its
# equation in the docstring, and one line here.
REWARDS: dict[str, Callable[[RewardInputs], Tensor]] = {
    "answer_logprob": lambda x: answer_logprob_reward(x.logp_gold),
    "quiet_star": lambda x: quiet_star_reward(x.logp_gold, x.groups, x.on_policy),
    "gain": lambda x: gain_reward(x.logp_gold, x.logp_without),
    "expected_likelihood": lambda x: expected_likelihood_reward(x.logp_letters, x.label_dist),
}
