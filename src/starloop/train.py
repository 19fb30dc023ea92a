"""One readable training loop: units -> optimizer steps -> log-probs -> loss -> step.

What a strategy trains (its units and batch loss) lives in `starloop.strategies`; this module holds what
they share: units and their tokenization, the optimizer steps, and the loop. Every loss is a mean over the
whole optimizer step (`StepTotals`), so the gradient does not depend on grad_accum, micro-batch size or
order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from starloop import distributed, interrupt
from starloop.errors import StarloopError
from starloop.logprobs import batch_from_pairs, model_sequence_logprobs
from starloop.oom import oom_advice

if TYPE_CHECKING:
    from starloop.config import TrainerConfig

log = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 5
@dataclass
class Unit:
    """One item of a batch: token ids of a prompt and one or two completions, plus precomputed scalars.

    A completion ends with the end-of-sequence token only if the sampled rationale ended there (a rationale
    cut by max_new_tokens must not teach the model to stop at an arbitrary point)."""

    ctx: list[int]
    cont: list[int]
    rejected: list[int] | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    source: str = ""  # the question it comes from (its group), named when its micro-batch goes non-finite

    def length(self) -> int:
        """Longest sequence this unit puts through the model (prompt + the longer completion)."""
        return len(self.ctx) + max(len(self.cont), len(self.rejected or []))


def tokenize_pair(tok, prompt: str, completion: str, eos: bool = True) -> tuple[list[int], list[int]]:
    """Prompt and completion ids, never cut (too long a unit is dropped by `drop_too_long` instead)."""
    ctx = tok(prompt, add_special_tokens=False)["input_ids"]
    cont = tok(completion, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    return ctx, cont


def drop_too_long(units: list[Unit], max_len: int) -> tuple[list[Unit], int]:
    """(units whose prompt + completion fit in max_len tokens, how many did not). A prompt is never cut:
    cutting its left part would train the rationale on a question the model was never shown."""
    kept = [u for u in units if u.length() <= max_len]
    return kept, len(units) - len(kept)


def lora_layers(model) -> list:
    """peft's tuner layers of `model` (those that cast their input to the LoRA weights' dtype)."""
    return [m for m in model.modules() if hasattr(m, "_cast_input_dtype")]


@contextlib.contextmanager
def mixed_precision(model, layers: list | None = None):
    """Autocast to the base weights' half dtype on CUDA (a forward pass runs inside; backward after).

    peft keeps LoRA weights in float32 and casts each layer's input to float32 before them; without
    autocast those matmuls would run in float32, off the tensor cores. Under autocast the cast is a
    round trip (float32 copy, then back to half for the matmul), so it is switched off meanwhile. `layers`:
    `lora_layers(model)` when the caller has them (walking a 28-layer model's modules costs a few ms)."""
    p = next(model.parameters())
    if p.device.type != "cuda" or p.dtype not in (torch.bfloat16, torch.float16):
        yield
        return
    lora = lora_layers(model) if layers is None else layers
    saved = [getattr(m, "cast_input_dtype_enabled", True) for m in lora]
    for m in lora:
        m.cast_input_dtype_enabled = False
    try:
        with torch.autocast("cuda", dtype=p.dtype):
            yield
    finally:
        for m, v in zip(lora, saved):
            m.cast_input_dtype_enabled = v


def logps(model, tok, ctxs, conts) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(cont | ctx) per row, token count of each cont), [B] each."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batch = batch_from_pairs(ctxs, conts, pad, side="right")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    return model_sequence_logprobs(model, **batch)


def all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every element of `tensors` (a non-empty list) is finite, as a 0-d bool tensor on their device
    (no host sync): a tensor's norm is finite exactly when all its elements are."""
    return torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(list(tensors))])).all()


