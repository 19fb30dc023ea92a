"""Training never runs cuDNN's attention kernel, whose backward gives NaN gradients on some padded batches."""

from __future__ import annotations

import math

import pytest
import torch

from starloop import strategies, train
from starloop.build import Example
from starloop.config import ModelConfig, TrainerConfig
from starloop.models import attach_lora, load_model


def test_training_forward_and_recomputed_forward_exclude_cudnn_attention(monkeypatch):
    model, tok = load_model(ModelConfig(name="tiny-random"), for_training=True)
    cfg = TrainerConfig(train_batch_size=2, lora_r=4, gradient_checkpointing=True, train_steps=1)
    peft_model = attach_lora(model, cfg, seed=0)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []  # (inside backward, cuDNN attention allowed) per attention call

    def spy(*args, **kwargs):
        calls.append((torch._C._current_graph_task_id() != -1, torch.backends.cuda.cudnn_sdp_enabled()))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    # Two lengths: the micro-batch is padded, so attention gets an explicit mask (what cuDNN's backward mishandles).
    data = [Example("Question: pick one.", "The answer is (B)", "q0"),
            Example("Question: pick one of these four, please.", "Because of reasons, the answer is (C)", "q1")]
    records = train.train(peft_model, tok, strategies.get("sft").units(tok, data, cfg), cfg, seed=0, progress=False)
    assert len(records) == 1
    assert any(not back for back, _ in calls) and any(back for back, _ in calls)  # forward, and its recomputation
    assert not any(cudnn for _, cudnn in calls)
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored after training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_masked_attention_gradient_is_finite_on_cuda_at_length_64_mod_128():
    # Every attention logit ~ -120, so each row's logsumexp is below ln(FLT_MAX): cuDNN's backward on H100/H200
    # (torch >= 2.11) gives NaN grad_q at lengths 64 mod 128 with a mask, the other kernels do not.
    torch.manual_seed(0)
    L, D = 320, 64
    q = torch.randn(1, 2, L, D, device="cuda", dtype=torch.bfloat16) * 0.1
    k = torch.randn(1, 2, L, D, device="cuda", dtype=torch.bfloat16) * 0.1
    v = torch.randn(1, 2, L, D, device="cuda", dtype=torch.bfloat16)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(D)
    for t in (q, k, v):
        t.requires_grad_()
    mask = torch.ones(L, L, dtype=torch.bool, device="cuda").tril()[None, None]
    with train.attention_kernels():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.backward(torch.randn_like(out))
    assert all(bool(torch.isfinite(t.grad).all()) for t in (q, k, v))


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_skipped_step_names_its_micro_batch_in_warning_and_record(what, monkeypatch, caplog):
    model, tok = load_model(ModelConfig(name="tiny-random"), for_training=True)
    cfg = TrainerConfig(train_batch_size=1, grad_accum=2, train_steps=3, lora_r=4)
    peft_model = attach_lora(model, cfg, seed=0)
    sft = strategies.get("sft")
    data = [Example(f"Question {i}: pick one." + " Really?" * i, f"The answer is (B){'!' * i}", f"q{i}")
            for i in range(6)]
    units = sft.units(tok, data, cfg)
    real_loss = sft.batch_loss

    def loss_with_a_bad_unit(m, t, b, c, totals):
        loss, metrics = real_loss(m, t, b, c, totals)
        if any(u.source == "q3" for u in b):
            if what == "loss":
                return loss + float("nan"), metrics
            lora = next(p for p in m.parameters() if p.requires_grad)
            return loss + torch.sqrt(0.0 * lora.sum()), metrics  # finite value, gradient inf * 0 = NaN
        return loss, metrics

    monkeypatch.setattr(sft, "batch_loss", loss_with_a_bad_unit)
    plan = train.plan_steps(units, cfg, 0)
    position, micro = next((s + 1, m + 1) for s, g in enumerate(plan) for m, b in enumerate(g)
                           if any(u.source == "q3" for u in b))
    with caplog.at_level("WARNING", logger="starloop.train"):
        records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
    assert len(records) == 2
    skipped = [s for r in records for s in r.get("skipped_steps", [])]
    q3 = units[3]
    assert skipped == [{"position": position, "non_finite": what, "micro_batch": micro, "questions": ["q3"],
                        "lengths": [len(q3.ctx) + len(q3.cont)], "padded_to": len(q3.ctx) + len(q3.cont)}]
    assert f"non-finite {what} in optimizer step {position} of 3, micro-batch {micro} of 2" in caplog.text
    assert "(questions q3)" in caplog.text
