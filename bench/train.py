"""Training speed: one LoRA optimizer step of SFT and DPO through starloop's loop, against a plain PEFT loop
(causal-LM loss) and TRL's DPOTrainer on the same batch, in the same run.

    # GPU: Llama-3.1-8B's shape, random weights, bf16, LoRA r=64 on every linear layer
    python bench/train.py --shape llama-8b --out results/train.json
    # CPU: tiny shape, same code paths
    python bench/train.py --shape tiny --device cpu --seq 64 --variants starloop-sft trl-dpo-gc

Batch: SFT 8 sequences x --seq tokens (half prompt, half completion); DPO 8 pairs, each chosen and rejected
--seq tokens with the same prompt (16 sequences, 2 x 8 x seq tokens a step, as TRL counts them). tokens/s =
tokens in the step's sequences / step time (median of the timed steps, after one warm-up step).
Utilization = FLOPs per token x tokens/s / 989 TFLOP/s (H100 SXM dense bf16), with FLOPs per token
4 x params (forward + input gradients, no frozen-weight gradients: the LoRA convention of the earlier
baseline) and 6 x params (the full fine-tuning convention); params = all parameters, embeddings included;
attention FLOPs and gradient-checkpointing recompute are not counted. starloop's DPO reference log-probs are
computed once before training (adapter disabled), timed apart as `ref pass`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

import torch
from common import (
    PEAK_FLOPS,
    environment,
    measure_ceilings,
    out_dir,
    param_counts,
    random_model,
    sync,
    table,
    write_json,
)

from starloop import train as sl_train
from starloop.config import TrainerConfig
from starloop.models import attach_lora, bundled_smollm2_tokenizer

ACTIVE: dict = {}  # the LoRA-wrapped model of the running variant, unloaded even if the variant fails
VARIANTS = {
    # name: (kind, micro-batch, grad accumulation, gradient checkpointing, extra)
    "plain-sft-gc": ("plain", 8, 1, True, {}),
    "starloop-sft": ("sft", 8, 1, False, {}),
    "starloop-sft-gc": ("sft", 8, 1, True, {}),
    "starloop-dpo-gc": ("dpo", 8, 1, True, {}),
    "starloop-dpo-accum2": ("dpo", 4, 2, False, {}),
    "starloop-dpo-accum4": ("dpo", 2, 4, False, {}),
    "trl-dpo-gc": ("trl", 8, 1, True, {}),
    "trl-dpo-gc-precomputed-ref": ("trl", 8, 1, True, {"precompute_ref_log_probs": True}),
    "trl-dpo-accum2": ("trl", 4, 2, False, {}),
}
GPU_DEFAULT = ["plain-sft-gc", "starloop-sft", "starloop-sft-gc", "starloop-dpo-gc", "starloop-dpo-accum2",
               "trl-dpo-gc", "trl-dpo-gc-precomputed-ref", "trl-dpo-accum2"]


def trainer_cfg(kind: str, micro: int, accum: int, gc_on: bool) -> TrainerConfig:
    return TrainerConfig(strategy="dpo" if kind == "dpo" else "sft", lora_r=64, lora_alpha=128, lora_dropout=0.0,
                         train_batch_size=micro, grad_accum=accum, gradient_checkpointing=gc_on, lr=1e-4,
                         max_grad_norm=1.0, dpo_beta=0.1, inner_epochs=1)


def random_ids(n: int, vocab: int, g: torch.Generator) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=g).tolist()


class StepClock:
    """Wall time of each optimizer step (device synchronized at each step end)."""

    def __init__(self, device):
        self.device, self.t = device, [time.perf_counter()]

    def tick(self, *_a, **_k):
        sync(self.device)
        self.t.append(time.perf_counter())

    def step_s(self) -> float:
        d = [b - a for a, b in zip(self.t[1:], self.t[2:])]  # the first step (warm-up) is dropped
        return statistics.median(d)


def release() -> None:
    """Unwrap the running variant's LoRA model so that the next variant starts from the bare base model."""
    peft_model = ACTIVE.pop("peft", None)
    if peft_model is not None:
        peft_model.gradient_checkpointing_disable()  # a no-op when it was off
        peft_model.unload()


def run_starloop(model, tok, kind, micro, accum, gc_on, seq, steps, vocab, device) -> dict:
    cfg = trainer_cfg(kind, micro, accum, gc_on)
    g = torch.Generator().manual_seed(0)
    half = seq // 2
    n_units = steps * micro * accum
    res = {}
    peft_model = ACTIVE['peft'] = attach_lora(model, cfg, seed=0)
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    if kind == "sft":
        units = [sl_train.Unit(random_ids(half, vocab, g), random_ids(half, vocab, g)) for _ in range(n_units)]
        per_step = micro * accum * seq
    else:
        units = [sl_train.Unit(random_ids(half, vocab, g), random_ids(half, vocab, g), random_ids(half, vocab, g))
                 for _ in range(n_units)]
        per_step = micro * accum * 2 * seq
        sync(device)
        t = time.perf_counter()
        from starloop.strategies.dpo import fill_reference_logps

        fill_reference_logps(peft_model, tok, units, batch_size=micro)
        sync(device)
        res["ref_pass_tok_s"] = n_units * 2 * seq / (time.perf_counter() - t)
    clock = StepClock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sl_train.train(peft_model, tok, units, cfg, seed=0, on_log=clock.tick, progress=False)
    res.update(step_s=clock.step_s(), tokens_per_step=per_step)
    release()
    return res


