"""Fast generation backends behind `Sampler.generate`, and `make_sampler` that picks one from config.

- `StaticSampler` (model.sampler=static; static_sampler.py, kernels in decode_kernels.py, the refill loop
  in refill.py): a decode loop of its own with the prompt shared by a question's samples, finished rows
  refilled from the queue, static key/value buffers and, on CUDA, CUDA graphs and compiled kernels. Its tokens are those of `HFSampler` for the same seeds. Llama-family
  models only (`static_unsupported`, sampler_support.py); others fall back to `HFSampler` with a warning.
- `VLLMSampler` (model.sampler=vllm; vllm_sampler.py): vLLM on the model's weights, vllm imported lazily.
  Its draws use vLLM's per-request seeds: the same distribution, not the same tokens as the other backends.

The backends' names are re-exported here: callers import them from this module.
"""

from __future__ import annotations

import logging

from starloop.decode_kernels import _attend_math, _merge, _pick  # noqa: F401 -- re-exported for the tests
from starloop.errors import StarloopError
from starloop.sampler_support import CPU_BATCH_SIZE, SUPPORTED_MODEL_TYPES, static_unsupported
from starloop.sampling import HFSampler
from starloop.static_sampler import SamplerStats, StaticSampler
from starloop.vllm_sampler import VLLMSampler

__all__ = ["SUPPORTED_MODEL_TYPES", "SamplerStats", "StaticSampler", "VLLMSampler", "make_sampler",
           "static_unsupported"]

log = logging.getLogger(__name__)


def make_sampler(cfg_model, model, tok, batch_size: int | None):
    """The sampler that `model.sampler` names: auto = static on CUDA, hf on CPU.

    batch_size None: the static sampler sizes its batch from free GPU memory at its first call
    (`auto_batch_size`); the others take CPU_BATCH_SIZE (the static sampler on CPU too)."""
    kind = getattr(cfg_model, "sampler", "auto") or "auto"
    device = next(model.parameters()).device
    if kind == "auto":
        kind = "static" if device.type == "cuda" else "hf"
    fixed = batch_size or CPU_BATCH_SIZE
    if kind == "hf":
        return HFSampler(model, tok, batch_size=fixed)
    if kind == "static":
        reason = static_unsupported(model)
        if reason:
            log.warning("model.sampler=static: %s; using the transformers sampler", reason)
            return HFSampler(model, tok, batch_size=fixed)
        return StaticSampler(model, tok, batch_size=batch_size if device.type == "cuda" else fixed)
    if kind == "vllm":
        return VLLMSampler(model, tok, batch_size=fixed)
    raise StarloopError(f"model.sampler: unknown sampler {kind!r} (auto, hf, static, vllm)")
