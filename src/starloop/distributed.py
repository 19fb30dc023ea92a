"""Data parallelism across the processes `accelerate launch` starts (one process: all no-ops).

Sampling and evaluation give each process every W-th question and gather the results back into
question order, so the files equal a one-process run's (samples are seeded per question and sample,
not per process). Training splits each optimizer step's micro-batches across processes and sums the
LoRA gradients, which equals the one-process gradient of the same step. Only the main process writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@cache
def _state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # As accelerate's own AcceleratorState does: without cpu=True a launch on a machine with no GPU is
    # taken for a single process, each of the launched processes running everything alone.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def world() -> tuple[int, int]:
    """(rank, number of processes)."""
    s = _state()
    return s.process_index, s.num_processes


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        _state().wait_for_everyone()


def map_sharded(fn: Callable[[list[T]], list[list[R]] | list[R]], items: Sequence[T], per_item: int = 1) -> list[R]:
    """Apply `fn` to this process's share (items[rank::W]) and gather every result in item order.

    `fn` returns `per_item` results per item, item by item (e.g. k samples per question).
    """
    rank, size = world()
    if size == 1:
        return list(fn(list(items)))  # type: ignore[arg-type]
    from accelerate.utils import gather_object

    mine = list(fn(list(items[rank::size])))
    tagged = [((rank + size * (j // per_item)), j % per_item, r) for j, r in enumerate(mine)]
    merged = gather_object([tagged])  # one list per process
    flat = [t for part in merged for t in part]
    flat.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in flat]


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum gradients over processes (each process already divided its loss by the step's micro-batches)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def any_process(flag: bool) -> bool:
    """True if `flag` is true on any process (keeps skip/stop decisions identical everywhere)."""
    if world()[1] == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=_state().device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_floats(values: dict[str, float]) -> dict[str, float]:
    """Sum dicts of floats over processes (a process with no share of the step may send {})."""
    if world()[1] == 1:
        return values
    from accelerate.utils import gather_object

    out: dict[str, float] = {}
    for d in gather_object([values]):
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
