"""Loading run, sweep and eval output folders for `starloop report` and sweep summaries.

Everything is read as the loop wrote it; nothing is recomputed:
    <run>/metrics.jsonl          one line per (iteration, language) validation
    <run>/config.yaml            the resolved config (strategy, model, data, hyperparameters)
    <run>/iter_k/train/log.jsonl one record per optimizer step (loss, DPO rewards/margins, ...)
    <eval>/metrics.json          `starloop eval` results (by_language, by_subject)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starloop.errors import StarloopError

# Keys that never explain a difference in results; left out of legends and sweep tables.
IGNORED_KEYS = ("out", "progress", "logger.", "launcher.", "eval.batch_size", "trainer.gen_batch_size",
                "checkpoint")


# --- loading -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One `starloop train` output folder."""

    path: Path
    name: str
    config: dict
    metrics: list[dict]
    train_logs: dict[int, list[dict]] = field(default_factory=dict)
    failed: str | None = None  # the error of a sweep job that stopped

    @property
    def strategy(self) -> str:
        return str(self.config.get("trainer", {}).get("strategy", "?"))

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(m["language"] for m in self.metrics))

    @property
    def main_language(self) -> str | None:
        langs = self.languages
        return "all" if "all" in langs else (langs[0] if langs else None)

    def lines(self, language: str | None = None) -> list[dict]:
        """Validation lines of one language (default: `all`, or the only one), by iteration."""
        lang = language or self.main_language
        return sorted((m for m in self.metrics if m["language"] == lang), key=lambda m: m["iteration"])

    @property
    def planned_iterations(self) -> int | None:
        return self.config.get("trainer", {}).get("iterations")

    @property
    def status(self) -> str:
        if self.failed:
            return f"failed: {self.failed}"
        done = max((m["iteration"] for m in self.metrics), default=None)
        planned = self.planned_iterations
        if done is None:
            return "no validation yet"
        if planned is not None and done < planned:
            return f"incomplete ({done}/{planned} iterations)"
        return "done"


@dataclass
class EvalResult:
    """One `starloop eval` output folder."""

    path: Path
    name: str
    metrics: dict
    config: dict


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise StarloopError(f"{path}: unreadable ({type(e).__name__})") from None
    return data if isinstance(data, dict) else {}


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise StarloopError(f"{path}, line {i}: not valid JSON") from None
    return rows


def is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or ((path / "config.yaml").is_file() and
                                                 any(path.glob("iter_*")))


def is_eval(path: Path) -> bool:
    return (path / "metrics.json").is_file() and not is_run(path)


def sweep_jobs(path: Path) -> list[Path]:
    """The job folders of a sweep folder (`<out>/<n>`), in job order."""
    jobs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (is_run(p) or (p / "FAILED").exists()
                                                                           or (p / ".hydra").is_dir())]
    return sorted(jobs, key=lambda p: int(p.name))


def load_run(path: Path, name: str | None = None) -> Run:
    config = _read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    metrics = _read_jsonl(path / "metrics.jsonl")
    logs: dict[int, list[dict]] = {}
    for it in path.glob("iter_*"):
        k = it.name.removeprefix("iter_")
        if k.isdigit() and (it / "train" / "log.jsonl").is_file():
            logs[int(k)] = _read_jsonl(it / "train" / "log.jsonl")
    failed = None
    if (path / "FAILED").is_file():
        try:
            failed = str(json.loads((path / "FAILED").read_text(encoding="utf-8")).get("error", "failed"))
        except (json.JSONDecodeError, AttributeError):
            failed = "failed"
    return Run(path, name or path.name, config, metrics, dict(sorted(logs.items())), failed)


def load_eval(path: Path, name: str | None = None) -> EvalResult:
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StarloopError(f"{path / 'metrics.json'}: unreadable ({type(e).__name__})") from None
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        raise StarloopError(f"{path / 'metrics.json'}: not a starloop eval result (no accuracy)")
    config = _read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    return EvalResult(path, name or path.name, metrics, config)


def load(paths: Sequence[str | Path]) -> tuple[list[Run], list[EvalResult]]:
    """Runs and eval results of the given folders; a sweep folder contributes each of its jobs."""
    runs: list[Run] = []
    evals: list[EvalResult] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise StarloopError(f"{p}: no such folder")
        if not p.is_dir():
            raise StarloopError(f"{p}: not a folder (give a run, sweep or eval output folder)")
        if is_run(p):
            runs.append(load_run(p))
        elif is_eval(p):
            evals.append(load_eval(p))
        elif jobs := sweep_jobs(p):
            runs += [load_run(j, f"{p.name}/{j.name}") for j in jobs]
        else:
            raise StarloopError(f"{p}: not a starloop run (no metrics.jsonl), sweep (no job folders) or eval "
                                "folder (no metrics.json)")
    _unique_names(runs)
    _unique_names(evals)
    return runs, evals


def _unique_names(items: list) -> None:
    """Two inputs with the same folder name get their parent folders prepended until they differ."""
    for depth in range(1, 6):
        names = [i.name for i in items]
        dup = {n for n in names if names.count(n) > 1}
        if not dup:
            return
        for i in items:
            if i.name in dup:
                parts = i.path.resolve().parts
                i.name = "/".join(parts[-(depth + 1):])


# --- config differences --------------------------------------------------------------------------


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def varying_keys(configs: Sequence[dict]) -> list[str]:
    """Config keys whose values differ between runs (what a reader needs to tell them apart)."""
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    out = []
    for k in keys:
        if any(k == i or (i.endswith(".") and k.startswith(i)) for i in IGNORED_KEYS):
            continue
        if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1:
            out.append(k)
    return out


def best_line(lines: list[dict]) -> dict | None:
    return max(lines, key=lambda m: (m["accuracy"], -m["iteration"])) if lines else None
