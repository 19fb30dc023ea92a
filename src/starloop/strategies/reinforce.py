"""reinforce: REINFORCE with a baseline (RLOO by default) on every on-policy sample, advantages computed
per question over the whole iteration, each sample divided by a constant (trainer.pg_normalization) so
that the baseline cancels exactly: `losses.advantages` and `losses.policy_gradient_loss`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from starloop import losses
from starloop.strategies.base import RewardStrategy, coef_metrics, policy_logps


@dataclass
class ReinforceConfig:
    # --- REINFORCE / RLOO and GRPO ---
    # reinforce baseline: rloo (leave-one-out), mean (including the sample, as Quiet-STaR) or none. Under
    # rloo and mean, answer_logprob, quiet_star and gain give the same advantages (a per-question constant
    # cancels); they differ under none.
    baseline: str = "rloo"
    # Clip negative advantages to zero.
    clip_negative_advantages: bool = False
    # Policy-gradient normalisation (reinforce, grpo): token_budget (sum of A * log pi over a step / (sequences
    # a step * (max_new_tokens + 1)): no length bias) or sequence_mean (per-sequence token means, averaged:
    # favours short sequences).
    pg_normalization: str = "token_budget"


class Reinforce(RewardStrategy):
    name = "reinforce"
    config = ReinforceConfig
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"trainer.baseline": ("rloo", "mean", "none"),
                                                     "trainer.pg_normalization": losses.PG_NORMALIZATIONS}
    headline: ClassVar[dict[str, str]] = {"baseline": "baseline"}

    def coefficients(self, rewards, groups, t):
        return losses.advantages(rewards, groups, t.baseline, t.clip_negative_advantages)

    def batch_loss(self, model, tok, units, t, totals):
        logp, n = policy_logps(model, tok, units)
        a = torch.tensor([u.scalars["coef"] for u in units], device=logp.device)
        loss = losses.policy_gradient_loss(logp, n, a, normalization=t.pg_normalization,
                                           step_sequences=totals.nominal_sequences,
                                           token_budget=t.max_new_tokens + 1)
        return loss, coef_metrics(logp, n, a)


STRATEGY = Reinforce()
