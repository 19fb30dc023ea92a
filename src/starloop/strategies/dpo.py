"""dpo: direct preference optimisation on (correct, wrong) rationales of one question, and its variants
(ipo; rpo = dpo + an NLL term on the chosen side, Pang et al. 2024). The reference policy is the model with
its LoRA adapter disabled, or the previous iteration's adapter (trainer.dpo_reference=previous), never a
second model copy; its log-probs are computed once per iteration before the first step."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from starloop import build, losses
from starloop.logprobs import budgeted_batches
from starloop.oom import oom_advice, release_cached_memory
from starloop.records import PreferencePair
from starloop.sampler_support import CPU_BATCH_SIZE
from starloop.strategies.base import Strategy, TrainContext
from starloop.train import Unit, logps, mixed_precision, tokenize_pair


@dataclass
class DPOConfig:
    # --- DPO family ---
    # sigmoid (DPO) or ipo.
    dpo_loss: str = "sigmoid"
    # Strength of the implicit KL penalty towards the reference policy (larger = stay closer).
    dpo_beta: float = 0.1
    # Weight of the NLL term on chosen responses (iterative RPO); 0 = plain DPO.
    dpo_nll_weight: float = 0.0
    # Pairs per question: all, one, or n (up to dpo_pairs_per_question).
    dpo_pairing: str = "all"
    # Most pairs per question when dpo_pairing = n.
    dpo_pairs_per_question: int = 4
    # Reference policy: base (adapter disabled) or previous (last iteration's adapter, frozen).
    dpo_reference: str = "base"
    # SFT epochs on the chosen responses before DPO (for off-policy data).
    dpo_sft_warmup_epochs: int = 0
    # Dropout off in the policy during DPO, as in the reference pass (TRL's default); false keeps LoRA dropout.
    dpo_disable_dropout: bool = True


class DPO(Strategy):
    name = "dpo"
    config = DPOConfig
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "trainer.dpo_loss": tuple(losses.DPO_VARIANTS), "trainer.dpo_pairing": ("all", "one", "n"),
        "trainer.dpo_reference": ("base", "previous")}
    ranges: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "trainer.dpo_beta": (1e-9, None), "trainer.dpo_nll_weight": (0.0, None),
        "trainer.dpo_pairs_per_question": (1, None), "trainer.dpo_sft_warmup_epochs": (0, None)}
    headline: ClassVar[dict[str, str]] = {"dpo_beta": "β", "dpo_nll_weight": "NLL", "dpo_reference": "reference"}
    record = PreferencePair
    min_samples = 2
    imitates = True

    def build(self, samples, t):
        return build.preference_pairs(samples, pairing=t.dpo_pairing, per_question=t.dpo_pairs_per_question,
                                      filter_degenerate=t.filter_degenerate,
                                      min_rationale_words=t.min_rationale_words, keep_truncated=t.keep_truncated,
                                      require_gain=t.require_gain)

    def units(self, tok, data: Sequence[PreferencePair], t) -> list[Unit]:
        out = []
        for p in data:
            ctx, chosen = tokenize_pair(tok, p.prompt, p.chosen, p.chosen_eos)
            _, rejected = tokenize_pair(tok, p.prompt, p.rejected, p.rejected_eos)
            out.append(Unit(ctx, chosen, rejected, source=p.question_id))
        return out

    def prepare(self, ctx: TrainContext):
        t = ctx.policy.cfg.trainer
        model = ctx.model
        if ctx.units:
            ref = "previous" if (t.dpo_reference == "previous" and ctx.prev_adapter is not None) else "base"
            if ref == "previous" and t.restart_from_base:  # the reference is another adapter than the start
                fill_reference_logps(ctx.policy.use(ctx.prev_adapter), ctx.policy.tok, ctx.units,
                                     reference_batch(t), reference="previous")
                model = ctx.policy.use(None, trainable=True, fresh_seed=ctx.seed)
            else:
                fill_reference_logps(model, ctx.policy.tok, ctx.units, reference_batch(t), reference=ref)
        if ctx.val_units:
            fill_reference_logps(model, ctx.policy.tok, ctx.val_units, reference_batch(t), reference="base")
        return model

    def pre_train(self, model, tok, units, t, seed, progress):
        if not t.dpo_sft_warmup_epochs:
            return []
        from starloop.train import train

        warm = [Unit(u.ctx, u.cont, source=u.source) for u in units]
        return train(model, tok, warm, replace(t, strategy="sft", inner_epochs=t.dpo_sft_warmup_epochs,
                                               train_steps=None), seed=seed, progress=progress)

    def train_context(self, model, t):
        return dropout_disabled(model, t.dpo_disable_dropout)

    def batch_loss(self, model, tok, units, t, totals):
        """Mean over the step's pairs; rpo's NLL is the token mean over the step's chosen tokens."""
        b = len(units)
        logp, n = logps(model, tok, [u.ctx for u in units] * 2,
                        [u.cont for u in units] + [u.rejected for u in units])  # type: ignore[misc]
        dev = logp.device
        ref_c = torch.tensor([u.scalars["ref_chosen"] for u in units], device=dev)
        ref_r = torch.tensor([u.scalars["ref_rejected"] for u in units], device=dev)
        pair_mean, metrics = losses.dpo_loss(logp[:b], logp[b:], ref_c, ref_r, t.dpo_beta, t.dpo_loss,
                                             chosen_tokens=n[:b], rejected_tokens=n[b:])
        loss = pair_mean * (b / totals.sequences)
        if t.dpo_nll_weight:
            loss = loss + t.dpo_nll_weight * losses.weighted_nll(logp[:b], 1.0, totals.tokens)
            metrics["nll"] = (-logp[:b].sum() / n[:b].sum().clamp(min=1)).detach()
        return loss, metrics


