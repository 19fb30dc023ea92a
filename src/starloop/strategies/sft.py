"""sft: rejection-sampling fine-tuning on the correct rationales (STaR; with trainer.rationalize, also on the
hinted rationalizations, saved without the hint). Loss: the token-mean NLL over the optimizer step."""

from __future__ import annotations

from starloop import build, losses
from starloop.strategies.base import Strategy, policy_logps


class SFT(Strategy):
    name = "sft"
    imitates = True

    def build(self, samples, t):
        return build.sft_examples(samples, max_per_question=t.max_kept_per_question, dedupe=t.dedupe,
                                  filter_degenerate=t.filter_degenerate, min_rationale_words=t.min_rationale_words,
                                  keep_truncated=t.keep_truncated, require_gain=t.require_gain)

    def batch_loss(self, model, tok, units, t, totals):
        logp, n = policy_logps(model, tok, units)
        loss = losses.weighted_nll(logp, 1.0, totals.tokens)
        return loss, {"nll": (-logp.sum() / n.sum().clamp(min=1)).detach()}


STRATEGY = SFT()
