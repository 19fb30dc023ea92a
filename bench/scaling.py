"""Scaling over processes (GPUs): the same work on 1 and on N, in three parts.

- sampling: --rows rows (questions x k, the STaR shape: k=4 samples at T=0.7, top-p 0.95, --prompt-tokens
  prompts, --new tokens each) through the static sampler, each process taking every N-th question;
  tok/s = all new tokens / the slowest process's wall time.
- train: LoRA (r=64, all linear layers) SFT and DPO optimizer steps of --micro x --accum sequences of --seq
  tokens through starloop's loop, `replicated` (every process holds the model; gradients all-reduced) and
  `sharded` (FSDP2, as configs/accelerate/fsdp2.yaml: each process holds 1/N of every weight); tokens/s =
  tokens of a step / median step time; peak GiB = each process's peak allocated memory.
- largest: sharded SFT steps (micro-batch 1, gradient checkpointing) on growing Llama shapes until one fails;
  each is built on the meta device and materialized shard by shard, so no process ever holds it whole.

    # one GPU, then two (NVLink multicast stays off in every multi-GPU launch)
    python bench/scaling.py --out results/scaling_1gpu.json
    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \\
        accelerate launch --multi_gpu --num_processes 2 bench/scaling.py --out results/scaling_2gpu.json
    python bench/scaling.py --compare results/scaling_1gpu.json results/scaling_2gpu.json
    # CPU, tiny shapes, two processes over gloo (the test)
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 bench/scaling.py --device cpu \\
        --shape tiny --rows 8 --new 4 --prompt-tokens 8 --seq 32 --micro 2 --accum 2 --largest tiny tiny-deep

Random weights: speed and memory do not depend on their values. On one process `sharded` is skipped (there
is nothing to shard over).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from common import SHAPES, environment, random_model, sync, table, write_json

from starloop import distributed, sharding
from starloop import train as sl_train
from starloop.config import TrainerConfig
from starloop.models import attach_lora, bundled_smollm2_tokenizer

# NCCL's NVLink multicast (NVLS) stays off wherever this runs on several GPUs.
for _k, _v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(_k, _v)

_70B = {"vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
        "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0,
        "tie_word_embeddings": False}
# Shapes for `largest`, smallest first: Llama-3.1-8B, then Llama-3.1-70B's layer with 40 and 80 layers.
SHAPES.update({
    "llama-70b-40l": {**_70B, "num_hidden_layers": 40},  # ~35 B parameters
    "llama-70b": {**_70B, "num_hidden_layers": 80},  # Llama-3.1-70B
    "tiny-deep": {**SHAPES["tiny"], "num_hidden_layers": 4},
})
GPU_LARGEST = ["llama-8b", "llama-70b-40l", "llama-70b"]
SAMPLE = {"temperature": 0.7, "top_p": 0.95}


def gather(value):
    """One value per process, in rank order (every process gets the list)."""
    if distributed.world()[1] == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- sampling -------------------------------------------------------------------------------------


def run_sampling(model, args, device) -> dict:
    from starloop.fast_sampling import StaticSampler

    rank, world = distributed.world()
    k = 4
    g = torch.Generator().manual_seed(0)
    questions = [torch.randint(3, model.config.vocab_size, (args.prompt_tokens,), generator=g).tolist()
                 for _ in range(args.rows // k)]
    mine = [q for q in questions[rank::world] for _ in range(k)]
    seeds = list(range(len(mine)))
    sampler = StaticSampler(model, None, batch_size=min(args.batch, len(mine)))
    sampler.generate_ids(mine[: sampler.batch_size], seeds[: sampler.batch_size], max_new_tokens=2,
                         eos_token_id=None, **SAMPLE)  # compile and capture outside the timing
    distributed.barrier()
    sync(device)
    t = time.perf_counter()
    out = sampler.generate_ids(mine, seeds, max_new_tokens=args.new, eos_token_id=None, **SAMPLE)
    sync(device)
    wall = time.perf_counter() - t
    new = sum(len(ids) for ids, _ in out)
    walls, news = gather(wall), gather(new)
    return {"part": "sampling", "mode": f"k{k} T0.7 top-p0.95", "rows": args.rows, "new": args.new,
            "tok_s": sum(news) / max(walls), "wall_s": max(walls)}


# --- training -------------------------------------------------------------------------------------


def trainer_cfg(kind: str, args, gc_on: bool, micro: int | None = None, accum: int | None = None) -> TrainerConfig:
    return TrainerConfig(strategy=kind, lora_r=64, lora_alpha=128, lora_dropout=0.0, lr=1e-4, max_grad_norm=1.0,
                         train_batch_size=micro or args.micro, grad_accum=accum or args.accum,
                         gradient_checkpointing=gc_on, dpo_beta=0.1, inner_epochs=1)


def lora_trainable(peft_model):
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    return peft_model


def sharded_model(shape: str, cfg: TrainerConfig, device, dtype):
    """A random-weight Llama of `shape` with LoRA, sharded: built on the meta device, sharded, then each
    process allocates and fills only its own shards (no process ever holds the whole model)."""
    from torch.distributed.tensor import DTensor
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device("meta"):
        base = LlamaForCausalLM._from_config(config, dtype=dtype)
    model = sharding.shard(lora_trainable(attach_lora(base, cfg, seed=0)))
    model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(1 + distributed.world()[0])
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            if "lora_B" in name:
                local.zero_()
            elif "lora_" in name or "layernorm" not in name and "norm" not in name.rsplit(".", 2)[-2]:
                local.normal_(0.0, 0.02, generator=g)
            else:
                local.fill_(1.0)  # RMSNorm weights
        for m in model.modules():  # rotary frequencies are buffers, left empty by to_empty
            if type(m).__name__.endswith("RotaryEmbedding"):
                fresh = type(m)(m.config)
                m.inv_freq = fresh.inv_freq.to(device)
                m.original_inv_freq = fresh.original_inv_freq.to(device)
    return model


def units_for(kind: str, n: int, seq: int, vocab: int) -> list[sl_train.Unit]:
    g = torch.Generator().manual_seed(0)
    half = seq // 2

    def ids():
        return torch.randint(3, vocab, (half,), generator=g).tolist()

    if kind == "sft":
        return [sl_train.Unit(ids(), ids()) for _ in range(n)]
    return [sl_train.Unit(ids(), ids(), ids(), {"ref_chosen": -1.0 * half, "ref_rejected": -1.0 * half})
            for _ in range(n)]


def timed_train(model, tok, kind: str, cfg: TrainerConfig, args, vocab: int, device) -> dict:
    """Optimizer steps of `kind`; step time = median after the first (warm-up) step. DPO reference
    log-probs are given (the reference pass is a forward without gradients, timed in bench/train.py)."""
    units = units_for(kind, args.steps * cfg.train_batch_size * cfg.grad_accum, args.seq, vocab)
    times = [time.perf_counter()]

    def tick(_rec):
        sync(device)
        times.append(time.perf_counter())

    reset_peak(device)
    sl_train.train(model, tok, units, cfg, seed=0, on_log=tick, progress=False)
    step_s = statistics.median(b - a for a, b in itertools.pairwise(times[1:]))  # the first step: warm-up
    per_step = cfg.train_batch_size * cfg.grad_accum * args.seq * (2 if kind == "dpo" else 1)
    peaks = gather(peak_gib(device))
    return {"tokens_per_step": per_step, "step_s": step_s, "tok_s": per_step / step_s,
            "peak_gib": None if None in peaks else " / ".join(f"{x:.1f}" for x in peaks)}


def run_train(args, device, dtype, tok) -> list[dict]:
    rows = []
    world = distributed.world()[1]
    for layout in ("replicated", "sharded"):
        if layout == "sharded" and world == 1:
            continue
        for kind in ("sft", "dpo"):
            cfg = trainer_cfg(kind, args, gc_on=args.gc)
            r = {"part": "train", "mode": f"{kind} {layout}", "shape": args.shape}
            try:
                if layout == "replicated":
                    model = lora_trainable(attach_lora(random_model(args.shape, str(device), dtype, logit_std=None),
                                                       cfg, seed=0))
                else:
                    model = sharded_model(args.shape, cfg, device, dtype)
                r.update(timed_train(model, tok, kind, cfg, args, model.config.vocab_size, device))
            except Exception as e:  # noqa: BLE001 -- one failing layout must not lose the others' numbers
                r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            model = None
            reset_peak(device)
            rows.append(r)
            log(r)
    return rows


def run_largest(args, device, dtype, tok) -> list[dict]:
    """Sharded SFT on growing shapes (micro-batch 1, one step per process and step, checkpointing on)."""
    rows = []
    world = distributed.world()[1]
    for shape in args.largest or GPU_LARGEST:
        cfg = trainer_cfg("sft", args, gc_on=True, micro=1, accum=world)
        r = {"part": "largest", "mode": "sft sharded", "shape": shape}
        try:
            model = sharded_model(shape, cfg, device, dtype)
            r["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
            r.update(timed_train(model, tok, "sft", cfg, args, model.config.vocab_size, device))
            r["fits"] = True
        except torch.OutOfMemoryError:
            # Processes usually run out together (the same shards, the same steps); if only one does, the
            # others wait in a collective: then try each shape in its own launch (--largest SHAPE).
            r["fits"] = False
        model = None
        reset_peak(device)
        rows.append(r)
        log(r)
        if not all(gather(r["fits"])):
            break
    return rows


# --- reporting ------------------------------------------------------------------------------------


def speedups(one: dict, many: dict) -> list[dict]:
    """Rows of `many` (an N-process run) with tok/s divided by the 1-process run's tok/s of the same part
    and mode (sharded rows against the 1-process replicated row of the same strategy)."""
    base = {(r["part"], r["mode"], r.get("shape")): r.get("tok_s") for r in one["rows"]}
    out = []
    for r in many["rows"]:
        key = (r["part"], r["mode"].replace("sharded", "replicated"), r.get("shape"))
        ref = base.get(key)
        out.append({**r, "speedup": r["tok_s"] / ref if ref and r.get("tok_s") else None})
    return out


COLS = [("part", "part"), ("mode", "mode"), ("shape", "shape"), ("tok_s", "tokens/s"), ("speedup", "vs 1 process"),
        ("peak_gib", "peak GiB per process"), ("fits", "fits"), ("error", "error")]


def log(r: dict) -> None:
    if distributed.is_main():
        print(json.dumps(r, default=str), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default=None, help="training and sampling shape (llama-8b on GPU, tiny on CPU)")
    ap.add_argument("--parts", nargs="*", default=["sampling", "train", "largest"])
    ap.add_argument("--rows", type=int, default=2048, help="sampled rows in all (questions x 4)")
    ap.add_argument("--batch", type=int, default=256, help="rows each process decodes together")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new", type=int, default=256, help="new tokens per row")
    ap.add_argument("--seq", type=int, default=1024, help="training tokens per sequence")
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per step (split over the processes)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps (the first is warm-up)")
    ap.add_argument("--gc", action=argparse.BooleanOptionalAction, default=True, help="gradient checkpointing")
    ap.add_argument("--largest", nargs="*", default=None, help=f"shapes to try sharded ({' '.join(GPU_LARGEST)})")
    ap.add_argument("--out", default=None)
    ap.add_argument("--compare", nargs=2, metavar=("ONE.json", "MANY.json"), default=None)
    args = ap.parse_args()
    if args.compare:
        one, many = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.compare)
        print(table(speedups(one, many), COLS))
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(distributed._state().local_process_index)
        device = torch.device("cuda", torch.cuda.current_device())
    args.shape = args.shape or ("llama-8b" if device.type == "cuda" else "tiny")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = bundled_smollm2_tokenizer()
    tok.padding_side = "right"
    world = distributed.world()[1]
    env = {**environment(str(device)), "processes": world}
    rows: list[dict] = []
    if "sampling" in args.parts:
        model = random_model(args.shape, str(device), dtype)
        rows.append(run_sampling(model, args, device))
        log(rows[-1])
        model = None
        reset_peak(device)
    if "train" in args.parts:
        rows += run_train(args, device, dtype, tok)
    if "largest" in args.parts and world > 1:
        rows += run_largest(args, device, dtype, tok)
    if distributed.is_main():
        print(f"\n{env['card']} x {world}, {env['date']}, torch {env['torch']}")
        print(table(rows, COLS), flush=True)
        write_json(args.out, {"env": env, "args": vars(args), "rows": rows})
    distributed.barrier()


if __name__ == "__main__":
    sys.exit(main())
