"""Run-folder guards: one process per output folder, a folder belongs to one command and one config, and a
resumed run must see the same config and the same questions.

A command takes the folder's lock before anything is written (`RunLock`) and claims the folder
(`claim`: config.yaml, run.json) only once its inputs are valid and its model has loaded; a command that
fails before its claim leaves the folder as it found it (a folder it created is removed again).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from starloop import io
from starloop.errors import ConfigError, StarloopError

# Keys a resumed run may change: they do not alter any result already written.
RESUMABLE_KEYS = {"trainer.iterations", "progress", "logger", "launcher", "out", "eval.batch_size",
                  "trainer.gen_batch_size", "deterministic"}
# Keys a command does not read, so that a resumed run may change them too (and runs saved before the key
# existed resume).
UNUSED_KEYS = {"train": {"eval.limit", "checkpoint"}, "eval": set()}

# A run refuses to start with less free disk space than this in its output folder (adapters, generations).
MIN_FREE_BYTES = 100 * 2**20
# Room left in a path for the deepest file a run writes below out= (iter_k/sample/.part_xxxxx.csv.XXXXXXXX.tmp/...).
PATH_HEADROOM = 160

INTERRUPTED_MESSAGE = "interrupted: rerun the same command to resume"
EVAL_INTERRUPTED_MESSAGE = "interrupted: starloop eval keeps no partial results; rerun the same command to start it over"

RUN_FILE = "run.json"  # which command owns the folder, and the fingerprint of its questions


def check_out_path(out: str | os.PathLike) -> Path:
    """`out=` as a usable path: not empty, not too long for the files a run writes below it."""
    text = "" if out is None else str(out)
    if not text.strip():
        raise ConfigError("out", "is empty: name an output folder (e.g. out=runs/my_run)")
    p = Path(text).expanduser()
    full = os.path.abspath(p)
    long_part = next((part for part in Path(full).parts if len(part.encode("utf-8", "surrogateescape")) > 255), None)
    if long_part is not None:
        raise ConfigError("out", f"folder name {long_part[:40]}... is longer than 255 bytes")
    limit = 4096
    try:
        limit = os.pathconf(_existing_parent(Path(full)), "PC_PATH_MAX")
    except (OSError, ValueError):
        pass
    if len(full.encode("utf-8", "surrogateescape")) + PATH_HEADROOM > limit:
        raise ConfigError("out", f"path is {len(full)} characters long: the files of a run below it would pass "
                                 f"the system's limit of {limit}; choose a shorter out=")
    return p


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_folder(out: str | os.PathLike) -> list[Path]:
    """Create `out` if needed; refuse (one line) if it is not writable or its disk has < MIN_FREE_BYTES free.

    Returns the folders it created (deepest last), so that a command that fails can remove them again.
    """
    out = check_out_path(out)
    created = []
    p = out
    while not p.exists() and p != p.parent:
        created.insert(0, p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        _remove_empty(created)
        raise StarloopError(f"{out}: output folder is not writable ({e.strerror or e})") from None
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        _remove_empty(created)
        raise StarloopError(f"{out}: only {free / 2**20:.0f} MB free on its disk (a run needs at least "
                            f"{MIN_FREE_BYTES / 2**20:.0f} MB); free space or choose another out=")
    return created


def _remove_empty(folders: Sequence[Path]) -> None:
    for d in reversed(folders):
        try:
            d.rmdir()
        except OSError:
            return


# Locks this process holds: {real path: [fd, depth, folders created, lock file created, claimed]}.
_HELD: dict[str, list] = {}


class RunLock:
    """An exclusive lock on `<out>/.lock`; a second run on the same folder refuses with one line.

    Re-entrant within a process (the CLI takes it before Hydra starts, the stages take it again). The lock
    file's bytes are never written, so a refused or failed command changes nothing; when the outermost
    holder leaves without the folder having been claimed, it removes the lock file and the folders it created.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.key: str | None = None

    def __enter__(self) -> Self:
        from starloop import distributed

        if not distributed.is_main():
            return self  # the processes of one launch share the main process's lock
        existing = _HELD.get(os.path.realpath(self.out)) if self.out.exists() else None
        if existing is not None:
            existing[1] += 1
            self.key = os.path.realpath(self.out)
            return self
        created = check_output_folder(self.out)
        lock = self.out / ".lock"
        if lock.exists() and not lock.is_file():
            _remove_empty(created)
            raise StarloopError(f"{lock}: not a file (a run's lock file); remove it")
        new_file = not lock.exists()
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            _remove_empty(created)
            raise StarloopError(f"{lock}: cannot open the run's lock file ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StarloopError(f"{self.out}: another starloop run is using this output folder") from None
        self.key = os.path.realpath(self.out)
        _HELD[self.key] = [fd, 1, created, new_file, False]
        # Temporaries of atomic writes a SIGKILL left behind: only the lock holder may remove them.
        io.remove_stale_temps(self.out)
        return self

    def __exit__(self, *exc) -> None:
        if self.key is None or self.key not in _HELD:
            return
        held = _HELD[self.key]
        held[1] -= 1
        if held[1] > 0:
            return
        fd, _, created, new_file, claimed = _HELD.pop(self.key)
        _close_file_log()
        if not claimed and new_file:
            Path(self.key, ".lock").unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if not claimed:
            _remove_empty(created)


def _mark_claimed(out: Path) -> None:
    held = _HELD.get(os.path.realpath(out))
    if held is not None:
        held[4] = True


# --- ownership, config and questions of a run folder ---------------------------------------------------

# Files that show a folder holds the outputs of a command (for folders written before run.json existed).
_TRAIN_OUTPUTS = ("metrics.jsonl", "iter_0", "iter_1", "logs")
_EVAL_OUTPUTS = ("generations.csv", "results.csv", "metrics.json")  # results.csv: eval folders of older versions


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def question_fingerprint(questions: Sequence) -> dict[str, str]:
    """{question id: hash of its content (subject, language, question, choices, answer)}, in order."""
    out = {}
    for q in questions:
        text = json.dumps([q.subject, q.language, q.question, list(q.choices), q.answer], ensure_ascii=False)
        out[q.id] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return out


def _read_run_file(out: Path) -> dict | None:
    path = out / RUN_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise StarloopError(f"{path}: unreadable ({str(e).splitlines()[0]}); use a new out= folder") from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str) \
            or not isinstance(data.get("questions", {}), dict):
        raise StarloopError(f"{path}: not a run file (no command); use a new out= folder")
    return data


