"""Shared pieces of the benchmarks: model shapes, random-weight models, device ceilings, tables."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from starloop.sampler_support import kv_bytes_per_token  # noqa: F401 -- re-exported for the benchmarks

# Llama-3.1-8B's shape (meta-llama/Llama-3.1-8B config.json), and a tiny one on the same code path.
SHAPES = {
    "llama-8b": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                 "rope_theta": 500000.0, "tie_word_embeddings": False,
                 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "tiny": {"vocab_size": 49152, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
             "tie_word_embeddings": False},
}

# H100 SXM datasheet: dense bf16 989 TFLOP/s, HBM3 3.35 TB/s. Measured ceilings are printed beside them.
PEAK_FLOPS = {"cuda": 989e12}
PEAK_BW = {"cuda": 3.35e12}


def random_model(shape: str, device: str, dtype: torch.dtype, logit_std: float | None = 8.0, seed: int = 0):
    """A random-weight Llama of `shape` built on `device`. The output head is rescaled so that logits have
    about `logit_std` standard deviation, as peaked as a trained model's (default init gives ~1.3, a
    nearly flat distribution whose top-p nucleus would hold most of the vocabulary)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(SHAPES[shape])
    cfg = LlamaConfig(**kw, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    if logit_std:
        with torch.no_grad():
            w = model.lm_head.weight
            w.mul_(logit_std / (float(w.float().std()) * cfg.hidden_size**0.5))
    model.eval().requires_grad_(False)
    return model


def random_adapter(model, r: int = 64, seed: int = 0, std: float = 0.02):
    """`model` with a fresh LoRA of rank r on all linear layers, B drawn at random (std) so that it is not a
    zero update: an adapter as a trained iteration leaves it, for timing passes with an adapter attached."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, std)
    return peft_model.eval().requires_grad_(False)


def param_counts(model) -> dict:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    total = sum(p.numel() for p in lm.parameters())
    emb = lm.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_ceilings(device: str) -> dict:
    """Copy bandwidth (bytes read + written) and bf16 matmul rate, measured once here."""
    if torch.device(device).type != "cuda":
        return {}
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        y.copy_(x)
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync(device)
    bw = 10 * 2 * x.numel() / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    flops = 10 * 2 * 8192**3 / (time.perf_counter() - t)
    del x, y, a, b
    torch.cuda.empty_cache()
    return {"copy_bw": bw, "matmul_flops": flops}


def environment(device: str) -> dict:
    import transformers

    env = {"date": date.today().isoformat(), "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": device}
    if torch.device(device).type == "cuda":
        env["card"] = torch.cuda.get_device_name()
    else:
        env["card"] = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return env


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """Markdown table of `rows` with (key, header) columns; floats get 3 significant digits."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | None, obj, quiet: bool = False) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1, default=str))
    if not quiet:
        print(f"results written to {p}", flush=True)


def out_dir() -> str | None:
    return os.environ.get("BENCH_OUT")
