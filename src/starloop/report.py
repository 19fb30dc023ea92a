"""`starloop report`: a Markdown report with PNG plots from run, sweep and eval folders; sweep summaries.

    starloop report runs/english_dpo runs/english_sft [--out DIR]
    starloop report runs/sweep            # a -m sweep folder: every job is a run

Inputs (all written by the loop; nothing is recomputed):
    <run>/metrics.jsonl          one line per (iteration, language) validation
    <run>/config.yaml            the resolved config (strategy, model, data, hyperparameters)
    <run>/iter_k/train/log.jsonl one record per optimizer step (loss, DPO rewards/margins, ...)
    <eval>/metrics.json          `starloop eval` results (by_language, by_subject)

Sweep summaries (`<sweep>/sweep_summary.md`, `.csv`) are written by `starloop.sweep`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starloop import io
from starloop.errors import StarloopError

log = logging.getLogger("starloop.report")

CHANCE_CHOICES = 4  # every supported benchmark (MMLU and its translations) has four options
# Keys that never explain a difference in results; left out of legends and sweep tables.
IGNORED_KEYS = ("out", "progress", "logger.", "launcher.", "eval.batch_size", "trainer.gen_batch_size",
                "checkpoint")
STRATEGY_STYLE = {"sft": "-", "dpo": "--", "reinforce": "-.", "weighted_sft": ":"}


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


# --- labels --------------------------------------------------------------------------------------


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


# Keys a reader compares runs by, most telling first; legends prefer them when several keys differ.
PRIORITY_KEYS = ("trainer.strategy", "trainer.lr", "trainer.dpo_beta", "trainer.samples_per_question",
                 "prompt.strategy", "data.language", "data.name", "model.name", "trainer.reward", "seed",
                 "trainer.rationalize", "trainer.lora_r", "trainer.iterations")
SHORT_NAMES = {"prompt.strategy": "prompt", "data.language": "lang", "model.name": "model",
               "trainer.strategy": "strategy", "data.name": "data", "trainer.samples_per_question": "samples/q",
               "trainer.dpo_beta": "beta"}


def legend_keys(configs: Sequence[dict], most: int = 3) -> list[str]:
    """Up to `most` differing config keys that tell the runs apart, preferring PRIORITY_KEYS."""
    keys = [k for k in varying_keys(configs) if k != "trainer.strategy"]
    keys.sort(key=lambda k: (PRIORITY_KEYS.index(k) if k in PRIORITY_KEYS else len(PRIORITY_KEYS), k))
    flats = [flatten(c) for c in configs]

    def groups(chosen: list[str]) -> int:
        return len({tuple(json.dumps(f.get(k), default=str) for k in chosen) for f in flats})

    chosen: list[str] = []
    while len(chosen) < most and groups(chosen) < len(flats):
        left = [k for k in keys if k not in chosen]
        if not left:
            break
        best = max(left, key=lambda k: groups([*chosen, k]))  # max keeps the first (most telling) of ties
        if groups([*chosen, best]) == groups(chosen):
            break
        chosen.append(best)
    return chosen or keys[:1]


def _short(key: str, keys: Sequence[str] = ()) -> str:
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    last = key.rsplit(".", 1)[-1]
    return key if sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1 else last


def labels(runs: Sequence[Run]) -> dict[int, str]:
    """Legend label per run: name, strategy and the (up to 3) config values that tell the runs apart."""
    keys = legend_keys([r.config for r in runs]) if len(runs) > 1 else []
    out = {}
    for i, r in enumerate(runs):
        flat = flatten(r.config)
        extra = ", ".join(f"{_short(k, keys)}={_value(flat.get(k))}" for k in keys)
        out[i] = f"{r.name} · {r.strategy}" + (f" ({extra})" if extra else "")
    return out


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "null" if v is None else str(v)


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _acc_ci(line: dict | None) -> str:
    if not line:
        return "–"
    return f"{100 * line['accuracy']:.1f}% [{100 * line['ci_low']:.1f}, {100 * line['ci_high']:.1f}]"


def best_line(lines: list[dict]) -> dict | None:
    return max(lines, key=lambda m: (m["accuracy"], -m["iteration"])) if lines else None


# --- plots ---------------------------------------------------------------------------------------


def _figure(n: int, width: float = 5.6, height: float = 4.2, max_cols: int = 3, sharey: bool = False):
    """A figure with n panels, at most max_cols per row; returns (figure, the n axes)."""
    from matplotlib.figure import Figure

    cols = min(n, max_cols)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(width * cols, height * rows + (0.4 if rows > 1 else 0)), dpi=110, layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        ax.grid(True, alpha=0.3)
        if sharey:
            ax.yaxis.set_tick_params(labelleft=True)
    return fig, axes[:n]


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@dataclass
class Style:
    label: str
    color: Any
    ls: str


def run_styles(runs: Sequence[Run]) -> dict[int, Style]:
    """One label, colour and line style (by strategy) per run, shared by every plot: {id(run): Style}."""
    lab, colors = labels(runs), _colors(len(runs))
    return {id(r): Style(lab[i], colors[i], STRATEGY_STYLE.get(r.strategy, "-")) for i, r in enumerate(runs)}


REFERENCE_LABELS = ("random chance", "coin flip", "no preference")


def _percent_axis(ax, top: float | None = None) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, top if top is not None else 1.0)


def _iteration_axis(ax, iterations: Sequence[int]) -> None:
    its = sorted(set(iterations)) or [0]
    ax.set_xticks(its)
    ax.set_xlim(min(its) - 0.4, max(its) + 0.4)
    ax.set_xlabel("STaR iteration (0 = model before any training)")


def _legend_below(fig, axes) -> None:
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    order = sorted(range(len(names)), key=lambda i: names[i].startswith(REFERENCE_LABELS))  # runs first
    handles, names = [handles[i] for i in order], [names[i] for i in order]
    if handles:
        cols = 1 if max(len(n) for n in names) > 48 * len(axes) / 2 else min(len(names), 2)
        fig.legend(handles, names, loc="outside lower center", ncols=cols, fontsize=9, frameon=False)


def plot_accuracy(runs: Sequence[Run], path: Path, styles: dict[int, Style] | None = None) -> Path | None:
    """Validation accuracy per iteration with 95% CI bars and the chance line.

    The first panel holds every run's headline accuracy (pooled over its languages); when some run covers
    several languages, one more panel per language follows. Panels share the y axis.
    """
    styles = styles or run_styles(runs)
    runs = [r for r in runs if r.metrics]
    if not runs:
        return None
    multi = [r for r in runs if len([lang for lang in r.languages if lang != "all"]) > 1]
    panels: list[str | None] = [None]  # None = each run's headline language
    if multi:
        panels += list(dict.fromkeys(lang for r in multi for lang in r.languages if lang != "all"))
    fig, axes = _figure(len(panels), height=4.4, sharey=True)
    chance = 1 / CHANCE_CHOICES
    tops = [chance]
    for ax, lang in zip(axes, panels):
        its, ns = [], set()
        present = [r for r in runs if lang is None or lang in r.languages]
        for j, r in enumerate(present):
            lines = r.lines(lang)
            dodge = (j - (len(present) - 1) / 2) * 0.06  # keep overlapping error bars apart
            x = [m["iteration"] + dodge for m in lines]
            y = [m["accuracy"] for m in lines]
            err = [[m["accuracy"] - m["ci_low"] for m in lines], [m["ci_high"] - m["accuracy"] for m in lines]]
            st = styles[id(r)]
            ax.errorbar(x, y, yerr=err, color=st.color, ls=st.ls, marker="o", ms=5, capsize=4, lw=1.8,
                        label=st.label)
            its += [m["iteration"] for m in lines]
            tops += [m["ci_high"] for m in lines]
            ns |= {m["n"] for m in lines}
        ax.axhline(chance, color="0.35", ls=":", lw=1.5, label=f"random chance ({chance:.0%}, "
                                                             f"{CHANCE_CHOICES} options)")
        ax.text(0.01, chance, f" chance {chance:.0%}", transform=ax.get_yaxis_transform(), va="bottom",
                fontsize=8, color="0.35")
        _iteration_axis(ax, its)
        ax.set_ylabel("validation accuracy (bars: 95% CI)")
        n_text = f"n = {ns.pop()} questions" if len(ns) == 1 else "n = " + "/".join(str(n) for n in sorted(ns))
        langs = {r.main_language for r in present}
        if lang is not None:
            title = f"language: {lang}"
        elif multi:
            title = "each run overall (pooled over its languages)"
        else:
            title = f"language: {langs.pop()}" if len(langs) == 1 else "each run's language"
        ax.set_title(f"{title}, {n_text}", fontsize=10)
    _percent_axis(axes[0], min(1.0, max(tops) + 0.08))
    fig.suptitle("Validation accuracy per STaR iteration", fontsize=12)
    _legend_below(fig, axes)
    fig.savefig(path)
    return path


def plot_data_quality(runs: Sequence[Run], path: Path, styles: dict[int, Style] | None = None) -> Path | None:
    """Kept fraction (training), parse rate and degenerate rate (validation) per iteration."""
    styles = styles or run_styles(runs)
    runs = [r for r in runs if r.metrics]
    if not runs:
        return None
    panels = [
        ("kept_fraction", "training questions with ≥ 1 correct sample",
         "Kept fraction (training data size)", 1),
        ("parse_rate", "validation answers with a parsable letter", "Answer parse rate", 0),
        ("degenerate_rate", "validation outputs that loop, are empty\nor in the wrong language",
         "Degenerate output rate", 0),
    ]
    fig, axes = _figure(3, width=4.6, height=4.2)
    for ax, (key, ylabel, title, first) in zip(axes, panels):
        its: list[int] = []
        for j, r in enumerate(runs):
            lines = [m for m in r.lines() if m["iteration"] >= first and m.get(key) is not None]
            if not lines:
                continue
            st = styles[id(r)]
            dodge = (j - (len(runs) - 1) / 2) * 0.04  # equal values of several runs stay visible
            ax.plot([m["iteration"] + dodge for m in lines], [m[key] for m in lines], color=st.color, marker="o",
                    ms=5, ls=st.ls, lw=1.8, label=st.label)
            its += [m["iteration"] for m in lines]
        _iteration_axis(ax, its or [first])
        if first:
            ax.set_xlabel("STaR iteration k (samples of the model after k − 1)")
        _percent_axis(ax, 1.05)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Training data and output quality per STaR iteration", fontsize=12)
    _legend_below(fig, axes)
    fig.savefig(path)
    return path


def _segments(run: Run, key: str) -> list[tuple[list[float], list[float]]]:
    """Per iteration with training: (cumulative optimizer step, value) of a training-log key."""
    out = []
    offset = 0
    for records in run.train_logs.values():
        xs = [offset + r.get("step", 0) for r in records if r.get(key) is not None]
        ys = [float(r[key]) for r in records if r.get(key) is not None]
        if xs:
            out.append((xs, ys))
        offset += max((r.get("step", 0) for r in records), default=0)
    return out


def _smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average (the window shrinks at the ends), so the smoothed curve does not lag."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half): i + half + 1]
        out.append(sum(part) / len(part))
    return out


def _curves(ax, runs: Sequence[Run], key: str, styles: dict[int, Style]) -> None:
    """One curve per run and iteration (not joined: each iteration trains anew); EMA over noisy ones."""
    for r in runs:
        st = styles[id(r)]
        segments = _segments(r, key)
        smooth = sum(len(xs) for xs, _ in segments) > 30
        for j, (xs, ys) in enumerate(segments):
            window = max(3, len(xs) // 8) | 1
            label = st.label if j == 0 else None
            if smooth:  # noisy per-step values: faint raw curve plus a smoothed one
                ax.plot(xs, ys, color=st.color, lw=0.8, alpha=0.3)
                ax.plot(xs, _smooth(ys, window), color=st.color, lw=1.8, ls=st.ls, label=label)
            else:
                ax.plot(xs, ys, color=st.color, lw=1.6, ls=st.ls, marker=".", label=label)
            if j:
                ax.axvline(xs[0] - 0.5, color=st.color, lw=0.8, ls=":", alpha=0.6)
    ax.set_xlabel("optimizer step, all iterations (dotted lines: a new STaR iteration starts)")
    if any(sum(len(xs) for xs, _ in _segments(r, key)) > 30 for r in runs):
        ax.text(0.99, 0.98, "bold: moving average\nfaint: every step", transform=ax.transAxes, ha="right",
                va="top", fontsize=8, color="0.35")


def plot_train_loss(runs: Sequence[Run], path: Path, styles: dict[int, Style] | None = None) -> Path | None:
    styles = styles or run_styles(runs)
    runs = [r for r in runs if any(r.train_logs.values())]
    if not runs:
        return None
    fig, axes = _figure(1, width=7.5, height=4.4)
    ax = axes[0]
    _curves(ax, runs, "loss", styles)
    ax.set_ylabel("training loss (the strategy's objective)")
    ax.set_title("Training loss per optimizer step\n(sft: NLL per token; dpo: DPO loss, 0.69 = no preference;"
                 " reinforce/weighted_sft: weighted NLL)", fontsize=9)
    _legend_below(fig, axes)
    fig.savefig(path)
    return path


def plot_dpo(runs: Sequence[Run], path: Path, styles: dict[int, Style] | None = None) -> Path | None:
    """DPO implicit-reward margins and pair accuracies per optimizer step."""
    styles = styles or run_styles(runs)
    runs = [r for r in runs if any("rewards/margins" in rec for recs in r.train_logs.values() for rec in recs)]
    if not runs:
        return None
    fig, axes = _figure(2, width=5.6, height=4.4)
    _curves(axes[0], runs, "rewards/margins", styles)
    axes[0].axhline(0, color="0.35", ls=":", lw=1.2, label="no preference (margin 0)")
    axes[0].set_ylabel("β · (log-ratio chosen − log-ratio rejected)")
    axes[0].set_title("Reward margin: chosen over rejected rationale", fontsize=10)
    _curves(axes[1], runs, "rewards/accuracies", styles)
    axes[1].axhline(0.5, color="0.35", ls=":", lw=1.2, label="coin flip (50%)")
    _percent_axis(axes[1], 1.05)
    axes[1].set_ylabel("pairs with chosen reward > rejected")
    axes[1].set_title("Reward accuracy", fontsize=10)
    fig.suptitle("DPO implicit rewards during training (log-ratio = log π/π_ref)", fontsize=12)
    _legend_below(fig, axes)
    fig.savefig(path)
    return path


def plot_eval(evals: Sequence[EvalResult], path: Path) -> Path | None:
    """Accuracy per language of eval folders, with CI bars and the chance line."""
    if not evals:
        return None
    import numpy as np

    langs = list(dict.fromkeys(lang for e in evals for lang in (e.metrics.get("by_language") or {"all": 0})))
    fig, axes = _figure(1, width=max(6.0, 1.1 * len(langs) * len(evals) + 2), height=4.4)
    ax = axes[0]
    colors = _colors(len(evals))
    width = 0.8 / len(evals)
    for i, e in enumerate(evals):
        by = e.metrics.get("by_language") or {"all": e.metrics}
        xs, ys, lo, hi = [], [], [], []
        for j, lang in enumerate(langs):
            m = by.get(lang)
            if m:
                xs.append(j + (i - (len(evals) - 1) / 2) * width)
                ys.append(m["accuracy"])
                lo.append(m["accuracy"] - m["ci_low"])
                hi.append(m["ci_high"] - m["accuracy"])
        ax.bar(xs, ys, width=width * 0.9, yerr=[lo, hi], capsize=4, color=colors[i],
               label=f"{e.name} ({e.metrics.get('mode', '?')}, {e.metrics.get('model', '?')})")
    chance = 1 / CHANCE_CHOICES
    ax.axhline(chance, color="0.35", ls=":", lw=1.5, label=f"random chance ({chance:.0%})")
    ns = {lang: "/".join(sorted({str((e.metrics.get("by_language") or {"all": e.metrics}).get(lang, {}).get("n", "–"))
                                  for e in evals})) for lang in langs}
    ax.set_xticks(np.arange(len(langs)), [f"{lang}\nn={ns[lang]}" for lang in langs])
    ax.text(0.01, chance, f" chance {chance:.0%}", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8,
            color="0.35")
    ax.set_xlabel("language")
    _percent_axis(ax, 1.0)
    ax.set_ylabel("accuracy (bars: 95% CI)")
    ax.set_title("Evaluation accuracy by language", fontsize=11)
    _legend_below(fig, axes)
    fig.savefig(path)
    return path


# --- the report ----------------------------------------------------------------------------------


def _hyper(r: Run) -> str:
    t = r.config.get("trainer", {})
    parts = [f"lr {t.get('lr'):g}" if isinstance(t.get("lr"), (int, float)) else None,
             f"β {t.get('dpo_beta')}" if r.strategy == "dpo" else None,
             f"{t.get('samples_per_question')} samples/q" if t.get("samples_per_question") else None,
             f"LoRA r {t.get('lora_r')}" if t.get("lora_r") else None]
    return ", ".join(p for p in parts if p)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def write_report(runs: Sequence[Run], evals: Sequence[EvalResult], out: Path) -> Path:
    """<out>/report.md plus its PNG plots; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    md = ["# starloop report", ""]
    if runs:
        md += ["## Runs", ""]
        rows = []
        for r in runs:
            c = r.config
            lines = r.lines()
            best = best_line(lines)
            rows.append([
                f"`{r.name}`", r.strategy, c.get("model", {}).get("name", "?"),
                f"{c.get('data', {}).get('name', '?')} / {c.get('data', {}).get('language', '?')}",
                c.get("prompt", {}).get("strategy", "?"), _hyper(r),
                _acc_ci(lines[0] if lines else None), _acc_ci(lines[-1] if lines else None),
                f"{_acc_ci(best)} (iter {best['iteration']})" if best else "–", r.status, f"`{r.path}`",
            ])
        md += _table(["run", "strategy", "model", "data / language", "prompt", "hyperparameters",
                      "iteration 0", "last iteration", "best", "status", "folder"], rows)
        md += ["", ("Accuracy is on the validation split with a 95% Wilson interval. The best iteration is picked "
               "on that same split, so its number is optimistic: confirm it with `starloop eval` on `test`."), ""]
    styles = run_styles(runs)
    plots = [
        ("Validation accuracy", plot_accuracy(runs, out / "accuracy.png", styles),
         ("Each point is one validation pass; bars are 95% confidence intervals; the dotted line is random "
         "guessing among the four options. Line style shows the strategy (solid sft, dashed dpo, dash-dot "
         "reinforce, dotted weighted_sft).")),
        ("Training data and output quality", plot_data_quality(runs, out / "data_quality.png", styles),
         ("Kept fraction: share of training questions for which the iteration's samples contained a correct "
         "answer (what SFT can train on). Parse rate and degenerate rate are measured on the validation "
         "outputs.")),
        ("Training loss", plot_train_loss(runs, out / "train_loss.png", styles),
         "Loss per optimizer step across all iterations, from `iter_k/train/log.jsonl`."),
        ("DPO rewards", plot_dpo(runs, out / "dpo_rewards.png", styles),
         ("Implicit DPO rewards β·log(π/π_ref) of chosen minus rejected rationales: a rising margin and "
         "reward accuracy above 50% mean the policy is learning the preferences.")),
        ("Evaluations", plot_eval(evals, out / "eval_by_language.png"),
         "Accuracy of `starloop eval` folders per language with 95% confidence intervals."),
    ]
    for title, png, caption in plots:
        if png is None:
            continue
        md += [f"## {title}", "", f"![{title}]({png.name})", "", caption, ""]
    if runs:
        md += ["## Per-iteration metrics", ""]
        for r in runs:
            md += [f"### `{r.name}` ({r.strategy})", ""]
            rows = [[m["iteration"], m["language"], m["n"], _acc_ci(m), _pct(m.get("parse_rate")),
                     _pct(m.get("degenerate_rate")), m.get("kept", "–"),
                     _pct(m.get("kept_fraction")) if m["iteration"] > 0 else "–",
                     f"{m['train_loss']:.4f}" if isinstance(m.get("train_loss"), (int, float)) else "–"]
                    for m in sorted(r.metrics, key=lambda m: (m["iteration"], m["language"] != "all"))]
            md += _table(["iteration", "language", "n", "accuracy [95% CI]", "parse rate", "degenerate",
                          "training examples", "kept fraction", "final train loss"], rows) if rows else \
                ["(no validation yet)"]
            md.append("")
    for e in evals:
        m = e.metrics
        md += [f"## Evaluation `{e.name}`", "",
               (f"{m.get('model', '?')} on {m.get('data', '?')} `{m.get('split', '?')}` ({m.get('mode', '?')} mode"
               f"{', checkpoint ' + str(m['checkpoint']) if m.get('checkpoint') else ''}): "
               f"**{_acc_ci(m)}**, n = {m.get('n')}, parse rate {_pct(m.get('parse_rate'))}."), ""]
        for group in ("by_language", "by_subject"):
            rows = [[k, v["n"], _acc_ci(v), _pct(v.get("parse_rate")), _pct(v.get("degenerate_rate"))]
                    for k, v in (m.get(group) or {}).items()]
            if len(rows) > 1:
                head = group.removeprefix("by_")
                table = _table([head, "n", "accuracy [95% CI]", "parse rate", "degenerate"], rows)
                md += (["<details><summary>by subject</summary>", ""] + table + ["", "</details>"]
                       if head == "subject" else table)
                md.append("")
    path = out / "report.md"
    io.write_text(path, "\n".join(md).rstrip() + "\n")
    return path




# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="starloop report",
        description="Markdown report with PNG plots (accuracy with confidence intervals, data quality, training "
                    "loss, DPO rewards) for run, sweep and eval folders; several runs overlay on each plot.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a `starloop train` out= folder, a -m sweep folder (all its jobs) or a `starloop eval` "
                             "folder")
    parser.add_argument("--out", metavar="DIR",
                        help="where report.md and the PNGs go (default: RUN_DIR/report for one run, ./report for "
                             "several)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    runs, evals = load(args.runs)
    out = Path(args.out) if args.out else (Path(args.runs[0]) / "report" if len(args.runs) == 1 else Path("report"))
    if out.exists() and not out.is_dir():
        raise StarloopError(f"{out}: --out exists and is not a folder")
    if not any(r.metrics for r in runs) and not evals:
        raise StarloopError(f"{', '.join(args.runs)}: no validation results yet (metrics.jsonl is empty)")
    try:
        path = write_report(runs, evals, out)
    except OSError as e:
        raise StarloopError(f"{out}: cannot write the report ({e.strerror or e})") from None
    print(str(path), flush=True)
    return path