def folder_owner(out: Path) -> str | None:
    """The command whose outputs the folder holds: train, eval, or None (no outputs)."""
    data = _read_run_file(out)
    if data is not None:
        return data["command"]
    if any((out / n).exists() for n in _TRAIN_OUTPUTS) or any(out.glob("iter_*")):
        return "train"
    if any((out / n).exists() for n in _EVAL_OUTPUTS):
        return "eval"
    return None


def check_claim(out: str | os.PathLike, command: str, cfg: dict,
                questions: Mapping[str, Sequence] | None = None) -> None:
    """Refuse a folder that belongs to another command, another config, or other questions (read only).

    `questions`: {split name: questions} of this command; None = not known yet (checked again at claim).
    """
    out = Path(out)
    if not out.is_dir():
        return
    owner = folder_owner(out)
    if owner is not None and owner != command:
        raise StarloopError(f"{out}: holds a `starloop {owner}` run; `starloop {command}` does not write into "
                            "it: choose another out=")
    check_or_save_config(out, cfg, save=False, has_outputs=owner is not None, ignore=UNUSED_KEYS.get(command, ()))
    data = _read_run_file(out)
    if questions is None or data is None:
        return
    saved = data.get("questions", {})
    for split, qs in questions.items():
        if split not in saved:
            continue
        _compare_questions(out, split, saved[split], question_fingerprint(qs))


