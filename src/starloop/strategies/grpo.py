"""grpo: REINFORCE with group-normalised advantages (Shao et al. 2024, DeepSeekMath), without the clipped
ratio and KL term (one on-policy step per batch of samples, as STaR samples afresh each iteration):

    A_i = (r_i - mean_{question} r) / (std_{question} r + eps)      (grpo_scale_std=false: no division,
                                                                     "Dr. GRPO")

`losses.group_normalized_advantages`; the loss is reinforce's, with trainer.pg_normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from starloop import losses
from starloop.strategies.reinforce import Reinforce


@dataclass
class GRPOConfig:
    # --- GRPO ---
    # Divide each question's centred rewards by their standard deviation (GRPO); false = centre only.
    grpo_scale_std: bool = True


class GRPO(Reinforce):
    name = "grpo"
    config = GRPOConfig
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    headline: ClassVar[dict[str, str]] = {"grpo_scale_std": "std scaling"}  # no baseline: the group mean

    def coefficients(self, rewards, groups, t):
        return losses.group_normalized_advantages(rewards, groups, scale_std=t.grpo_scale_std)


STRATEGY = GRPO()
