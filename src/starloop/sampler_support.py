"""Which models the fast samplers can run: `static_unsupported` for the static decode loop (the Llama family,
plain or with LoRA adapters), and `_causal_lm`, the causal LM under a PEFT wrapper, for both backends; and
how many rows a decode batch takes when no batch size is set (`auto_batch_size`)."""

from __future__ import annotations

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def static_unsupported(model) -> str | None:
    """Why the static decode loop cannot run `model` (None when it can)."""
    lm = _causal_lm(model)
    cfg = getattr(lm, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in SUPPORTED_MODEL_TYPES:
        return f"model type {mtype!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return "sliding-window attention is not supported"
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "prompt-learning adapters are not supported"
    inner = getattr(lm, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "the model does not have the Llama module layout"
    return None


# --- batch size from free GPU memory ------------------------------------------------------------------

CPU_BATCH_SIZE = 16  # rows per batch where nothing sizes it (CPU, or a backend that cannot)
GPU_MEMORY_UTILIZATION = 0.9  # share of the free GPU memory the sampler's buffers may take (vLLM's idea)
MAX_AUTO_ROWS = 1024  # past ~4x the matmul ridge point more rows only add latency and compile shapes
_logged: set = set()


def kv_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    """Bytes of keys + values one token adds across all layers."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * n_kv * head_dim * dtype_bytes


def rows_for_memory(free_bytes: float, kv_per_token: int, vocab: int, max_prompt: int, max_new_tokens: int,
                    k: int, reserve_bytes: float = 0.0, utilization: float = GPU_MEMORY_UTILIZATION,
                    max_rows: int = MAX_AUTO_ROWS) -> int:
    """Rows whose decode buffers fit in `utilization` of `free_bytes` less `reserve_bytes` (the prompt pass).

    A row holds its generated keys/values (max_new_tokens tokens), a k-th of its question's prompt
    keys/values (k samples share a prompt), and ~6 float32 vocabulary rows (logits, sampling temporaries).
    At least k (one question); a multiple of 64 from 128 rows up, then of k; at most max_rows."""
    per_row = kv_per_token * (max_new_tokens + max_prompt / max(k, 1)) + 6 * 4 * vocab
    rows = int(max(0.0, free_bytes * utilization - reserve_bytes) // per_row)
    rows = min(rows, max_rows)
    if rows >= 128:
        rows -= rows % 64
    rows -= rows % max(k, 1)
    return max(rows, k, 1)


def auto_batch_size(model, max_prompt: int, max_new_tokens: int, k: int = 1,
                    max_prefill_tokens: int = 32768) -> int:
    """Rows per decode batch for `model`: sized from free memory on CUDA (`rows_for_memory`), logged once
    per size; CPU_BATCH_SIZE elsewhere."""
    import torch

    lm = _causal_lm(model)
    p = next(lm.parameters())
    if p.device.type != "cuda":
        return CPU_BATCH_SIZE
    cfg = lm.config
    free, total = torch.cuda.mem_get_info(p.device)
    inter = getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    reserve = max_prefill_tokens * (4 * cfg.hidden_size + 3 * inter) * p.element_size()
    rows = rows_for_memory(free, kv_bytes_per_token(cfg, p.element_size()), cfg.vocab_size, max_prompt,
                           max_new_tokens, k, reserve)
    if rows not in _logged:
        _logged.add(rows)
        import logging

        logging.getLogger("starloop.fast_sampling").info(
            "sampling batch size %d rows, sized from %.1f of %.1f GiB free (prompts up to %d tokens, %d new, "
            "%d samples per prompt)", rows, free / 2**30, total / 2**30, max_prompt, max_new_tokens, k)
    return rows
