"""One readable training loop: units -> batches -> log-probs -> loss -> optimizer step.

A strategy (`OBJECTIVES`) turns the iteration's training data into tokenized units and a loss over a
batch of units:
- sft: correct rationales, token-mean NLL on the completion.
- dpo: (chosen, rejected) pairs; reference log-probs computed once before the first step with the
  LoRA adapter disabled (or the previous iteration's adapter), never from a second model copy.
- reinforce: every sample with its advantage (reward minus the RLOO / mean baseline of its question),
  computed over the whole iteration first so that a micro-batch never splits a baseline.
- weighted_sft: every sample weighted by softmax(r / lambda) over its question's samples, the
  max-entropy target pi* ∝ pi_ref exp(r / lambda) (weights also computed over the whole iteration).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from starloop import distributed, losses
from starloop.build import Example
from starloop.config import TrainerConfig
from starloop.errors import StarloopError
from starloop.logprobs import batch_from_pairs, model_sequence_logprobs
from starloop.records import PreferencePair
from starloop.rewards import group_index

log = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 5
OOM_ADVICE = ("out of memory while training: lower trainer.train_batch_size (raise trainer.grad_accum to keep "
              "the effective batch), lower trainer.max_seq_len, or set trainer.gradient_checkpointing=true")


@contextlib.contextmanager
def oom_advice():
    """Out of memory in a training forward/backward -> one-line StarloopError naming the knobs to turn."""
    from starloop.sampling import is_oom

    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        raise StarloopError(OOM_ADVICE) from None


@dataclass
class Unit:
    """One item of a batch: token ids of a prompt and one or two completions, plus precomputed scalars."""

    ctx: list[int]
    cont: list[int]
    rejected: list[int] | None = None
    scalars: dict[str, float] = field(default_factory=dict)


def tokenize_pair(tok, prompt: str, completion: str, max_len: int) -> tuple[list[int], list[int]]:
    """Prompt and completion ids (completion ends with EOS); long prompts lose their left part first."""
    ctx = tok(prompt, add_special_tokens=False)["input_ids"]
    cont = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    cont = cont[: max_len // 2] if len(cont) > max_len // 2 and len(ctx) + len(cont) > max_len else cont
    ctx = ctx[-(max_len - len(cont)) :] if len(ctx) + len(cont) > max_len else ctx
    return ctx, cont


@contextlib.contextmanager
def mixed_precision(model):
    """Autocast to the base weights' half dtype on CUDA (a forward pass runs inside; backward after).

    peft keeps LoRA weights in float32 and casts each layer's input to float32 before them; without
    autocast those matmuls would run in float32, off the tensor cores. Under autocast the cast is a
    round trip (float32 copy, then back to half for the matmul), so it is switched off meanwhile."""
    p = next(model.parameters())
    if p.device.type != "cuda" or p.dtype not in (torch.bfloat16, torch.float16):
        yield
        return
    lora = [m for m in model.modules() if hasattr(m, "_cast_input_dtype")]  # peft's tuner layers
    saved = [getattr(m, "cast_input_dtype_enabled", True) for m in lora]
    for m in lora:
        m.cast_input_dtype_enabled = False
    try:
        with torch.autocast("cuda", dtype=p.dtype):
            yield
    finally:
        for m, v in zip(lora, saved):
            m.cast_input_dtype_enabled = v


def _logps(model, tok, ctxs, conts) -> tuple[torch.Tensor, torch.Tensor]:
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batch = batch_from_pairs(ctxs, conts, pad, side="right")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    return model_sequence_logprobs(model, **batch)


# --- objectives ----------------------------------------------------------------------------------


def sft_units(tok, examples: Sequence[Example], cfg: TrainerConfig) -> list[Unit]:
    return [Unit(*tokenize_pair(tok, e.prompt, e.completion, cfg.max_seq_len)) for e in examples]


def sft_batch_loss(model, tok, units: Sequence[Unit], cfg: TrainerConfig):
    logp, n = _logps(model, tok, [u.ctx for u in units], [u.cont for u in units])
    loss = losses.sft_loss(logp, n)
    return loss, {"nll": loss.detach()}


def dpo_units(tok, pairs: Sequence[PreferencePair], cfg: TrainerConfig) -> list[Unit]:
    out = []
    for p in pairs:
        ctx, chosen = tokenize_pair(tok, p.prompt, p.chosen, cfg.max_seq_len)
        ctx_r, rejected = tokenize_pair(tok, p.prompt, p.rejected, cfg.max_seq_len)
        # Both completions share one context; keep the shorter (left-truncated) one so both fit.
        out.append(Unit(ctx if len(ctx) <= len(ctx_r) else ctx_r, chosen, rejected))
    return out


@torch.no_grad()
def fill_reference_logps(model, tok, units: Sequence[Unit], batch_size: int, reference: str = "base") -> None:
    """Store the reference policy's log-probs of chosen/rejected in each unit (once per iteration).

    base: the model with its LoRA adapter disabled. previous: the adapter as it is before training
    (the last iteration's, when training continues from it).
    """
    was_training = model.training
    model.eval()
    ctx_mgr = model.disable_adapter() if reference == "base" and hasattr(model, "disable_adapter") \
        else contextlib.nullcontext()
    with ctx_mgr, mixed_precision(model):
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            ctxs = [u.ctx for u in chunk] * 2
            conts = [u.cont for u in chunk] + [u.rejected for u in chunk]  # type: ignore[misc]
            with oom_advice():
                logp, _ = _logps(model, tok, ctxs, conts)
            for i, u in enumerate(chunk):
                u.scalars["ref_chosen"] = float(logp[i])
                u.scalars["ref_rejected"] = float(logp[len(chunk) + i])
    model.train(was_training)


def dpo_batch_loss(model, tok, units: Sequence[Unit], cfg: TrainerConfig):
    b = len(units)
    logp, n = _logps(model, tok, [u.ctx for u in units] * 2,
                     [u.cont for u in units] + [u.rejected for u in units])  # type: ignore[misc]
    dev = logp.device
    ref_c = torch.tensor([u.scalars["ref_chosen"] for u in units], device=dev)
    ref_r = torch.tensor([u.scalars["ref_rejected"] for u in units], device=dev)
    return losses.rpo_loss(logp[:b], logp[b:], ref_c, ref_r, cfg.dpo_beta, cfg.dpo_nll_weight,
                           chosen_tokens=n[:b], loss_type=cfg.dpo_loss, rejected_tokens=n[b:])


def reward_units(tok, examples: Sequence[Example], cfg: TrainerConfig) -> list[Unit]:
    """Tokenize rewarded samples and attach the per-sample coefficient of the loss.

    reinforce: advantage A_i (baseline within the question). weighted_sft: w_i = softmax(r / lambda)
    within the question. Both are computed over the whole set, before batching.
    """
    if not examples:
        return []
    rewards = torch.tensor([e.reward for e in examples], dtype=torch.float32)
    groups = group_index([e.group for e in examples])
    if cfg.strategy == "reinforce":
        coef = losses.advantages(rewards, groups, cfg.baseline, cfg.clip_negative_advantages)
    else:
        coef = losses.target_weights(rewards, groups, cfg.weighted_sft_lambda)
    units = []
    for e, c in zip(examples, coef.tolist()):
        ctx, cont = tokenize_pair(tok, e.prompt, e.completion, cfg.max_seq_len)
        units.append(Unit(ctx, cont, scalars={"coef": c, "reward": e.reward}))
    return units


def reward_batch_loss(model, tok, units: Sequence[Unit], cfg: TrainerConfig):
    """- sum_i c_i log pi(z_i|x_i) / sum_i |z_i| with c = advantage (reinforce) or target weight."""
    logp, n = _logps(model, tok, [u.ctx for u in units], [u.cont for u in units])
    coef = torch.tensor([u.scalars["coef"] for u in units], device=logp.device)
    loss = losses.reinforce_loss(logp, coef, n)
    return loss, {"mean_coef": coef.mean(), "logp": (logp / n.clamp(min=1)).detach().mean()}


BatchLoss = Callable[..., tuple[torch.Tensor, dict]]
OBJECTIVES: dict[str, BatchLoss] = {
    "sft": sft_batch_loss,
    "dpo": dpo_batch_loss,
    "reinforce": reward_batch_loss,
    "weighted_sft": reward_batch_loss,
}


# --- the loop ------------------------------------------------------------------------------------


def batches(units: Sequence[Unit], batch_size: int, seed: int) -> list[list[Unit]]:
    """Seeded shuffle, then length-bucketed: sort within windows of 16 batches to cut padding."""
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    window = batch_size * 16
    out = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(units[i].ctx) + len(units[i].cont))
        out += [[units[i] for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
    random.Random(seed + 1).shuffle(out)
    return out


def make_scheduler(optimizer, cfg: TrainerConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(total_steps, 1))


def train(model, tok, units: Sequence[Unit], cfg: TrainerConfig, *, seed: int,
          on_log: Callable[[dict], None] | None = None,
          validate: Callable[[int], dict] | None = None, progress: bool = True) -> list[dict]:
    """Optimize the trainable (LoRA) parameters on `units`; returns the per-step log records.

    A non-finite loss or gradient skips the step (warning); MAX_NONFINITE_IN_A_ROW in a row stop the
    run with an error, before anything is saved.
    """
    from tqdm.auto import tqdm

    loss_fn = OBJECTIVES[cfg.strategy]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise StarloopError("no trainable parameters (attach a LoRA adapter first)")
    if cfg.single_batch:
        first = batches(units, cfg.train_batch_size, seed)[:1]
        plan = [first for _ in range(cfg.single_batch_steps)]
        accum = 1
    else:
        plan = [batches(units, cfg.train_batch_size, seed + e) for e in range(cfg.inner_epochs)]
        accum = cfg.grad_accum
    micro = [b for epoch in plan for b in epoch]
    total_steps = math.ceil(len(micro) / accum)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, cfg, total_steps)
    model.train()
    if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Dropout draws from the global RNG: seeding it here makes a resumed run's iteration k train exactly
    # like the uninterrupted run's, whatever ran before it in the process.
    torch.manual_seed(seed)
    records: list[dict] = []
    bad_in_a_row = 0
    step, t0, tokens = 0, time.time(), 0
    bar = tqdm(total=total_steps, desc=f"train {cfg.strategy}", disable=not progress, leave=False)
    rank, n_proc = distributed.world()
    for start in range(0, len(micro), accum):
        group = micro[start : start + accum]
        opt.zero_grad(set_to_none=True)
        agg: dict[str, float] = {}
        finite = True
        for b in group[rank::n_proc]:  # with several processes each takes its share of the step
            with oom_advice(), mixed_precision(model):
                loss, metrics = loss_fn(model, tok, b, cfg)
            if not torch.isfinite(loss):
                finite = False
                break
            with oom_advice():
                (loss / len(group)).backward()
            tokens += sum(len(u.ctx) + len(u.cont) + len(u.rejected or []) for u in b)
            agg["loss"] = agg.get("loss", 0.0) + float(loss.detach()) / len(group)
            for k, v in metrics.items():
                agg[k] = agg.get(k, 0.0) + float(v) / len(group)
        finite = not distributed.any_process(not finite)
        if finite:
            distributed.all_reduce_grads(params)  # sum of shares = the one-process gradient of the step
            agg = distributed.sum_floats(agg)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1e30)
        if not finite or not torch.isfinite(grad_norm):
            bad_in_a_row += 1
            log.warning("non-finite loss or gradient at step %d: step skipped", step + 1)
            opt.zero_grad(set_to_none=True)
            if bad_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise StarloopError(f"training stopped: non-finite loss or gradient in {bad_in_a_row} steps in a "
                                    "row (lower trainer.lr or check the data); the last good adapter is kept")
            continue
        bad_in_a_row = 0
        opt.step()
        sched.step()
        step += 1
        check_finite_weights(params, step)
        rec = {"step": step, **agg, "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0],
               "tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
        if validate and cfg.val_every_n_steps and step % cfg.val_every_n_steps == 0:
            rec.update(validate(step))
            model.train()
        records.append(rec)
        if on_log and step % max(cfg.log_every_n_steps, 1) == 0:
            on_log(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{agg.get('loss', float('nan')):.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
    bar.close()
    model.eval()
    return records


@torch.no_grad()
def check_finite_weights(params: Sequence[torch.Tensor], step: int) -> None:
    """Stop (one line, before anything is saved) once an optimizer step left a trainable weight NaN or
    infinite: a finite loss and gradient can still give such a step (a huge or infinite learning rate)."""
    norms = torch._foreach_norm([p.detach() for p in params])
    if not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        raise StarloopError(f"training stopped: optimizer step {step} made the LoRA weights non-finite (lower "
                            "trainer.lr); this iteration's adapter is not saved, the last good adapter is kept")


@torch.no_grad()
def objective_loss(model, tok, units: Sequence[Unit], cfg: TrainerConfig) -> float:
    """Mean objective over `units` without gradients (validation loss)."""
    if not units:
        return float("nan")
    was = model.training
    model.eval()
    vals = [float(OBJECTIVES[cfg.strategy](model, tok, units[s : s + cfg.train_batch_size], cfg)[0])
            for s in range(0, len(units), cfg.train_batch_size)]
    model.train(was)
    return sum(vals) / len(vals)