def _compare_questions(out: Path, split: str, old: dict, new: dict) -> None:
    if not isinstance(old, dict):
        raise StarloopError(f"{out / RUN_FILE}: unreadable question fingerprint; use a new out= folder")
    added = [q for q in new if q not in old]
    removed = [q for q in old if q not in new]
    where = f"the {split} questions differ from the run being resumed in {out}"
    if added or removed:
        first = (f"{added[0]} is new" if added else f"{removed[0]} is gone")
        raise StarloopError(f"{where} ({len(added)} new, {len(removed)} gone; {first}); restore the data or use "
                            "a new out= folder")
    changed = [q for q in new if old[q] != new[q]]
    if changed:
        raise StarloopError(f"{where}: {len(changed)} question(s) changed their text, choices or answer (first: "
                            f"{changed[0]}); restore the data or use a new out= folder")
    if list(old) != list(new):
        raise StarloopError(f"{where}: same questions in another order; restore the data or use a new out= folder")


def claim(out: str | os.PathLike, command: str, cfg: dict, questions: Mapping[str, Sequence]) -> None:
    """Make `out` this command's run: check it (as `check_claim`), then write config.yaml and run.json.

    Call with the lock held, once the inputs are valid and the model has loaded.
    """
    out = Path(out)
    check_claim(out, command, cfg, questions)
    data = _read_run_file(out) or {"command": command, "questions": {}}
    fresh = {split: question_fingerprint(qs) for split, qs in questions.items()}
    if not (out / "config.yaml").exists() or any(s not in data["questions"] for s in fresh):
        data["questions"] = {**data["questions"], **fresh}
    check_or_save_config(out, cfg, has_outputs=folder_owner(out) is not None, ignore=UNUSED_KEYS.get(command, ()))
    io.write_json(out / RUN_FILE, data)
    _mark_claimed(out)
    _file_log(out)


def _file_log(out: Path) -> None:
    """Log to <out>/cli.log from the claim on (nothing is written into the folder before it) until the
    lock is released; the main process only."""
    import logging

    from starloop import distributed

    if not distributed.is_main():
        return
    root = logging.getLogger()
    path = str((out / "cli.log").resolve())
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in root.handlers):
        return
    _close_file_log()
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    h._starloop_run_log = True  # type: ignore[attr-defined]
    root.addHandler(h)


def _close_file_log() -> None:
    import logging

    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_starloop_run_log", False)]:
        root.removeHandler(h)
        h.close()


def check_or_save_config(out: Path, cfg: dict, save: bool = True, has_outputs: bool = False,
                         ignore=()) -> None:
    """Save the resolved config on a fresh run; on resume, refuse a config that changes results.

    save=False only checks. `has_outputs`: the folder holds a run's outputs, so a missing config.yaml
    (deleted, or never written) is refused rather than written afresh. `ignore`: keys the command does
    not read.
    """
    import yaml

    path = out / "config.yaml"
    if path.exists() or path.is_symlink():
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            old = None
        if not isinstance(old, dict):
            raise StarloopError(f"{path}: unreadable saved config; use a new out= folder")
        a, b = _flatten(old), _flatten(cfg)
        for key in sorted(set(a) | set(b)):
            if any(key == r or key.startswith(r + ".") for r in (*RESUMABLE_KEYS, *ignore)):
                continue
            if a.get(key) != b.get(key):
                raise ConfigError(key, f"differs from the run being resumed in {out} "
                                       f"({a.get(key)!r} there, {b.get(key)!r} now); use a new out= folder")
    elif has_outputs:
        raise StarloopError(f"{path}: missing, though {out} holds a run's outputs; its config is unknown, so it "
                            "cannot be resumed: use a new out= folder")
    if save:
        io.write_text(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


def disk_error(e: OSError) -> StarloopError | None:
    """A full disk or an over-long path met while writing -> one line naming the file (None: another error)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StarloopError(f"{e.filename or 'a run file'}: no space left on the device while writing it; free "
                             "space and rerun the same command to resume")
    if e.errno == errno.ENAMETOOLONG:
        return StarloopError(f"{str(e.filename or 'a run file')[:200]}: path too long for the file system; choose "
                             "a shorter out=")
    return None


from starloop.runfiles import check_run_folder

__all__ = ["RunLock", "check_claim", "check_or_save_config", "check_output_folder", "check_run_folder", "claim"]
