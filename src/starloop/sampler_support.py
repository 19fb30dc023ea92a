"""Which models the fast samplers can run: `static_unsupported` for the static decode loop (the Llama family,
plain or with LoRA adapters), and `_causal_lm`, the causal LM under a PEFT wrapper, for both backends."""

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
