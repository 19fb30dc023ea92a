"""Training on the tiny model: LoRA parameters move, base weights stay, single-batch mode overfits."""

from __future__ import annotations

import pytest
import torch

from starloop import strategies, train
from starloop.build import Example
from starloop.config import TrainerConfig
from starloop.models import attach_lora
from starloop.records import PreferencePair
from starloop.strategies import dpo


@pytest.fixture
def fresh_tiny():
    from starloop.config import ModelConfig
    from starloop.models import load_model

    return load_model(ModelConfig(name="tiny-random"), for_training=True)


EXAMPLES = [Example(f"Question {i}: pick one.", f"Because reasons {i}. The answer is (B)", f"q{i}") for i in range(6)]


def test_training_changes_every_lora_parameter_and_no_base_weight(fresh_tiny):
    model, tok = fresh_tiny
    cfg = TrainerConfig(lr=1e-2, train_batch_size=3, lora_r=4, lora_dropout=0.0, inner_epochs=2)
    peft_model = attach_lora(model, cfg, seed=0)
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    units = strategies.get("sft").units(tok, EXAMPLES, cfg)
    records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
    assert len(records) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    lora = [n for n in before if "lora_" in n]
    assert lora, "no LoRA parameters"
    for n, p in peft_model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == ("lora_" in n), n


def test_single_batch_loss_falls_to_near_zero(fresh_tiny):
    model, tok = fresh_tiny
    cfg = TrainerConfig(lr=1e-2, train_batch_size=2, lora_r=8, lora_alpha=16, lora_dropout=0.0,
                        single_batch=True, single_batch_steps=60)
    peft_model = attach_lora(model, cfg, seed=0)
    units = strategies.get("sft").units(tok, EXAMPLES[:2], cfg)
    records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
    # Frozen random 2-layer base: a LoRA memorizes most, not all, of the batch (11.7 -> ~1.6 nats/token).
    assert records[0]["loss"] > 8 and records[-1]["loss"] < 0.2 * records[0]["loss"]
    assert [len(r) for r in records] and len(records) == 60


def test_dpo_reference_is_adapter_disabled_and_loss_starts_at_log2(fresh_tiny):
    model, tok = fresh_tiny
    cfg = TrainerConfig(strategy="dpo", lr=1e-2, train_batch_size=2, lora_r=4, lora_dropout=0.0, dpo_beta=0.1)
    peft_model = attach_lora(model, cfg, seed=0)
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    pairs = [PreferencePair(f"q{i}", f"Question {i}?", "Good reasoning. The answer is (A)", "bad bad bad")
             for i in range(4)]
    units = strategies.get("dpo").units(tok, pairs, cfg)
    dpo.fill_reference_logps(peft_model, tok, units, batch_size=2)
    # A fresh LoRA (B = 0) equals the reference: margins are 0 and the loss is log 2.
    loss, metrics = strategies.get("dpo").batch_loss(peft_model, tok, units[:2], cfg, train.StepTotals.of(units[:2], 2))
    assert abs(loss.item() - 0.6931) < 1e-3 and abs(float(metrics["rewards/margins"])) < 1e-5
    records = train.train(peft_model, tok, units, cfg, seed=0, progress=False)
    assert records[-1]["rewards/margins"] > 0


def test_nonfinite_loss_skips_then_stops(fresh_tiny, monkeypatch):
    from starloop.errors import StarloopError

    model, tok = fresh_tiny
    cfg = TrainerConfig(train_batch_size=1, lora_r=4)
    peft_model = attach_lora(model, cfg, seed=0)
    monkeypatch.setattr(strategies.get("sft"), "batch_loss", lambda m, t, u, c, n: (torch.tensor(float("nan"), requires_grad=True), {}))
    with pytest.raises(StarloopError, match="non-finite"):
        train.train(peft_model, tok, strategies.get("sft").units(tok, EXAMPLES, cfg), cfg, seed=0, progress=False)


def test_validation_every_n_steps_logs_val_loss(fresh_tiny):
    model, tok = fresh_tiny
    cfg = TrainerConfig(lr=1e-2, train_batch_size=2, lora_r=4, val_every_n_steps=2, inner_epochs=2)
    peft_model = attach_lora(model, cfg, seed=0)
    units = strategies.get("sft").units(tok, EXAMPLES, cfg)
    val_units = strategies.get("sft").units(tok, EXAMPLES[:2], cfg)
    start = train.objective_loss(peft_model, tok, val_units, cfg)
    records = train.train(peft_model, tok, units, cfg, seed=0, progress=False,
                          validate=lambda step: {"val_loss": train.objective_loss(peft_model, tok, val_units, cfg)})
    logged = [r["val_loss"] for r in records if "val_loss" in r]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]
    assert logged[-1] < start  # the validation examples are among the training ones


