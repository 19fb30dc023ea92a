"""SIGTERM (Slurm preemption, `kill`) as an exception that unwinds a run, even where Python swallows it.

A signal handler runs between two bytecodes of whatever the main thread is doing. When that is a finalizer
(`__del__`, a weakref callback: a garbage collection can start anywhere), the exception the handler raises is
printed as "Exception ignored in ..." and dropped, and the run would go on as if never told to stop. So the
handler also records the request, and `check()` raises it again: before an atomic write is published
(`io.atomic_path`), between stages and between optimizer steps.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

_requested = False


class Interrupted(BaseException):
    """SIGTERM turned into an exception that unwinds the run.

    A BaseException, so no `except Exception` on the way swallows it: the atomic write in progress is
    abandoned (its temporary is removed), the lock is released, and the CLI exits with 128 + SIGTERM.
    """


def _handler(signum, frame):
    global _requested
    _requested = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while unwinding kills at once
    raise Interrupted()


@contextlib.contextmanager
def raising_on_sigterm() -> Iterator[None]:
    """While inside (main thread only), SIGTERM raises Interrupted; on leaving, the previous handler returns
    and the request is forgotten. An Interrupted that a finalizer swallowed is not printed: `check()` raises
    it again, and the CLI prints its one line."""
    global _requested
    previous, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook

    def quiet(info):
        if not isinstance(info.exc_value, Interrupted):
            hook(info)

    _requested = False
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = quiet
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook
        _requested = False


def check() -> None:
    """Raise Interrupted if a SIGTERM arrived, also one whose exception a finalizer swallowed."""
    if _requested:
        raise Interrupted()
