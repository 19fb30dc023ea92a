"""Sharded LoRA training (FSDP2 through accelerate) for a base model too large to train on one device.

A launch with `configs/accelerate/fsdp2.yaml` (distributed type FSDP, fsdp_version 2) turns it on; nothing
else changes. Each process then holds 1/W of every weight: `fully_shard` is applied per decoder layer, to
the embedding/head, and to the root, and a layer's weights are gathered only while it runs. FSDP2 shards
each parameter on its own (a DTensor), so the frozen base and the trainable LoRA weights sit in the same
layer groups with no `use_orig_params` switch (FSDP1 flattens a group into one tensor and needed
`use_orig_params=True` to mix frozen and trainable weights). Optimizer state exists only for the LoRA shards.

The DPO reference policy is still the same model with the adapter disabled (`disable_adapter()` only
switches LoRA layers off; the sharded base is shared). Every process must run the same number of forward
and backward passes (each gathers weights from all); `train.train` pads a process's share of a step with
zero-weight micro-batches for that. The adapter is gathered to full tensors and saved by the main process
as a normal peft folder, which an unsharded run (or a sharded one) loads and resumes from.
"""

from __future__ import annotations

import os

import torch

from starloop import distributed


def active() -> bool:
    """True in a multi-process launch whose accelerate config asks for FSDP (version 2)."""
    if distributed.world()[1] < 2:
        return False
    from accelerate.utils import parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):  # set by `accelerate launch` from the config file
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        from starloop.errors import StarloopError

        raise StarloopError(f"the accelerate config asks for FSDP version {version}; starloop shards with "
                            "fsdp_version: 2 (see configs/accelerate/fsdp2.yaml)")
    return True


def is_sharded(model) -> bool:
    """True once `shard` has split the model's weights across processes."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard(model):
    """Shard `model` (a peft model: frozen base + LoRA) in place across the launch's processes.

    Trainable weights are kept in float32 (under mixed precision, accelerate upcasts them; the base stays
    in its dtype and layers compute in the policy's dtype). Gradients are summed over processes, not
    averaged: each process's loss is already its share of the step's loss (see `train.train`)."""
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.fsdp import FSDPModule

    acc = Accelerator()
    if getattr(acc.state, "fsdp_plugin", None) is None:
        # accelerate builds the plugin only for a GPU launch with an FSDP config; on CPU (gloo: the tests) it
        # is built here from the same launch environment (FSDP_* variables), and the same sharding code runs.
        # Launched without the FSDP config (bench/scaling.py under --multi_gpu): FSDP2, one unit a layer.
        kw = {} if "FSDP_AUTO_WRAP_POLICY" in os.environ else {"auto_wrap_policy": "transformer_based_wrap"}
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, **kw)
    model = fsdp2_prepare_model(acc, model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return model


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Full (gathered) tensors of the trainable weights, by parameter name, on every process (collective)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = p.full_tensor() if isinstance(p, DTensor) else p
            out[name] = full.detach().to("cpu", copy=True)
    return out


def save_adapter(model, folder: str | os.PathLike) -> None:
    """Write the adapter of a sharded peft model as a normal peft folder (main process; all must call)."""
    full = trainable_state(model)
    if distributed.is_main():
        model.save_pretrained(str(folder), state_dict=full)
