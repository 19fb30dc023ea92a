"""PNG plots of `starloop report` (matplotlib): validation accuracy, data quality, training loss, DPO rewards
and eval accuracy, with one label, colour and line style per run shared by every plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starloop.results import EvalResult, Run, flatten, varying_keys

CHANCE_CHOICES = 4  # every supported benchmark (MMLU and its translations) has four options
LINE_STYLES = ("-", "--", "-.", ":", (0, (3, 1, 1, 1, 1, 1)))  # one per strategy, in registry order


# --- labels --------------------------------------------------------------------------------------


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
    return {id(r): Style(lab[i], colors[i], _line_style(r.strategy)) for i, r in enumerate(runs)}


def _line_style(strategy: str):
    from starloop.strategies import STRATEGIES

    names = list(STRATEGIES)
    return LINE_STYLES[names.index(strategy) % len(LINE_STYLES)] if strategy in names else "-"


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
    fig, axes = _figure(1, width=min(16.0, max(6.0, 0.35 * len(langs) * len(evals) + 2)), height=4.4)
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

