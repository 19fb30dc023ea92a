"""No-grad passes on merged LoRA weights: `merged_lora` folds the active adapter into the base weights
(W + scale * B @ A, rounded once to the base dtype) for the duration of a `with` block, and puts the base
weights back bit for bit afterwards, from a host copy.

Why: peft keeps LoRA weights in float32 and casts each targeted layer's input to float32, so an unmerged
adapter adds a cast, two small float32 matmuls, a scale and an add per targeted linear per decode step
(on a shared H200, sampling with a Qwen2.5-Coder-1.5B adapter took ~4x the base model's time). Merged, a
step costs what the base model's does.

Why not peft's `merge()`/`unmerge()`: unmerge subtracts the delta again, which in bf16 does not give W
back; over iterations the base would drift. Here the targeted base weights are copied once per process
(the base is frozen) to host memory (page-locked on CUDA) and copied back with `copy_`, in place, so tensor
addresses never change (CUDA graphs and static buffers captured inside the block stay valid inside it).

Merged only: peft `lora.Linear` layers over `nn.Linear` with one active adapter, no DoRA or other variant,
no LoRA bias, weights neither sharded (FSDP2 DTensors) nor quantized. Anything else runs unmerged, with one log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterator

import torch

log = logging.getLogger("starloop.lora_merge")

# Host memory the base copy may take, as a share of this process's part of what the host has available;
# past it the adapter runs unmerged (slower, no copy).
HOST_SHARE = 0.5
_said: set[str] = set()


def _say_once(msg: str) -> None:
    if msg not in _said:
        _said.add(msg)
        log.info("%s", msg)


def lora_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of every peft LoRA layer of `model`."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def unmergeable(model) -> str | None:
    """Why `merged_lora` would run `model` unmerged (None when every LoRA layer can be merged exactly)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = lora_layers(model)
    if not layers:
        return "no LoRA layers"
    for name, m in layers:
        active = list(m.active_adapters)
        if len(active) != 1 or active[0] not in m.lora_A:
            return f"{name}: {len(active)} active adapters"
        a = active[0]
        if type(m) is not LoraLinear or type(m.base_layer) is not torch.nn.Linear:
            return f"{name}: a LoRA {type(m.base_layer).__name__} layer (only Linear layers are merged)"
        if a in getattr(m, "lora_variant", {}) or m.use_dora.get(a, False):
            return f"{name}: a DoRA (or other variant) adapter"
        if getattr(m, "lora_bias", {}).get(a, False):
            return f"{name}: a LoRA bias"
        if m.merged or m.disable_adapters:
            return f"{name}: adapter already merged or disabled"
        if type(m.base_layer.weight.data) is not torch.Tensor or type(m.base_layer.weight) is not torch.nn.Parameter:
            return f"{name}: sharded or quantized weights"
    return None


def _host_available() -> int | None:
    """This process's share of the host memory available (MemAvailable over the processes of this node)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return None


def _unregister(rt, ptr: int, storage) -> None:
    """Finalizer of a page-locked buffer: `storage` rides along so the memory is freed only after this."""
    rt.cudaHostUnregister(ptr)


def page_lock(buf: torch.Tensor, rt) -> None:
    """Page-lock `buf`'s memory in place (rt: torch.cuda.cudart()); unlocked when `buf` is collected."""
    if int(rt.cudaHostRegister(buf.data_ptr(), buf.numel() * buf.element_size(), 0)) != 0:
        raise RuntimeError("cudaHostRegister failed")
    weakref.finalize(buf, _unregister, rt, buf.data_ptr(), buf.untyped_storage())


