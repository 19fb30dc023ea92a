"""Run-folder guards: one process per output folder, and a resumed run must have the same config."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
from pathlib import Path

from starloop import io
from starloop.errors import ConfigError, StarloopError

# Keys a resumed run may change: they do not alter any result already written.
RESUMABLE_KEYS = {"trainer.iterations", "progress", "logger", "launcher", "out", "eval.batch_size",
                  "trainer.gen_batch_size"}

# A run refuses to start with less free disk space than this in its output folder (adapters, generations).
MIN_FREE_BYTES = 100 * 2**20

INTERRUPTED_MESSAGE = "interrupted: rerun the same command to resume"


class Interrupted(BaseException):
    """SIGTERM (Slurm preemption, `kill`) turned into an exception that unwinds the run.

    A BaseException, so no `except Exception` on the way swallows it: the atomic write in progress is
    abandoned (its temporary is removed), the lock is released, and the CLI exits with 128 + SIGTERM.
    """


def raise_on_sigterm() -> None:
    """Install the SIGTERM handler (main thread). A second SIGTERM while unwinding kills at once."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Interrupted()

    signal.signal(signal.SIGTERM, handler)


def check_output_folder(out: str | os.PathLike) -> None:
    """Create `out` if needed; refuse (one line) if it is not writable or its disk has < MIN_FREE_BYTES free."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise StarloopError(f"{out}: output folder is not writable ({e.strerror or e})") from None
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise StarloopError(f"{out}: only {free / 2**20:.0f} MB free on its disk (a run needs at least "
                            f"{MIN_FREE_BYTES / 2**20:.0f} MB); free space or choose another out=")


class RunLock:
    """An exclusive lock on `<out>/.lock`; a second run on the same folder refuses with one line."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        from starloop import distributed

        if not distributed.is_main():
            return self  # the processes of one launch share the main process's lock
        check_output_folder(self.out)
        self.fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise StarloopError(f"{self.out}: another starloop run is using this output folder") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        # Temporaries of atomic writes a SIGKILL left behind: only the lock holder may remove them.
        io.remove_stale_temps(self.out)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# Files a stage folder must hold once its DONE marker exists (written before the marker).
_DONE_FILES = {"sample": ("generations.csv",), "rationalize": ("generations.csv",),
               "val": ("generations.csv", "metrics.json"),
               "train": ("log.jsonl", "adapter/adapter_config.json")}


def check_run_folder(out: str | os.PathLike) -> None:
    """Refuse to resume a run whose completed stage folders lost files (deleted or copied in part)."""
    out = Path(out)
    for done in sorted(out.glob(f"iter_*/**/{io.DONE}")):
        folder = done.parent
        for name in _DONE_FILES.get(folder.name, ()):
            if not (folder / name).is_file():
                raise StarloopError(f"{folder / name}: missing, though {folder} is marked done; delete "
                                    f"{folder} to redo that stage")
        if folder.name == "train":
            from starloop.models import check_adapter_folder

            check_adapter_folder(folder / "adapter")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_or_save_config(out: Path, cfg: dict, save: bool = True) -> None:
    """Save the resolved config on a fresh run; on resume, refuse a config that changes results.

    save=False only checks (the CLI does so before Hydra writes anything into the folder).
    """
    import yaml

    path = out / "config.yaml"
    if path.exists():
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            old = None
        if not isinstance(old, dict):
            raise StarloopError(f"{path}: unreadable saved config; use a new out= folder")
        a, b = _flatten(old), _flatten(cfg)
        for key in sorted(set(a) | set(b)):
            if any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
                continue
            if a.get(key) != b.get(key):
                raise ConfigError(key, f"differs from the run being resumed in {out} "
                                       f"({a.get(key)!r} there, {b.get(key)!r} now); use a new out= folder")
    if save:
        io.write_text(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