def test_a_step_reads_the_device_at_most_twice(fresh_tiny, monkeypatch):
    """Every host read of a device value (item, bool, float, tolist) makes the host wait for the device: the
    loop reads once per optimizer step (loss, metrics, finiteness, gradient norm) and once after it (the weights'
    check), whatever grad_accum; the optimizer's own bookkeeping (CPU step counters) is not counted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        n, paused = 0, False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default and not self.paused:
                self.n += 1
            return func(*args, **(kwargs or {}))

    reads = Reads()
    real_tolist = torch.Tensor.tolist

    def tolist(self):
        reads.n += 0 if reads.paused else 1
        return real_tolist(self)

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    hooks = [register_optimizer_step_pre_hook(lambda *_: setattr(reads, "paused", True)),
             register_optimizer_step_post_hook(lambda *_: setattr(reads, "paused", False))]
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    model, tok = fresh_tiny
    cfg = TrainerConfig(train_batch_size=1, grad_accum=3, train_steps=2, lora_r=4)
    peft_model = attach_lora(model, cfg, seed=0)
    try:
        with reads:
            records = train.train(peft_model, tok, strategies.get("sft").units(tok, EXAMPLES, cfg), cfg, seed=0,
                                  progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert len(records) == 2 and all(r["wall_s"] > 0 for r in records)
    forwards = 3 * len(records)  # transformers' SDPA mask reads once per forward (is the batch unpadded?)
    assert reads.n <= 2 * len(records) + forwards


def test_foreach_adamw_gives_the_per_parameter_numbers_on_cpu():
    """The loop's CPU optimizer (foreach: a few ops for all LoRA matrices) must not change a CPU run's numbers."""
    cfg = TrainerConfig(lr=1e-2, weight_decay=0.1)
    start = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    weights = {}
    for kind in ("foreach", "per-parameter"):
        ps = [w.clone().requires_grad_() for w in start]
        opt = (train.make_optimizer(ps, cfg, "foreach") if kind == "foreach"
               else torch.optim.AdamW(ps, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False))
        g = torch.Generator().manual_seed(7)
        for _ in range(4):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        weights[kind] = ps
    assert all(torch.equal(a, b) for a, b in zip(weights["foreach"], weights["per-parameter"]))
    assert not torch.equal(weights["foreach"][0], start[0])


def _pairs_of_many_lengths(n: int = 7) -> list[PreferencePair]:
    return [PreferencePair(f"q{i}", f"Question {i}? " + "more context " * (3 * i % 7),
                           "Good reasoning. " * (1 + i % 3) + "The answer is (A)", "bad " * (1 + 2 * i % 5))
            for i in range(n)]


def test_reference_logps_do_not_depend_on_the_batching(fresh_tiny, monkeypatch):
    """Units are batched shortest first under a token budget: each unit must still get its own values, the
    ones it gets alone, and no forward may pass the budget (or the unit cap)."""
    from starloop import logprobs

    model, tok = fresh_tiny
    cfg = TrainerConfig(strategy="dpo", lora_r=4, lora_dropout=0.0)
    peft_model = attach_lora(model, cfg, seed=0)
    alone = strategies.get("dpo").units(tok, _pairs_of_many_lengths(), cfg)
    for u in alone:
        dpo.fill_reference_logps(peft_model, tok, [u], batch_size=1)
    shapes = []
    real = dpo.logps

    def counted(m, t, ctxs, conts):
        shapes.append((len(ctxs), max(len(c) + len(z) for c, z in zip(ctxs, conts))))
        return real(m, t, ctxs, conts)

    monkeypatch.setattr(dpo, "logps", counted)
    budget = 2 * max(len(u.ctx) + max(len(u.cont), len(u.rejected)) for u in alone) * 2  # about two units
    monkeypatch.setattr(logprobs, "SCORING_TOKENS", budget)
    batched = strategies.get("dpo").units(tok, _pairs_of_many_lengths(), cfg)
    dpo.fill_reference_logps(peft_model, tok, batched, batch_size=3)
    for a, b in zip(alone, batched, strict=True):
        assert b.scalars["ref_chosen"] == pytest.approx(a.scalars["ref_chosen"], abs=1e-4)
        assert b.scalars["ref_rejected"] == pytest.approx(a.scalars["ref_rejected"], abs=1e-4)
    assert 1 < len(shapes) < len(alone)  # fewer forwards than units, and more than one under this budget
    assert all(rows <= 2 * 3 and rows * longest <= budget for rows, longest in shapes)


def test_reference_batch_is_sized_for_a_forward_only_pass():
    assert dpo.reference_batch(TrainerConfig(train_batch_size=8, gen_batch_size=1024)) == 512
    assert dpo.reference_batch(TrainerConfig(train_batch_size=8, gen_batch_size=None)) == 8  # CPU: 16 rows
    assert dpo.reference_batch(TrainerConfig(train_batch_size=32, gen_batch_size=16)) == 32