def run_plain(model, tok, micro, gc_on, seq, steps, vocab, device) -> dict:
    """A plain PEFT loop: the model's own causal-LM loss over the completion (full logits)."""
    cfg = trainer_cfg("sft", micro, 1, gc_on)
    peft_model = ACTIVE['peft'] = attach_lora(model, cfg, seed=0)
    if gc_on:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    clock = StepClock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        ids = torch.tensor([random_ids(seq, vocab, g) for _ in range(micro)], device=device)
        labels = ids.clone()
        labels[:, : seq // 2] = -100
        loss = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        clock.tick()
    release()
    return {"step_s": clock.step_s(), "tokens_per_step": micro * seq}


def run_trl(model, tok, micro, accum, gc_on, seq, steps, device, extra) -> dict:
    import datasets
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    half = seq // 2
    # One token per " x" / " y" / " z" with this tokenizer: prompt half, completions half (EOS included).
    row = {"prompt": " x" * half, "chosen": " y" * (half - 1), "rejected": " z" * (half - 1)}
    ds = Dataset.from_list([row] * (steps * micro * accum))
    clock = StepClock(device)

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.tick()

    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                         max_steps=steps, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[],
                         bf16=device.type == "cuda", use_cpu=device.type != "cuda", gradient_checkpointing=gc_on,
                         max_length=seq, dataloader_num_workers=0, seed=0, beta=0.1, max_grad_norm=1.0,
                         disable_tqdm=True, logging_strategy="no", **extra)
        lora = LoraConfig(r=64, lora_alpha=128, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                             callbacks=[Tick()])
        ACTIVE["peft"] = trainer.model
        batch = next(iter(trainer.get_train_dataloader()))
        n_seq, width = batch["input_ids"].shape
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        clock.t = [time.perf_counter()]
        trainer.train()
    release()
    del trainer
    return {"step_s": clock.step_s(), "tokens_per_step": n_seq * width * accum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["llama-8b", "tiny"], default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (1024 on GPU)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per variant (the first is warm-up)")
    ap.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    shape = args.shape or ("llama-8b" if on_cuda else "tiny")
    seq = args.seq or (1024 if on_cuda else 64)
    env = environment(args.device)
    ceil = measure_ceilings(args.device)
    print(env, {k: f"{v:.4g}" for k, v in ceil.items()}, flush=True)
    model = random_model(shape, args.device, torch.bfloat16 if on_cuda else torch.float32, logit_std=None)
    tok = bundled_smollm2_tokenizer()
    tok.padding_side = "right"
    n_params = param_counts(model)["total"]
    peak = PEAK_FLOPS.get(device.type)
    print(f"model: random {shape}, {n_params / 1e9:.3f} B parameters", flush=True)
    rows = []
    json_path = args.out or (out_dir() and f"{out_dir()}/train.json")
    for name in args.variants or (GPU_DEFAULT if on_cuda else list(VARIANTS)):
        kind, micro, accum, gc_on, extra = VARIANTS[name]
        r = {"variant": name, "micro": micro, "accum": accum, "gc": gc_on}
        try:
            if kind == "plain":
                r.update(run_plain(model, tok, micro, gc_on, seq, args.steps, model.config.vocab_size, device))
            elif kind == "trl":
                r.update(run_trl(model, tok, micro, accum, gc_on, seq, args.steps, device, extra))
            else:
                r.update(run_starloop(model, tok, kind, micro, accum, gc_on, seq, args.steps,
                                      model.config.vocab_size, device))
            r["tok_s"] = r["tokens_per_step"] / r["step_s"]
            if on_cuda:
                r["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if peak:
                r["util_4p"] = 4 * n_params * r["tok_s"] / peak
                r["util_6p"] = 6 * n_params * r["tok_s"] / peak
        except Exception as e:  # noqa: BLE001 -- one failing variant must not lose the others' numbers
            import traceback

            traceback.print_exc()
            r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            release()
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        rows.append(r)
        print(r, flush=True)
        write_json(json_path, {"env": env, "ceilings": ceil, "shape": shape, "seq": seq, "rows": rows}, quiet=True)
    ref = {r["variant"]: r.get("tok_s") for r in rows}
    for r in rows:
        base = ref.get("trl-dpo-gc") if "dpo" in r["variant"] else ref.get("plain-sft-gc")
        if base and r.get("tok_s"):
            r["vs_baseline"] = r["tok_s"] / base
    cols = [("variant", "variant"), ("micro", "micro-batch"), ("accum", "accum"), ("gc", "checkpointing"),
            ("tokens_per_step", "tokens/step"), ("step_s", "step s"), ("tok_s", "tokens/s"),
            ("vs_baseline", "ratio vs baseline"), ("util_4p", "util (4P)"), ("util_6p", "util (6P)"),
            ("peak_gib", "peak GiB"), ("ref_pass_tok_s", "ref pass tok/s"), ("error", "error")]
    print(f"\n{env['card']}, {env['date']}, random {shape}, LoRA r=64 all-linear, seq {seq}, torch {env['torch']}, "
          f"transformers {env['transformers']} (baseline: plain-sft-gc for SFT, trl-dpo-gc for DPO)")
    print(table(rows, cols), flush=True)
    write_json(json_path, {"env": env, "ceilings": ceil, "shape": shape, "seq": seq, "rows": rows})


if __name__ == "__main__":
    main()
