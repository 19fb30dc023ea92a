"""What one optimizer step computes, checked against numbers worked out outside the trainer: the loss of
each strategy, its independence from micro-batching, DPO's dropout, and prompts that are never cut."""

from __future__ import annotations

import math

import pytest
import torch

from starloop import strategies, train
from starloop.build import Example
from starloop.config import TrainerConfig
from starloop.logprobs import batch_from_pairs, model_sequence_logprobs
from starloop.models import attach_lora
from starloop.records import PreferencePair
from starloop.strategies import dpo


@pytest.fixture
def fresh_tiny():
    from starloop.config import ModelConfig
    from starloop.models import load_model

    return load_model(ModelConfig(name="tiny-random"), for_training=True)


def _examples(rewards: list[float], k: int = 4) -> list[Example]:
    # Two questions x k samples of different lengths (so micro-batch token counts differ).
    return [Example(f"Question {i // k}: pick one.", "Because " + "reasons " * (1 + 3 * (i % k)) + "(B)",
                    f"q{i // k}", r) for i, r in enumerate(rewards)]


def _lora(model, cfg, seed=0):
    peft_model = attach_lora(model, cfg, seed=seed)
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    with torch.no_grad():  # a non-zero B, so that LoRA (and its dropout) changes the output
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    return peft_model


def _logps(model, tok, units):
    batch = batch_from_pairs([u.ctx for u in units], [u.cont for u in units], tok.pad_token_id, side="right")
    with torch.no_grad():
        return model_sequence_logprobs(model.eval(), **batch)


def _step_grads(model, tok, units, cfg):
    """The gradient of one optimizer step over all `units` (lr 0: weights stay; no clipping)."""
    train.train(model, tok, units, cfg, seed=0, progress=False)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_weighted_sft_trains_the_documented_loss(fresh_tiny):
    """Bug: the trainer divided by sum |z| instead of sum w |z|: with equal rewards and k = 4 it trained a
    quarter of SFT's loss (lr / k). The logged step loss must be sum_i w_i (-log p_i) / sum_i w_i |z_i|."""
    model, tok = fresh_tiny
    for rewards in ([0.0] * 8, [0.0, math.log(3), 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]):
        cfg = TrainerConfig(strategy="weighted_sft", lr=0.0, train_batch_size=4, grad_accum=2, lora_r=4,
                            lora_dropout=0.0, max_grad_norm=0.0, weighted_sft_lambda=1.0)
        peft_model = _lora(model, cfg)
        units = strategies.get(cfg.strategy).units(tok, _examples(rewards), cfg)
        logp, n = _logps(peft_model, tok, units)
        # weights by hand: softmax of each question's rewards
        w = []
        for g in range(2):
            e = [math.exp(r) for r in rewards[4 * g : 4 * g + 4]]
            w += [x / sum(e) for x in e]
        expected = sum(wi * -float(lp) for wi, lp in zip(w, logp)) / sum(wi * int(ni) for wi, ni in zip(w, n))
        records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
        assert records[0]["loss"] == pytest.approx(expected, rel=1e-4)
        if len(set(rewards)) == 1:  # equal rewards: exactly SFT's token mean
            assert expected == pytest.approx(-float(logp.sum()) / int(n.sum()), rel=1e-6)


@pytest.mark.parametrize("strategy", ["sft", "reinforce", "weighted_sft"])
def test_step_gradient_does_not_depend_on_micro_batching(fresh_tiny, strategy):
    """Bug: each micro-batch was normalised by its own token count, so with length-sorted micro-batches a
    question's samples got weights advantage / (tokens of their micro-batch) and the baseline no longer
    cancelled. Now (8 x 1), (4 x 2), (2 x 4) and (1 x 8) give the same gradient."""
    model, tok = fresh_tiny
    rewards = [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5]
    grads = []
    for batch, accum in [(8, 1), (4, 2), (2, 4), (1, 8)]:
        cfg = TrainerConfig(strategy=strategy, lr=0.0, train_batch_size=batch, grad_accum=accum, lora_r=4,
                            lora_dropout=0.0, max_grad_norm=0.0, baseline="rloo", max_new_tokens=32)
        peft_model = _lora(model, cfg)
        ex = _examples(rewards)
        units = strategies.get("sft").units(tok, ex, cfg) if strategy == "sft" else strategies.get(cfg.strategy).units(tok, ex, cfg)
        grads.append(_step_grads(peft_model, tok, units, cfg))
    for g in grads[1:]:
        assert g.keys() == grads[0].keys()
        for name in g:
            torch.testing.assert_close(g[name], grads[0][name], rtol=1e-3, atol=1e-6)


