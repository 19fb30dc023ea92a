"""Out of memory: recognising it, backing off by halving a batch, and the one-line advice for training."""

from __future__ import annotations

import contextlib
import logging

import torch

from starloop.errors import StarloopError

log = logging.getLogger(__name__)

OOM_ADVICE = ("out of memory while training: lower trainer.train_batch_size (raise trainer.grad_accum to keep "
              "the effective batch), lower trainer.max_seq_len, or set trainer.gradient_checkpointing=true")


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def halved_batch_size(err: BaseException, batch_size: int, what: str, floor: int = 1) -> int:
    """The back-off after an exception in batched work: half the batch size if `err` is out of memory.

    Re-raises `err` when it is not an out-of-memory error or the batch is already at `floor`.
    """
    if not is_oom(err) or batch_size <= floor:
        raise err
    batch_size = max(floor, batch_size // 2)
    log.warning("out of memory while %s: batch size halved to %d", what, batch_size)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return batch_size


def release_cached_memory(model: torch.nn.Module) -> None:
    """After a scoring pass on CUDA: hand the allocator's cached blocks back to the driver, so that other
    processes sharing the card can use them (once per pass; the next pass allocates afresh)."""
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def oom_advice():
    """Out of memory in a training forward/backward -> one-line StarloopError naming the knobs to turn."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        raise StarloopError(OOM_ADVICE) from None
