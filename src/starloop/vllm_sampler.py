"""`VLLMSampler` (model.sampler=vllm): vLLM on the model's weights; vllm is imported lazily. Its draws
use vLLM's per-request seeds: the same distribution, not the same tokens as the other backends."""

from __future__ import annotations

from starloop.errors import StarloopError
from starloop.sampler_support import _causal_lm
from starloop.sampling import Generation


class VLLMSampler:
    """vLLM behind `Sampler.generate`: the model's weights are loaded by vLLM from their folder or hub id;
    a PEFT model's adapter is saved to a temporary folder and served as a LoRA adapter.

    Seeds go to vLLM's per-request seed: reproducible for a fixed vLLM version and batch, with the
    distribution of reference sampling, but not the tokens of the hashed-Gumbel backends."""

    def __init__(self, model, tokenizer, batch_size: int = 64, gpu_memory_utilization: float = 0.5, **engine):
        try:
            import vllm
        except ImportError:
            raise StarloopError("model.sampler=vllm needs the vllm package: pip install 'starloop[vllm]'") from None
        import tempfile

        self.vllm, self.tok, self.batch_size = vllm, tokenizer, batch_size
        lm = _causal_lm(model)
        source = getattr(lm.config, "_name_or_path", None) or getattr(lm, "name_or_path", None)
        if not source:
            raise StarloopError("model.sampler=vllm needs a model loaded from a folder or hub id")
        self.lora = None
        if hasattr(model, "peft_config"):
            self._adapter_dir = tempfile.TemporaryDirectory(prefix="starloop-lora-")
            model.save_pretrained(self._adapter_dir.name)
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("policy", 1, self._adapter_dir.name)
            engine.setdefault("enable_lora", True)
            engine.setdefault("max_lora_rank", int(next(iter(model.peft_config.values())).r))
        self.llm = vllm.LLM(model=source, dtype=str(lm.dtype).replace("torch.", ""),
                            gpu_memory_utilization=gpu_memory_utilization, **engine)

    def generate(self, prompts, seeds, *, max_new_tokens, temperature=0.0, top_p=1.0, progress=None):
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        params = [self.vllm.SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                           seed=int(s) if temperature > 0 else None) for s in seeds]
        outs = self.llm.generate(list(prompts), params, lora_request=self.lora, use_tqdm=False)
        gens = []
        for o in outs:
            c = o.outputs[0]
            gens.append(Generation(c.text, len(c.token_ids), c.finish_reason == "length"))
        if progress:
            progress(len(gens))
        return gens
