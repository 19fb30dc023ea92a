"""weighted_sft: fit the max-entropy target pi*(z|x) ∝ pi_ref(z|x) exp(r(x,z) / lambda) on the sampled
rationales (research notes): every on-policy sample weighted by w_i = softmax_{question}(r / lambda), loss
- sum_i w_i log pi(z_i|x_i) / sum_i w_i |z_i| over the optimizer step (`losses.weighted_sft_loss`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from starloop import losses
from starloop.strategies.base import RewardStrategy, coef_metrics, policy_logps


@dataclass
class WeightedSFTConfig:
    # --- Weighted SFT ---
    # Temperature lambda of the max-entropy target pi* ~ pi_ref exp(r / lambda).
    weighted_sft_lambda: float = 1.0


class WeightedSFT(RewardStrategy):
    name = "weighted_sft"
    config = WeightedSFTConfig
    ranges: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "trainer.weighted_sft_lambda": (1e-9, None)}
    headline: ClassVar[dict[str, str]] = {"weighted_sft_lambda": "λ"}

    def coefficients(self, rewards, groups, t):
        return losses.target_weights(rewards, groups, t.weighted_sft_lambda)

    def batch_loss(self, model, tok, units, t, totals):
        logp, n = policy_logps(model, tok, units)
        w = torch.tensor([u.scalars["coef"] for u in units], device=logp.device)
        return losses.weighted_nll(logp, w, totals.weighted_tokens), coef_metrics(logp, n, w)


STRATEGY = WeightedSFT()
