"""Train LoRA on the tiny model for a few steps (SFT, then DPO) and write what came out: run alone it trains
unsharded; under `accelerate launch --config_file configs/accelerate/fsdp2.yaml --cpu --num_processes 2` it
trains sharded (FSDP2 over gloo). tests/test_sharded.py compares the two.

    python tests/sharded_worker.py OUT_DIR

OUT_DIR/result.json: per-step losses, DPO reference log-probs, the resumed run's losses; OUT_DIR/adapter*/
the saved adapters (after SFT+DPO, and after the resumed steps)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from starloop import distributed, sharding, strategies, train
from starloop.build import Example
from starloop.config import ModelConfig, TrainerConfig
from starloop.models import attach_lora, load_adapter, load_model
from starloop.records import PreferencePair
from starloop.strategies.dpo import fill_reference_logps

CFG = TrainerConfig(strategy="sft", lr=5e-3, train_batch_size=2, grad_accum=2, lora_r=4, lora_alpha=8,
                    lora_dropout=0.0, max_grad_norm=1.0, train_steps=3, warmup_steps=0, dpo_beta=0.1)


def examples() -> list[Example]:
    return [Example(f"Question {i}: which letter?", "Because " + "reasons " * (1 + 2 * (i % 3)) + f"({'ABCD'[i % 4]})",
                    f"q{i}", 1.0) for i in range(6)]


def pairs() -> list[PreferencePair]:
    return [PreferencePair(f"q{i}", f"Question {i}: which letter?", "So the answer is (B)", "I think (C) " * (1 + i % 2))
            for i in range(6)]


def maybe_shard(model):
    return sharding.shard(model) if sharding.active() else model


def main(out: Path) -> None:
    base, tok = load_model(ModelConfig(name="tiny-random"), for_training=True)
    model = attach_lora(base, CFG, seed=3)
    base.requires_grad_(False)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    model = maybe_shard(model)
    result = {"world": distributed.world()[1], "sharded": sharding.is_sharded(model)}
    sft_units = strategies.get("sft").units(tok, examples(), CFG)
    result["sft"] = [r["loss"] for r in train.train(model, tok, sft_units, CFG, seed=1, progress=False)]
    dpo_cfg = replace(CFG, strategy="dpo", train_batch_size=1, grad_accum=3)  # 3 micro-batches on 2 processes
    dpo_units = strategies.get("dpo").units(tok, pairs(), dpo_cfg)
    fill_reference_logps(model, tok, dpo_units, 3, reference="base")  # the adapter disabled, sharded or not
    result["ref"] = [[u.scalars["ref_chosen"], u.scalars["ref_rejected"]] for u in dpo_units]
    result["dpo"] = [r["loss"] for r in train.train(model, tok, dpo_units, dpo_cfg, seed=2, progress=False)]
    (sharding.save_adapter if sharding.is_sharded(model) else lambda m, f: m.save_pretrained(str(f)))(
        model, out / "adapter")
    distributed.barrier()
    # Resume: a fresh base, the saved adapter loaded trainable, two more SFT steps.
    base2, _ = load_model(ModelConfig(name="tiny-random"), for_training=True)
    resumed = load_adapter(base2, out / "adapter", trainable=True)
    base2.requires_grad_(False)
    for n, p in resumed.named_parameters():
        p.requires_grad_("lora_" in n)
    resumed = maybe_shard(resumed)
    result["resumed"] = [r["loss"] for r in train.train(resumed, tok, sft_units, replace(CFG, train_steps=2), seed=4,
                                                        progress=False)]
    (sharding.save_adapter if sharding.is_sharded(resumed) else lambda m, f: m.save_pretrained(str(f)))(
        resumed, out / "adapter_resumed")
    if distributed.is_main():
        (out / "result.json").write_text(json.dumps(result))
    distributed.barrier()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
