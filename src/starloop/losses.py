"""Training losses and advantages: pure functions of per-sequence log-probs.

Inputs are per-sequence sums of token log-probs, `logp_sum` [B] (from `starloop.logprobs`), and token
counts `n_tokens` [B]. Every loss is a mean over one *optimizer step*, whatever the micro-batching: the
trainer passes the step's totals as denominators, so that a micro-batch's loss is its share of the step's
and the gradient is the same for any `grad_accum`, micro-batch size and order.

  * sft / weighted_sft (`weighted_nll`): the (weighted) token mean over the step,
        L = - sum_i w_i log pi(z_i | x_i) / sum_i w_i |z_i|      (w = 1: TRL's SFT; equal w: SFT)
  * reinforce (`policy_gradient_loss`): a constant denominator per sample, so that a question's baseline
    cancels exactly wherever its samples land (see PG_NORMALIZATIONS for the two choices and their bias).
  * dpo "sigmoid": sequence-summed log-ratios (TRL); "ipo": per-token-averaged log-ratios (TRL). Mean
    over the step's pairs. rpo's NLL term: token mean over the step's chosen tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from starloop.rewards import GroupIds, as_reward, group_index, group_sum_count


def weighted_nll(logp_sum: Tensor, weights: Tensor | float, denominator: Tensor | float) -> Tensor:
    """L = - sum_i w_i log pi(z_i | x_i) / D, with D a constant of the optimizer step (detached).

    logp_sum: [B]; weights: [B] or a scalar (detached); denominator: the step's sum_i w_i |z_i| for a
    (weighted) token mean. Summing this over a step's micro-batches gives the step's loss."""
    w = weights.detach().to(logp_sum.dtype) if isinstance(weights, Tensor) else weights
    d = denominator.detach().to(logp_sum.dtype) if isinstance(denominator, Tensor) else denominator
    return -(w * logp_sum).sum() / max(float(d), torch.finfo(logp_sum.dtype).tiny)


def sft_loss(logp_sum: Tensor, n_tokens: Tensor) -> Tensor:
    """Token-mean negative log-likelihood over the batch:

        L = - sum_i log pi(z_i | x_i) / sum_i |z_i|

    logp_sum, n_tokens: [B]. Long sequences weigh more than short ones (per-token, not per-sequence,
    normalisation, as TRL's SFTTrainer)."""
    return weighted_nll(logp_sum, 1.0, n_tokens.sum().clamp(min=1))


def _sigmoid_pair_loss(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """DPO: -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)  (eps > 0: conservative DPO)."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def _ipo_pair_loss(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """IPO: (h - 1 / (2 beta))^2, h on per-token-averaged log-ratios."""
    if label_smoothing:
        raise ValueError("label_smoothing applies to the sigmoid DPO loss only, not ipo")
    return (h - 1 / (2 * beta)) ** 2


# DPO variant -> (per-pair loss of the margin h, whether h uses per-token-averaged log-ratios).
DPO_VARIANTS: dict[str, tuple[Callable[[Tensor, float, float], Tensor], bool]] = {
    "sigmoid": (_sigmoid_pair_loss, False),
    "ipo": (_ipo_pair_loss, True),
}


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Direct preference optimisation on pairs (chosen c, rejected r) of one prompt; inputs [P] summed
    log-probs of the policy and the reference.

        rho_c = log pi(c) - log pi_ref(c),   rho_r = log pi(r) - log pi_ref(r)
        sigmoid:  h = rho_c - rho_r
                  L = mean_pairs[ -(1-eps) log sigma(beta h) - eps log sigma(-beta h) ]
        ipo:      h = rho_c / |c| - rho_r / |r|          (per-token average, as TRL)
                  L = mean_pairs[ (h - 1/(2 beta))^2 ]

    Metrics (detached means over pairs; TRL's names): rewards/chosen = beta rho_c, rewards/rejected =
    beta rho_r, rewards/margins, rewards/accuracies = 1[rho_c > rho_r], logps/chosen, logps/rejected.
    """
    if loss_type not in DPO_VARIANTS:
        raise ValueError(f"dpo loss_type must be one of {sorted(DPO_VARIANTS)}, got {loss_type!r}")
    pair_loss, per_token = DPO_VARIANTS[loss_type]
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if per_token:
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError(f"dpo loss_type {loss_type!r} needs chosen_tokens and rejected_tokens")
        h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
    else:
        h = chosen_ratio - rejected_ratio
    loss = pair_loss(h, beta, label_smoothing).mean()
    reward_chosen = (beta * chosen_ratio).detach()
    reward_rejected = (beta * rejected_ratio).detach()
    metrics = {
        "rewards/chosen": reward_chosen.mean(),
        "rewards/rejected": reward_rejected.mean(),
        "rewards/margins": (reward_chosen - reward_rejected).mean(),
        "rewards/accuracies": (reward_chosen > reward_rejected).float().mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
    }
    return loss, metrics


def rpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    nll_weight: float,
    chosen_tokens: Tensor,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    rejected_tokens: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Iterative RPO (Pang et al. 2024): DPO plus an NLL term on the chosen responses,

        L = L_dpo + alpha * ( - sum_pairs log pi(c) / sum_pairs |c| )

    The NLL is the token mean over all chosen tokens of the batch, as TRL's `rpo_alpha` (older TRL)
    and its `loss_type=["sigmoid", "sft"], loss_weights=[1, alpha]` (TRL >= 1.0) compute it.
    Metrics: those of `dpo_loss` plus `nll`."""
    loss, metrics = dpo_loss(
        policy_chosen,
        policy_rejected,
        ref_chosen,
        ref_rejected,
        beta,
        loss_type,
        label_smoothing,
        chosen_tokens=chosen_tokens,
        rejected_tokens=rejected_tokens,
    )
    nll = sft_loss(policy_chosen, chosen_tokens)
    metrics["nll"] = nll.detach()
    return loss + nll_weight * nll, metrics


# How a policy-gradient step is normalised. Both divide each sample by a constant, so the gradient does not
# depend on micro-batching or on which other samples share the step, and a question's baseline cancels:
#   token_budget:  L = - sum_i A_i log pi(z_i | x_i) / (S * T)       S sequences a step, T the token budget
#       the sequence-level policy gradient scaled by a constant: no length bias ("Dr. GRPO").
#   sequence_mean: L = - (1/S) sum_i A_i log pi(z_i | x_i) / |z_i|
#       each sequence's token mean (GRPO's original form): biased by length -- a short sequence's tokens
#       move more than a long one's, so long wrong answers are penalised less per token.
# (Dividing by the micro-batch's token count instead, as an earlier version did, gives each sample the
# weight A_i / tokens-of-its-micro-batch: the baseline no longer cancels and the gradient changes with
# grad_accum, micro-batch size and length sorting.)
PG_NORMALIZATIONS = ("token_budget", "sequence_mean")


def policy_gradient_loss(logp_sum: Tensor, n_tokens: Tensor, advantages: Tensor, *, normalization: str,
                         step_sequences: int, token_budget: int) -> Tensor:
    """REINFORCE with the baseline inside the (detached) advantages, normalised as PG_NORMALIZATIONS says.

    logp_sum, n_tokens, advantages: [B] (a micro-batch); step_sequences: S, the nominal sequences per
    optimizer step (train_batch_size * grad_accum); token_budget: T (trainer.max_new_tokens + 1).
    Summed over micro-batches, this is the step's loss."""
    if normalization not in PG_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {PG_NORMALIZATIONS}, got {normalization!r}")
    a = advantages.detach().to(logp_sum.dtype)
    if normalization == "token_budget":
        return -(a * logp_sum).sum() / (step_sequences * token_budget)
    return -(a * logp_sum / n_tokens.to(logp_sum.dtype).clamp(min=1)).sum() / step_sequences


def _rloo_baseline(values: Tensor, sums: Tensor, counts: Tensor) -> Tensor:
    # Mean of the *other* samples; a group of one has none, so its baseline is 0.
    return torch.where(counts > 1, (sums - values) / (counts - 1).clamp(min=1), torch.zeros_like(values))


# baseline name -> b(values, group sums, group sizes), each tensor shaped like the rewards.
BASELINES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "rloo": _rloo_baseline,
    "mean": lambda values, sums, counts: sums / counts,
    "none": lambda values, sums, counts: torch.zeros_like(values),
}


def advantages(
    rewards: Tensor,
    group_ids: GroupIds | None = None,
    baseline: str = "rloo",
    clip_negative: bool = False,
) -> Tensor:
    """Advantages of K samples per question, A_i = r_i - b_i, detached:

        rloo:  b_i = 1/(K-1) sum_{j != i} r_j      (leave-one-out; K = 1 gives b = 0, A = r)
        mean:  b_i = 1/K sum_j r_j                 (sample included, as Quiet-STaR)
        none:  b_i = 0
        clip_negative: A_i <- max(A_i, 0)          (Quiet-STaR's option)

    rewards: [Q, K], or [N] with group_ids [N] (groups may differ in size). Returns rewards' shape.
    A group whose rewards are all equal gets A = 0 under rloo and mean: no gradient (the below-random
    case with 0/1 rewards, where every sample is wrong)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {sorted(BASELINES)}, got {baseline!r}")
    values = as_reward(rewards)
    sums, counts = group_sum_count(values, group_ids)
    adv = values - BASELINES[baseline](values, sums, counts)
    return adv.clamp(min=0) if clip_negative else adv


def group_normalized_advantages(rewards: Tensor, group_ids: GroupIds | None = None, scale_std: bool = True,
                                eps: float = 1e-6) -> Tensor:
    """GRPO's advantages (Shao et al. 2024), detached:

        A_i = (r_i - mean_g r) / (std_g r + eps)      scale_std False: A_i = r_i - mean_g r

    std is the population standard deviation of the question's rewards (sample included). A group whose
    rewards are all equal gets A = 0. rewards: [Q, K], or [N] with group_ids; returns rewards' shape."""
    values = as_reward(rewards)
    sums, counts = group_sum_count(values, group_ids)
    mean = sums / counts
    centred = values - mean
    if not scale_std:
        return centred
    sq, _ = group_sum_count(centred * centred, group_ids)
    return centred / (torch.sqrt(sq / counts) + eps)


def target_weights(rewards: Tensor, group_ids: GroupIds | None = None, lam: float = 1.0) -> Tensor:
    """Self-normalised weights of the max-entropy target on each group's samples (detached):

        w_i = exp(r_i / lam) / sum_{j in group(i)} exp(r_j / lam)

    rewards: [Q, K], or [N] with group_ids. Each group's weights sum to 1."""
    if lam <= 0:
        raise ValueError(f"weighted_sft lambda must be > 0, got {lam}")
    scaled = as_reward(rewards) / lam
    if group_ids is None:
        return torch.softmax(scaled, dim=-1)
    index = group_index(group_ids, scaled.device)
    n_groups = int(index.max()) + 1 if index.numel() else 0
    group_max = scaled.new_full((n_groups,), float("-inf")).scatter_reduce(0, index, scaled, reduce="amax")
    exp = torch.exp(scaled - group_max[index])
    exp = torch.nan_to_num(exp, nan=0.0)  # a group of -inf rewards: zero weight instead of nan
    sums, _ = group_sum_count(exp, index)
    return exp / sums.clamp(min=torch.finfo(exp.dtype).tiny)


def weighted_sft_loss(
    logp_sum: Tensor,
    n_tokens: Tensor | None,
    rewards: Tensor,
    group_ids: GroupIds | None,
    lam: float,
) -> Tensor:
    """Fit the max-entropy optimal policy on the sampled rationales (reward-weighted SFT).

    The KL-regularised objective max_pi E_pi[r] - lam KL(pi || pi_ref) is solved by
        pi*(z | x) = pi_ref(z | x) exp(r(x, z) / lam) / Z(x).
    Project it onto the model: min_pi KL(pi* || pi) = - E_{z ~ pi*}[log pi(z | x)] + const. The K
    samples of a question were drawn from pi_ref (the sampling policy), so with self-normalised
    importance sampling, pi*(z_i) / pi_ref(z_i) ∝ exp(r_i / lam), and
        E_{pi*}[f] ≈ sum_i w_i f(z_i),   w_i = softmax_{j in group}(r_j / lam)  (`target_weights`).
    Hence, with G groups in the batch,
        n_tokens None:  L = - (1/G) sum_groups sum_i w_i log pi(z_i | x)
        n_tokens given: L = - sum_i w_i log pi(z_i | x) / sum_i w_i |z_i|
    The second divides the first by the target's expected length (a constant, as w is detached): same
    gradient direction, and it reduces to `sft_loss` when all rewards of a group are equal and groups
    have equal size. lam -> inf gives SFT on every sample; lam -> 0 gives SFT on each group's best.
    Note: with 0/1 rewards, a group with no correct sample gets uniform weights, not zero: drop such
    groups beforehand to recover STaR's filter.

    logp_sum: [N] (or [Q, K]); n_tokens: same shape or None; rewards: same shape; group_ids: [N] or None.
    """
    if logp_sum.numel() == 0:
        return logp_sum.sum()
    weights = target_weights(rewards, group_ids, lam).to(logp_sum.dtype)
    if n_tokens is None:
        n_groups = rewards.shape[0] if group_ids is None else int(group_index(group_ids).max()) + 1
        return weighted_nll(logp_sum, weights, max(n_groups, 1))
    return weighted_nll(logp_sum, weights, (weights * n_tokens.to(weights.dtype)).sum())