def _host_copies(weights: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """name -> a host copy of each weight, as views into one buffer of their exact size, page-locked when
    they are on CUDA (torch's pinned allocator would round each block up to a power of two: up to 2x)."""
    align = 64
    offsets, total = [], 0
    for _, w in weights:
        offsets.append(total)
        total += -(-w.numel() * w.element_size() // align) * align
    buf = torch.empty(total, dtype=torch.uint8)
    if weights and weights[0][1].device.type == "cuda" and total:
        try:
            page_lock(buf, torch.cuda.cudart())
        except (RuntimeError, AttributeError) as e:
            _say_once(f"the LoRA base copy is not page-locked ({e}): restoring it is slower")
    out = {}
    for (name, w), off in zip(weights, offsets, strict=True):
        n = w.numel() * w.element_size()
        view = buf[off : off + n].view(w.dtype).view(w.shape)
        view.copy_(w)
        view.host_buffer = buf  # the buffer lives as long as any of its views
        out[name] = view
    return out


def delta_weight(layer, adapter: str) -> torch.Tensor:
    """scale * B @ A of `layer`'s `adapter` in float32, in the base weight's layout (fan_in_fan_out)."""
    a = layer.lora_A[adapter].weight.float()
    b = layer.lora_B[adapter].weight.float()
    d = b @ a
    if getattr(layer, "fan_in_fan_out", False):
        d = d.T
    return d * layer.scaling[adapter]


def _weight_bytes(layers: list[tuple[str, torch.nn.Module]]) -> int:
    return sum(m.base_layer.weight.numel() * m.base_layer.weight.element_size() for _, m in layers)


def base_copy_bytes(model) -> int:
    """Bytes of the targeted base weights of `model` (what `merged_lora`'s host copy holds)."""
    return _weight_bytes(lora_layers(model))


@contextlib.contextmanager
def merged_lora(model, copies: dict[str, torch.Tensor] | None = None) -> Iterator[bool]:
    """Inside the block, `model`'s active LoRA adapter is folded into its base weights (yields True), or
    left as it is when it cannot be merged exactly (yields False; the reason is logged once).

    copies: name -> host copy of each targeted base weight, kept by the caller across blocks (the base is
    frozen, so it is taken once); None = a copy for this block only. On exit, also by an exception or
    Ctrl-C, every targeted weight gets its copy back (bit-identical) and the layers run unmerged again."""
    why = unmergeable(model)
    if why is not None:
        if why != "no LoRA layers":
            _say_once(f"running the LoRA adapter unmerged ({why})")
        yield False
        return
    copies = {} if copies is None else copies
    layers = lora_layers(model)
    missing = _weight_bytes([(n, m) for n, m in layers if n not in copies])
    avail = _host_available()
    if missing and avail is not None and missing > HOST_SHARE * avail:
        _say_once(f"running the LoRA adapter unmerged (the base copy, {missing / 2**30:.1f} GiB, would take "
                  f"over {HOST_SHARE:.0%} of the {avail / 2**30:.1f} GiB of available host memory)")
        yield False
        return
    done: list[tuple[torch.nn.Module, torch.Tensor]] = []
    try:
        with torch.no_grad():
            copies.update(_host_copies([(n, m.base_layer.weight) for n, m in layers if n not in copies]))
            for name, m in layers:
                w = m.base_layer.weight
                if copies[name].shape != w.shape or copies[name].dtype != w.dtype:
                    raise RuntimeError(f"{name}: the stored base copy no longer fits the weight")
                adapter = m.active_adapters[0]
                done.append((m, copies[name]))
                w.copy_(w.float().add_(delta_weight(m, adapter).to(w.device)).to(w.dtype))
                m.merged_adapters = [adapter]  # peft then calls the base layer alone
        if layers and layers[0][1].base_layer.weight.device.type == "cuda":
            torch.cuda.synchronize()  # host copies complete before any weight is read merged
            torch.cuda.empty_cache()  # the merge's float32 temporaries: free again for the sampler's sizing
        yield True
    finally:
        with torch.no_grad():
            for m, host in done:
                m.base_layer.weight.copy_(host, non_blocking=True)
                m.merged_adapters = []
        if done and done[0][0].base_layer.weight.device.type == "cuda":
            torch.cuda.synchronize()  # page-locked host copies are read asynchronously