def reference_batch(t) -> int:
    """Pairs per reference forward: a forward-only pass, sized like reward scoring (trainer.gen_batch_size
    rows, two per pair), and never fewer than a training micro-batch."""
    return max(t.train_batch_size, (t.gen_batch_size or CPU_BATCH_SIZE) // 2)


@torch.no_grad()
def fill_reference_logps(model, tok, units: Sequence[Unit], batch_size: int, reference: str = "base") -> None:
    """Store the reference policy's log-probs of chosen/rejected in each unit (once per iteration).

    base: the model with its LoRA adapter disabled. previous: the adapter as it is before training
    (the last iteration's, when training continues from it).
    Units go through the model shortest first, at most `batch_size` units (two rows each) and
    `logprobs.SCORING_TOKENS` padded tokens a forward; out of memory halves both and retries the batch
    (`logprobs.budgeted_batches`). A unit's values do not depend on the batch it shares.
    """
    was_training = model.training
    model.eval()
    ctx_mgr = model.disable_adapter() if reference == "base" and hasattr(model, "disable_adapter") \
        else contextlib.nullcontext()
    longest = [len(u.ctx) + max(len(u.cont), len(u.rejected or ())) for u in units]
    order = sorted(range(len(units)), key=lambda i: longest[i])  # like lengths together: little padding

    def reference_pass(start: int, n: int) -> list[float]:
        chunk = [units[i] for i in order[start : start + n]]
        logp, _ = logps(model, tok, [u.ctx for u in chunk] * 2,
                        [u.cont for u in chunk] + [u.rejected for u in chunk])  # type: ignore[misc]
        return logp.float().tolist()  # one device-to-host copy a batch

    try:
        with ctx_mgr, mixed_precision(model), oom_advice():
            batches = budgeted_batches([2 * longest[i] for i in order], max(1, batch_size),
                                       "computing reference log-probs", reference_pass)
            for start, n, got in batches:
                for j, i in enumerate(order[start : start + n]):
                    units[i].scalars["ref_chosen"] = got[j]
                    units[i].scalars["ref_rejected"] = got[n + j]
    finally:
        model.train(was_training)
    release_cached_memory(model)


@contextlib.contextmanager
def dropout_disabled(model, disable: bool = True):
    """Every dropout module of `model` at p = 0 inside (TRL's DPO default, `disable_dropout=True`): the
    reference log-probs are computed without dropout, so the policy's must be too, or the implicit reward
    log pi/pi_ref carries dropout noise even where pi = pi_ref."""
    mods = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] if disable else []
    saved = [m.p for m in mods]
    for m in mods:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(mods, saved):
            m.p = p


STRATEGY = DPO()
