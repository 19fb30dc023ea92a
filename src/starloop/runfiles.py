"""The files of a run folder, checked before a resume reads them: one line naming a damaged file.

A resumed run reads back what earlier attempts wrote (DONE markers, metrics.json, train_data.jsonl,
generations, logs). A file cut short, overwritten with garbage, or a stray folder (`iter_1.bak`) must stop
the command with one line naming it (exit code 2) before anything is written, instead of a traceback later.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import MISSING, fields
from pathlib import Path

from starloop import io
from starloop.errors import StarloopError

_ITER = re.compile(r"^iter_(\d+)$")

# Files a stage folder must hold once its DONE marker exists (written before the marker).
DONE_FILES = {"sample": ("generations.csv",), "rationalize": ("generations.csv",),
              "val": ("generations.csv", "metrics.json"),
              "train": ("log.jsonl", "adapter/adapter_config.json")}


def damaged(path: Path, what: str) -> StarloopError:
    return StarloopError(f"{path}: {what}; delete or restore it, or use a new out= folder")


def iteration_folders(out: Path) -> list[tuple[int, Path]]:
    """(k, <out>/iter_k) sorted by k; anything else named iter_* is refused."""
    found = []
    for p in out.glob("iter_*"):
        m = _ITER.match(p.name)
        if not m or not p.is_dir():
            raise damaged(p, "not an iteration folder of this run (iter_<number>/)")
        found.append((int(m.group(1)), p))
    return sorted(found)


def read_json_file(path: Path, kind: type | tuple[type, ...] = (dict, list)):
    """JSON from `path`, or a one-line error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(path, f"unreadable ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, kind):
        raise damaged(path, f"holds {type(data).__name__}, not the expected JSON structure")
    return data


def read_jsonl_file(path: Path, keys: set[str] | None = None, allow_partial_last: bool = False) -> list[dict]:
    """JSON objects, one a line; `keys`: the allowed keys (all required fields must be among them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (ValueError, OSError) as e:
        raise damaged(path, f"unreadable ({str(e).splitlines()[0][:120]})") from None
    lines = text.split("\n")
    if allow_partial_last and lines and lines[-1]:
        lines = lines[:-1]  # a kill mid-append: the next run cuts it off
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise damaged(path, f"line {i} is not valid JSON") from None
        if not isinstance(row, dict) or (keys is not None and not set(row) <= keys):
            raise damaged(path, f"line {i} is not a record of this file")
        out.append(row)
    return out


def _training_keys(strategy: str) -> tuple[set[str], set[str]]:
    """(allowed keys, required keys) of a train_data.jsonl line for the strategy."""
    from starloop.strategies import STRATEGIES

    cls = STRATEGIES[strategy].record if strategy in STRATEGIES else STRATEGIES["sft"].record
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    return names, required


def check_run_folder(out: str | os.PathLike, strategy: str = "sft") -> None:
    """Refuse to resume a run whose files are damaged or whose completed stages lost files."""
    out = Path(out)
    if not out.is_dir():
        return
    lock = out / ".lock"
    if lock.exists() and not lock.is_file():
        raise damaged(lock, "not a file (a run's lock file)")
    for _, it in iteration_folders(out):
        # Temporaries a killed writer left are skipped: this check may run before the run's lock is taken,
        # and taking it removes them.
        for marker in sorted(m for m in it.glob(f"**/{io.DONE}") if not io.in_temporary(m, it)):
            if not marker.is_file():
                raise damaged(marker, "not a file (a stage's completion marker)")
            read_json_file(marker, dict)
            folder = marker.parent
            for name in DONE_FILES.get(folder.name, ()):
                if not (folder / name).is_file():
                    raise StarloopError(f"{folder / name}: missing, though {folder} is marked done; delete "
                                        f"{folder} to redo that stage")
            if folder.name == "train":
                from starloop.models import check_adapter_folder

                check_adapter_folder(folder / "adapter")
                read_jsonl_file(folder / "log.jsonl")
            if folder.name == "val":
                _check_metrics(folder / "metrics.json")
        data = it / "train_data.jsonl"
        if data.exists():
            allowed, required = _training_keys(strategy)
            for i, row in enumerate(read_jsonl_file(data, allowed), start=1):
                if not required <= set(row):
                    raise damaged(data, f"line {i} lacks {', '.join(sorted(required - set(row)))}")
        for gens in sorted(it.glob("**/generations.csv")) + sorted(it.glob("**/part_*.csv")):
            if io.in_temporary(gens, it):
                continue
            from starloop.records import read_samples

            read_samples(gens)
    logs = out / "logs"
    if (logs / "steps.jsonl").exists():
        for i, row in enumerate(read_jsonl_file(logs / "steps.jsonl", allow_partial_last=True), start=1):
            if not isinstance(row.get("iteration"), int) or not isinstance(row.get("step"), int):
                raise damaged(logs / "steps.jsonl", f"line {i} has no integer iteration and step")
    if (logs / "metrics.csv").exists():
        _check_metrics_csv(logs / "metrics.csv")


def _check_metrics(path: Path) -> None:
    lines = read_json_file(path, list)
    if not lines or not all(isinstance(x, dict) and isinstance(x.get("iteration"), int) and "language" in x
                            for x in lines):
        raise damaged(path, "not a list of validation lines (iteration, language, ...)")


def _check_metrics_csv(path: Path) -> None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f, strict=True), start=2):
                if None in row or row.get("language") is None or not str(row.get("iteration", "")).isdigit():
                    raise damaged(path, f"row {i} is not a validation line (iteration, language, ...)")
    except (csv.Error, UnicodeDecodeError, OSError) as e:
        raise damaged(path, f"unreadable ({str(e).splitlines()[0][:120]})") from None