def grads_finite_flag(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every gradient of `params` is finite, as a 0-d bool tensor on their device (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    return all_finite(grads) if grads else torch.ones((), dtype=torch.bool, device=params[0].device)


def _add(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    sums[key] = sums[key] + value if key in sums else value


def _clip(params: Sequence[torch.Tensor], cfg: TrainerConfig) -> torch.Tensor:
    """Clip the step's gradient to trainer.max_grad_norm (0: not clipped); returns its norm before clipping."""
    return torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1e30)


def _read(sums: dict[str, torch.Tensor], flags: list[torch.Tensor],
          grad_norm: torch.Tensor | None) -> tuple[dict[str, float], list[bool]]:
    """The step's device scalars as Python numbers, in one device-to-host copy: (sums, and "grad_norm" when
    given), and the finiteness flags. Sums are float64, so they equal the Python sums of the per-micro-batch
    floats they replace."""
    parts = [v.reshape(1).double() for v in sums.values()] + [f.reshape(1).double() for f in flags]
    if grad_norm is not None:
        parts.append(grad_norm.reshape(1).double())
    got = torch.cat([p.to(parts[0].device) for p in parts]).tolist() if parts else []
    values = dict(zip(sums, got))
    if grad_norm is not None:
        values["grad_norm"] = got[-1]
    return values, [bool(x) for x in got[len(sums) : len(sums) + len(flags)]]


def make_optimizer(params: Sequence[torch.Tensor], cfg: TrainerConfig, kind: str = "foreach"):
    """AdamW over the trainable parameters. kind: "fused" (one kernel for all of them, as transformers' Trainer
    uses on CUDA; its rounding differs from the others in the last bits), "foreach" (a few ops over the whole
    list; on CPU the same numbers as torch's per-parameter default, which runs ~8 ops per LoRA matrix) or
    "default" (torch's choice: for weights sharded over processes)."""
    extra = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[kind]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def nonfinite_record(position: int, group: list[list[Unit]], culprit: tuple[list[Unit], str] | None) -> dict:
    """What a skipped step's warning and the next step record say: the optimizer step's position in the plan,
    and the first micro-batch whose loss or gradient was non-finite (its questions, lengths, padded length)."""
    if culprit is None:  # found after the micro-batches' gradients were summed (or on another process)
        return {"position": position, "non_finite": "gradient"}
    b, what = culprit
    lengths = [u.length() for u in b]
    index = next(i for i, g in enumerate(group) if g is b)
    return {"position": position, "non_finite": what, "micro_batch": index + 1,
            "questions": [u.source for u in b], "lengths": lengths, "padded_to": max(lengths)}


def nonfinite_message(r: dict, total: int, accum: int) -> str:
    where = f"non-finite {r['non_finite']} in optimizer step {r['position']} of {total}"
    if "micro_batch" in r:
        lengths = r["lengths"]
        where += (f", micro-batch {r['micro_batch']} of {accum}: {len(lengths)} sequences of {min(lengths)}-"
                  f"{max(lengths)} tokens, padded to {r['padded_to']} (questions {', '.join(r['questions'])})")
    return where + ": step skipped"


@contextlib.contextmanager
def attention_kernels():
    """The attention kernels training may use: every SDPA backend but cuDNN's, held through forward and backward
    (activation checkpointing runs the forward again inside backward, and picks a kernel again there).

    cuDNN's SDPA backward (torch >= 2.11 on H100/H200, where cuDNN is the first kernel tried for a masked, i.e.
    padded, batch) returns NaN query gradients when the padded length is 64 mod 128 (192, 320, 448, ...) and some attention row's
    logsumexp is below ln(FLT_MAX) ~ -88.7, as Qwen2.5's massive-activation heads give: every optimizer step with
    such a micro-batch was skipped as non-finite. The flash, memory-efficient and math kernels are finite on the
    same inputs. Sampling and scoring (forward only) keep every kernel.

    Under `deterministic=true` only the math kernel: the memory-efficient kernel's backward (the one a padded batch
    gets) splits its key loop and adds the parts up in a varying order unless torch's deterministic mode is strict,
    which would stop runs at other ops that have no deterministic kernel; the math kernel is plain matmuls and a
    softmax, deterministic with cuBLAS's fixed workspace, at the cost of the T x T attention matrix in memory."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if torch.are_deterministic_algorithms_enabled():
        backends = [SDPBackend.MATH]
    else:
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        yield


# --- the optimizer step ---------------------------------------------------------------------------
# A strategy's batch loss returns its micro-batch's *share* of the optimizer step's loss (denominators
# from `StepTotals`, the whole step's counts), so that summing the shares gives the step's loss for any
# grad_accum, micro-batch size or order; and its metrics as micro-batch means.


@dataclass
class StepTotals:
    """Counts of a whole optimizer step, the denominators of every micro-batch's loss."""

    sequences: int  # units (pairs for dpo) in the step
    tokens: int  # completion tokens (chosen completions for dpo)
    weighted_tokens: float  # sum of coef * completion tokens (weighted_sft)
    nominal_sequences: int  # train_batch_size * grad_accum: the policy gradient's constant

    @classmethod
    def of(cls, units: Sequence[Unit], nominal_sequences: int) -> StepTotals:
        return cls(len(units), sum(len(u.cont) for u in units),
                   sum(u.scalars.get("coef", 1.0) * len(u.cont) for u in units), nominal_sequences)


# --- the loop ------------------------------------------------------------------------------------


def optimizer_steps(units: Sequence[Unit], batch_size: int, accum: int, seed: int) -> list[list[list[Unit]]]:
    """Optimizer steps of batch_size * accum units, each split into `accum` micro-batches.

    Seeded shuffle, then length-sorted within windows of 16 steps to cut padding, then the steps shuffled.
    Which units share a step depends only on batch_size * accum and the seed, so (batch 4, accum 1) and
    (batch 1, accum 4) take the same steps and, with step-level denominators, the same gradients."""
    size = batch_size * accum
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    window = size * 16
    steps = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: (units[i].length(), i))
        steps += [chunk[s : s + size] for s in range(0, len(chunk), size)]
    random.Random(seed + 1).shuffle(steps)
    return [[[units[i] for i in step[m : m + batch_size]] for m in range(0, len(step), batch_size)]
            for step in steps]


def make_scheduler(optimizer, cfg: TrainerConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(total_steps, 1))


def plan_steps(units: Sequence[Unit], cfg: TrainerConfig, seed: int, iteration: int = 1) -> list[list[list[Unit]]]:
    """The optimizer steps of one training stage, each a list of micro-batches.

    single_batch: the first micro-batch, single_batch_steps times. train_steps: that many steps in iteration
    1, times steps_growth per later iteration (STaR: 40 steps, +20% per iteration), passing over the data
    as often as needed. Otherwise inner_epochs passes."""
    if cfg.single_batch:
        first = optimizer_steps(units, cfg.train_batch_size, 1, seed)[:1]
        return first * cfg.single_batch_steps if first else []
    target = None if cfg.train_steps is None else round(cfg.train_steps * cfg.steps_growth ** (iteration - 1))
    steps: list[list[list[Unit]]] = []
    epoch = 0
    while units and (len(steps) < target if target is not None else epoch < cfg.inner_epochs):
        steps += optimizer_steps(units, cfg.train_batch_size, cfg.grad_accum, seed + epoch)
        epoch += 1
    return steps[:target] if target is not None else steps


def process_share(group: list[list[Unit]], rank: int, n_proc: int, sharded: bool) -> list[tuple[list[Unit], float]]:
    """(micro-batch, weight) pairs this process runs in an optimizer step: every n_proc-th micro-batch.

    Sharded, every process must run as many forward/backward passes as the busiest one (each pass gathers
    weights from all processes), so a shorter share is padded with a micro-batch at weight 0."""
    mine = [(b, 1.0) for b in group[rank::n_proc]]
    if sharded:
        mine += [(group[0], 0.0)] * (-(-len(group) // n_proc) - len(mine))
    return mine


def is_sharded(model) -> bool:
    from starloop.sharding import is_sharded

    return distributed.world()[1] > 1 and is_sharded(model)


def train(model, tok, units: Sequence[Unit], cfg: TrainerConfig, *, seed: int, iteration: int = 1,
          on_log: Callable[[dict], None] | None = None,
          validate: Callable[[int], dict] | None = None, progress: bool = True) -> list[dict]:
    """Optimize the trainable (LoRA) parameters on `units`; returns the per-step log records.

    A non-finite loss or gradient skips the step (a warning naming the micro-batch, and `skipped_steps` in the
    next step record); MAX_NONFINITE_IN_A_ROW in a row stop the run with an error, before anything is saved.
    """
    from starloop.strategies import get

    strategy = get(cfg.strategy)
    with strategy.train_context(model, cfg), attention_kernels():
        return _train_loop(model, tok, units, cfg, strategy.batch_loss, seed=seed, iteration=iteration,
                           on_log=on_log, validate=validate, progress=progress)


def _train_loop(model, tok, units, cfg, loss_fn, *, seed, iteration, on_log, validate, progress) -> list[dict]:
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise StarloopError("no trainable parameters (attach a LoRA adapter first)")
    plan = plan_steps(units, cfg, seed, iteration)
    nominal = cfg.train_batch_size * (1 if cfg.single_batch else cfg.grad_accum)
    total_steps = len(plan)
    device = params[0].device
    opt = make_optimizer(params, cfg, "default" if is_sharded(model) else "fused" if device.type == "cuda" else "foreach")
    sched = make_scheduler(opt, cfg, total_steps)
    model.train()
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    # Dropout draws from the global RNG: seeding it here makes a resumed run's iteration k train exactly
    # like the uninterrupted run's, whatever ran before it in the process.
    torch.manual_seed(seed)
    records: list[dict] = []
    skipped: list[dict] = []  # steps skipped since the last record
    bad_in_a_row = 0
    step, t0, tokens = 0, time.time(), 0
    bar = tqdm(total=total_steps, desc=f"train {cfg.strategy}", disable=not progress, leave=False)
    rank, n_proc = distributed.world()
    sharded = is_sharded(model)
    layers = lora_layers(model)  # found once, not at every forward
    for position, group in enumerate(plan, start=1):
        interrupt.check()  # a SIGTERM a finalizer swallowed stops the run here, not after the whole stage
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        totals = StepTotals.of([u for b in group for u in b], nominal)
        share = process_share(group, rank, n_proc, sharded)
        # Loss, metrics and finiteness stay on the device until the step's one read (`_read`): a read per
        # micro-batch would make the host wait for the device each time, and then the device wait for the host.
        sums: dict[str, torch.Tensor] = {}
        checks: list[tuple[list[Unit], str, torch.Tensor]] = []  # (micro-batch, "loss"/"gradient", finite?)
        for i, (b, weight) in enumerate(share):  # each process takes its share of the step
            with oom_advice(), mixed_precision(model, layers):
                loss, metrics = loss_fn(model, tok, b, cfg, totals)
            if weight == 0.0:  # sharded: a pass every process must run (weights are gathered), worth nothing
                (loss * 0.0).backward()
                continue
            checks.append((b, "loss", torch.isfinite(loss.detach())))
            with oom_advice():
                loss.backward()  # the micro-batch's share of the step's loss: shares add up
            # Whether this micro-batch made the gradient non-finite. Alone, the last one is told by the step's
            # gradient norm below; sharded, the local gradient is only a shard (the step as a whole is checked).
            if not sharded and (n_proc > 1 or i < len(share) - 1):
                checks.append((b, "gradient", grads_finite_flag(params)))
            tokens += sum(len(u.ctx) + len(u.cont) + len(u.rejected or []) for u in b)
            _add(sums, "loss", loss.detach().double())
            for k, v in metrics.items():  # micro-batch means -> the step's mean
                _add(sums, k, torch.as_tensor(v, device=device).detach().double() * len(b) / totals.sequences)
        alone = n_proc == 1
        grad_norm = _clip(params, cfg) if alone else None
        values, flags = _read(sums, [c[2] for c in checks], grad_norm)
        culprit = next(((b, what) for (b, what, _), ok in zip(checks, flags) if not ok), None)
        if alone and culprit is None and checks and not math.isfinite(values["grad_norm"]):
            culprit = (share[-1][0], "gradient")  # the last micro-batch made the step's gradient non-finite
        finite = culprit is None and (not alone or math.isfinite(values["grad_norm"]))
        if not alone:
            finite = not distributed.any_process(not finite)
            if finite:
                if not sharded:  # sharded, FSDP has already summed the gradients into each process's shard
                    distributed.all_reduce_grads(params)  # sum of shares = the one-process gradient of the step
                grad_norm = _clip(params, cfg)
                values["grad_norm"] = float(grad_norm)
                finite = math.isfinite(values["grad_norm"])
            agg = distributed.sum_floats({k: v for k, v in values.items() if k != "grad_norm"}) if finite else {}
        else:
            agg = {k: v for k, v in values.items() if k != "grad_norm"}
        if not finite:
            bad_in_a_row += 1
            skipped.append(nonfinite_record(position, group, culprit))
            log.warning(nonfinite_message(skipped[-1], total_steps, len(group)))
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
        rec = {"step": step, **agg, "grad_norm": values["grad_norm"], "lr": sched.get_last_lr()[0],
               "tokens_per_s": tokens / max(time.time() - t0, 1e-9), "wall_s": time.perf_counter() - started}
        if skipped:
            rec["skipped_steps"], skipped = skipped, []
        if validate and cfg.val_every_n_steps and step % cfg.val_every_n_steps == 0:
            rec.update(validate(step))
            model.train()
        records.append(rec)
        if on_log and step % max(cfg.log_every_n_steps, 1) == 0:
            on_log(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{agg.get('loss', float('nan')):.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
    if skipped and records:  # the last steps were skipped: the last record names them
        records[-1]["skipped_steps"] = records[-1].get("skipped_steps", []) + skipped
    bar.close()
    model.eval()
    return records


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing under either name transformers has used for it."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@torch.no_grad()
def check_finite_weights(params: Sequence[torch.Tensor], step: int) -> None:
    """Stop (one line, before anything is saved) once an optimizer step left a trainable weight NaN or
    infinite: a finite loss and gradient can still give such a step (a huge or infinite learning rate)."""
    if not bool(all_finite(params)):  # under no_grad: no detached copies (one op per weight) needed
        raise StarloopError(f"training stopped: optimizer step {step} made the LoRA weights non-finite (lower "
                            "trainer.lr); this iteration's adapter is not saved, the last good adapter is kept")


@torch.no_grad()
def objective_loss(model, tok, units: Sequence[Unit], cfg: TrainerConfig) -> float:
    """Mean objective over `units` without gradients (validation loss): batches of train_batch_size, each
    its own step."""
    from starloop.strategies import get

    if not units:
        return float("nan")
    was = model.training
    model.eval()
    vals = []
    for s in range(0, len(units), cfg.train_batch_size):
        chunk = units[s : s + cfg.train_batch_size]
        vals.append(float(get(cfg.strategy).batch_loss(model, tok, chunk, cfg, StepTotals.of(chunk, len(chunk)))[0]))
    model.train(was)
    return sum(vals) / len(vals)
