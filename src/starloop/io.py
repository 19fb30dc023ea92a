"""Atomic file writes and completion markers: a killed run never leaves a file that looks complete.

Every artifact is written to a temporary name in the same folder, flushed, fsynced and renamed over
its final name (rename is atomic on POSIX). A stage folder is complete only once its `DONE` marker
exists, and the marker is written last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starloop import interrupt

DONE = "DONE"
TMP_SUFFIX = ".tmp"
# `.<final name>.<mkdtemp's 8 random characters>.tmp`, as atomic_path names its temporaries.
_STALE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error remove it.

    Works for files and folders (e.g. `save_pretrained` targets).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    target = tmp / (path.name + suffix)
    try:
        yield target
        interrupt.check()  # a SIGTERM swallowed while the content was written: do not publish it
        if not _is_main_process():
            return  # with several processes only the main one publishes; the others' copy is dropped
        _fsync_tree(target)  # data on disk before the rename makes it visible (power loss, node crash)
        if path.is_dir() and not path.is_symlink():
            # Move the old folder aside in one rename (a kill mid-rmtree would leave it half deleted).
            os.replace(path, tmp / ".old")
        os.replace(target, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_main_process() -> bool:
    # Launched by `accelerate launch`: only rank 0 writes artifacts (every rank computes the same ones).
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK")
    return rank in (None, "", "0")


def in_temporary(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path` lies inside an atomic write's temporary under `root` (a live writer's, or one a killed
    process left): not yet, or never, part of the folder's content."""
    return any(_STALE.match(part) for part in Path(path).relative_to(root).parts[:-1])


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Remove the temporaries of atomic writes that a killed process left under `folder`; returns the count.

    Call only while holding the folder's run lock (a live writer's temporaries look the same).
    """
    n = 0
    for root, dirs, _ in os.walk(folder):
        for d in list(dirs):
            if _STALE.match(d):
                shutil.rmtree(Path(root) / d, ignore_errors=True)
                dirs.remove(d)
                n += 1
    return n


def _fsync_tree(target: Path) -> None:
    files = [target] if target.is_file() else [f for f in target.rglob("*") if f.is_file()]
    for f in files:
        with contextlib.suppress(OSError):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def mark_done(folder: str | os.PathLike, info: dict | None = None) -> None:
    write_json(Path(folder) / DONE, info or {})


def is_done(folder: str | os.PathLike) -> bool:
    return (Path(folder) / DONE).exists()