def test_reinforce_step_is_the_sequence_level_policy_gradient(fresh_tiny):
    """token_budget: the step's gradient is that of - sum_i A_i log pi(z_i) / (S * T), A from RLOO by hand."""
    model, tok = fresh_tiny
    rewards = [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5]
    cfg = TrainerConfig(strategy="reinforce", lr=0.0, train_batch_size=2, grad_accum=4, lora_r=4,
                        lora_dropout=0.0, max_grad_norm=0.0, baseline="rloo", max_new_tokens=31)
    peft_model = _lora(model, cfg)
    units = strategies.get(cfg.strategy).units(tok, _examples(rewards), cfg)
    got = _step_grads(peft_model, tok, units, cfg)
    # RLOO by hand: q0 [0,1,1,1] -> [-1, 1/3, 1/3, 1/3]; q1 [1,0,0,.5] -> [1-1/6, -1/2, -1/2, .5-1/3]
    adv = torch.tensor([-1, 1 / 3, 1 / 3, 1 / 3, 5 / 6, -0.5, -0.5, 1 / 6])
    peft_model.zero_grad()
    peft_model.train()
    batch = batch_from_pairs([u.ctx for u in units], [u.cont for u in units], tok.pad_token_id, side="right")
    logp, _ = model_sequence_logprobs(peft_model, **batch)
    (-(adv * logp).sum() / (8 * 32)).backward()
    for name, p in peft_model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[name], p.grad, rtol=1e-3, atol=1e-6)


def test_dpo_runs_the_policy_without_dropout(fresh_tiny, monkeypatch):
    """Bug: the reference pass ran without dropout, the policy with LoRA dropout. Now every dropout module
    is at p = 0 while DPO computes the policy's log-probs (TRL's default), and restored afterwards."""
    model, tok = fresh_tiny
    pairs = [PreferencePair(f"q{i}", f"Question {i}?", "Good reasoning. The answer is (A)", "bad bad")
             for i in range(4)]
    for disable, expected in ((True, {0.0}), (False, {0.5})):
        cfg = TrainerConfig(strategy="dpo", lr=1e-3, train_batch_size=2, lora_r=4, lora_dropout=0.5,
                            dpo_disable_dropout=disable)
        peft_model = _lora(model, cfg)
        units = strategies.get("dpo").units(tok, pairs, cfg)
        dpo.fill_reference_logps(peft_model, tok, units, batch_size=2)
        seen: set[float] = set()
        real = dpo.logps

        def spy(m, t, ctxs, conts, seen=seen, real=real):
            seen.update(x.p for x in m.modules() if isinstance(x, torch.nn.Dropout))
            return real(m, t, ctxs, conts)

        monkeypatch.setattr(dpo, "logps", spy)
        train.train(peft_model, tok, units, cfg, seed=0, progress=False)
        monkeypatch.setattr(dpo, "logps", real)
        assert seen == expected
        assert {x.p for x in peft_model.modules() if isinstance(x, torch.nn.Dropout)} == {0.5}


