"""Run-folder guards: one process per output folder, and a resumed run must have the same config."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from starloop import io
from starloop.errors import ConfigError, StarloopError

# Keys a resumed run may change: they do not alter any result already written.
RESUMABLE_KEYS = {"trainer.iterations", "progress", "logger", "out", "eval.batch_size", "trainer.gen_batch_size"}


class RunLock:
    """An exclusive lock on `<out>/.lock`; a second run on the same folder refuses with one line."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write_probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise StarloopError(f"{self.out}: output folder is not writable ({e.strerror})") from None
        self.fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise StarloopError(f"{self.out}: another starloop run is using this output folder") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_or_save_config(out: Path, cfg: dict) -> None:
    """Save the resolved config on a fresh run; on resume, refuse a config that changes results."""
    import yaml

    path = out / "config.yaml"
    if path.exists():
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise StarloopError(f"{path}: unreadable saved config; use a new out= folder") from None
        a, b = _flatten(old), _flatten(cfg)
        for key in sorted(set(a) | set(b)):
            if any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
                continue
            if a.get(key) != b.get(key):
                raise ConfigError(key, f"differs from the run being resumed in {out} "
                                       f"({a.get(key)!r} there, {b.get(key)!r} now); use a new out= folder")
    io.write_text(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
