"""Deterministic kernels, for reruns that repeat a run bit for bit (config key `deterministic`).

A seed fixes what is drawn, not how the device adds numbers up. On a GPU several kernels (attention backward,
cuBLAS's split reductions, scatter-adds) sum in an order that can change from one run to the next, and a greedy
chain of thought turns a last-digit difference in the weights into different rationales: two runs of one
configuration on the same samples have ended 131 of 1,531 validation answers apart (docs/results.md, section 6).
With `deterministic=true` torch uses the deterministic implementation of every op that has one (a warning names
each op that has none, instead of stopping the run), cuDNN picks deterministic algorithms and does not
benchmark, cuBLAS gets the fixed workspace it needs to be reproducible, and training's attention uses the math
kernel (`starloop.train.attention_kernels`: the memory-efficient kernel's backward stays non-deterministic unless
torch's mode is strict). It costs speed and memory and holds only on the same hardware and software.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# cuBLAS is reproducible only with a fixed workspace; read when its first handle is made, so set it before.
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """Within the block, deterministic kernels where torch has them (`on`); the previous settings afterwards,
    so that one job of a sweep run in this process does not set them for the next."""
    if not on:
        yield
        return
    import torch

    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        enabled, warn_only, cudnn.deterministic, cudnn.benchmark, workspace = before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