def test_dpo_trains_with_gradient_checkpointing():
    """Bug (found on a GPU run of Qwen2.5-1.5B): DPO with trainer.gradient_checkpointing=true crashed in
    the first backward pass with "Recomputed values ... have different metadata". Dropout was off only
    while the policy's forward ran, so the recompute in backward drew dropout masks the forward had not.
    Dropout now stays off through backward; the step matches the one without checkpointing."""
    from starloop.config import ModelConfig
    from starloop.models import load_model

    pairs = [PreferencePair(f"q{i}", f"Question {i}?", "Good reasoning. The answer is (A)", "bad bad")
             for i in range(4)]
    grads = []
    for ckpt in (False, True):
        model, tok = load_model(ModelConfig(name="tiny-random"), for_training=True)
        cfg = TrainerConfig(strategy="dpo", lr=0.0, train_batch_size=2, lora_r=4, lora_dropout=0.5,
                            max_grad_norm=0.0, gradient_checkpointing=ckpt)
        peft_model = _lora(model, cfg)
        units = strategies.get("dpo").units(tok, pairs, cfg)
        dpo.fill_reference_logps(peft_model, tok, units, batch_size=2)
        records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
        assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.grad is not None})
        assert {x.p for x in peft_model.modules() if isinstance(x, torch.nn.Dropout)} == {0.5}
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_prompts_are_never_cut_too_long_samples_are_dropped(tiny):
    """Bug: a prompt + completion over max_seq_len lost the left part of its prompt (17.5% of Amharic
    prompts with the embedded tokenizer). Now kept units hold the whole prompt; the others are counted."""
    _, tok = tiny
    short = Example("Short question?", "Short answer (A)", "q0")
    long_ = Example("Long question " * 40 + "?", "Answer (B)", "q1")
    cfg = TrainerConfig(max_seq_len=48)
    units = strategies.get("sft").units(tok, [short, long_], cfg)
    kept, dropped = train.drop_too_long(units, cfg.max_seq_len)
    assert dropped == 1 and len(kept) == 1
    assert kept[0].ctx == tok(short.prompt, add_special_tokens=False)["input_ids"]
    assert all(len(u.ctx) == len(tok(e.prompt, add_special_tokens=False)["input_ids"])
               for u, e in zip(units, [short, long_]))


def test_truncated_samples_train_without_eos(tiny):
    _, tok = tiny
    cfg = TrainerConfig()
    ended, cut = (strategies.get("sft").units(tok, [Example("Q?", "A (B)", "q", eos=e)], cfg)[0] for e in (True, False))
    assert ended.cont[-1] == tok.eos_token_id and cut.cont[-1] != tok.eos_token_id
    assert ended.cont[:-1] == cut.cont
    pair = PreferencePair("q", "Q?", "good (A)", "bad bad bad", rejected_eos=False)
    unit = strategies.get("dpo").units(tok, [pair], cfg)[0]
    assert unit.cont[-1] == tok.eos_token_id and unit.rejected[-1] != tok.eos_token_id


def test_optimizer_steps_depend_only_on_the_effective_batch():
    units = [train.Unit([1] * (i % 5 + 1), [2] * (i % 3 + 1)) for i in range(37)]
    ref = [[id(u) for mb in step for u in mb] for step in train.optimizer_steps(units, 8, 1, seed=3)]
    for batch, accum in [(4, 2), (2, 4), (1, 8), (3, 3)]:
        steps = train.optimizer_steps(units, batch, accum, seed=3)
        assert all(len(mb) <= batch for step in steps for mb in step)
        if batch * accum == 8:
            assert [[id(u) for mb in step for u in mb] for step in steps] == ref
    assert sorted(x for step in ref for x in step) == sorted(id(u) for u in units)


def test_train_steps_grow_per_iteration():
    units = [train.Unit([1], [2, 3]) for _ in range(10)]
    cfg = TrainerConfig(train_batch_size=2, train_steps=4, steps_growth=1.2)
    assert [len(train.plan_steps(units, cfg, 0, it)) for it in (1, 2, 3, 4)] == [4, 5, 6, 7]  # 4 * 1.2^k rounded
    assert len(train.plan_steps(units, TrainerConfig(train_batch_size=2, inner_epochs=2), 0)) == 10
