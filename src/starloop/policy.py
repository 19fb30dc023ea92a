"""The model of an iteration: the base model plus, at most, one LoRA adapter, switched in place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from starloop.config import Config


class Policy:
    """The base model plus, at most, one LoRA adapter: the model of a given iteration."""

    def __init__(self, cfg: Config):
        from starloop.models import load_model

        self.cfg = cfg
        self.base, self.tok = load_model(cfg.model, for_training=True)
        self.model = self.base
        self.adapter: str | None = None
        self.base_copies: dict = {}  # host copies of the LoRA-targeted base weights (lora_merge.merged_lora)
        self.merged_now = False

    @contextlib.contextmanager
    def merged(self) -> Iterator[bool]:
        """No-grad passes (sampling, scoring, validation) on the current adapter merged into the base
        weights, restored bit for bit on exit (`lora_merge.merged_lora`; yields whether it merged). Not for
        the vLLM sampler, which loads the adapter itself, nor for weights sharded for training."""
        from starloop.lora_merge import merged_lora

        if self.model is self.base or self.cfg.model.sampler == "vllm":
            yield False
            return
        with merged_lora(self.model, self.base_copies) as done:
            self.merged_now = done
            try:
                yield done
            finally:
                self.merged_now = False

    def use(self, adapter: Path | None, trainable: bool = False, fresh_seed: int | None = None):
        """Switch to `adapter` (None = base; fresh_seed = a new seeded LoRA for training)."""
        from starloop.models import attach_lora, load_adapter

        if self.merged_now:  # training and other adapters must never see merged weights
            raise RuntimeError("Policy.use inside Policy.merged(): leave the merged block first")
        key = f"fresh:{fresh_seed}" if fresh_seed is not None else (str(adapter) if adapter else None)
        if key == self.adapter and not trainable:
            return self.model
        if self.model is not self.base:
            self.model = self.model.unload()  # remove LoRA layers, keep base weights untouched
            self.base = self.model
        if fresh_seed is not None:
            self.model = attach_lora(self.base, self.cfg.trainer, seed=fresh_seed)
        elif adapter is not None:
            self.model = load_adapter(self.base, adapter, trainable=trainable)
        self.base.requires_grad_(False)
        if trainable:
            for n, p in self.model.named_parameters():
                p.requires_grad_("lora_" in n)
        self.adapter = key
        self.model.eval()
        return self.model
