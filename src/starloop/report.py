"""`starloop report`: a Markdown report with PNG plots from run, sweep and eval folders; sweep summaries.

    starloop report runs/english_dpo runs/english_sft [--out DIR]
    starloop report runs/sweep            # a -m sweep folder: every job is a run

Inputs (all written by the loop; nothing is recomputed):
    <run>/metrics.jsonl          one line per (iteration, language) validation
    <run>/config.yaml            the resolved config (strategy, model, data, hyperparameters)
    <run>/iter_k/train/log.jsonl one record per optimizer step (loss, DPO rewards/margins, ...)
    <eval>/metrics.json          `starloop eval` results (by_language, by_subject)

Folders are read by `starloop.results`, the plots drawn by `starloop.plots`; this module writes the Markdown.
Sweep summaries (`<sweep>/sweep_summary.md`, `.csv`) are written by `starloop.sweep`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from starloop import io
from starloop.errors import StarloopError
from starloop.markdown import pct, table
from starloop.plots import (
    CHANCE_CHOICES,
    Style,
    labels,
    legend_keys,
    plot_accuracy,
    plot_data_quality,
    plot_dpo,
    plot_eval,
    plot_train_loss,
    run_styles,
)
from starloop.results import (
    IGNORED_KEYS,
    EvalResult,
    Run,
    best_line,
    flatten,
    is_eval,
    is_run,
    load,
    load_eval,
    load_run,
    sweep_jobs,
    varying_keys,
)

log = logging.getLogger("starloop.report")


# --- the report ----------------------------------------------------------------------------------


def _acc_ci(line: dict | None) -> str:
    if not line:
        return "–"
    text = f"{100 * line['accuracy']:.1f}% [{100 * line['ci_low']:.1f}, {100 * line['ci_high']:.1f}]"
    if line.get("ci_low_clustered") is not None:  # pooled over languages: the language-clustered interval too
        text += f", clustered [{100 * line['ci_low_clustered']:.1f}, {100 * line['ci_high_clustered']:.1f}]"
    return text


def _paired(line: dict) -> str:
    """McNemar against the previous iteration: questions lost / gained and the two-sided p-value."""
    if line.get("mcnemar_prev_p") is None:
        return "–"
    return f"-{line['mcnemar_prev_b']} / +{line['mcnemar_prev_c']}, p = {line['mcnemar_prev_p']:.3g}"


def _hyper(r: Run) -> str:
    t = r.config.get("trainer", {})
    reward = t.get("reward")
    if reward == "expected_likelihood" and t.get("label_dist"):
        reward += f" ({t['label_dist']} labels)"
    parts = [f"lr {t.get('lr'):g}" if isinstance(t.get("lr"), (int, float)) else None,
             f"reward {reward}" if reward and reward != "correct" else None,
             *_strategy_keys(r.strategy, t),
             f"{t.get('samples_per_question')} samples/q" if t.get("samples_per_question") else None,
             f"LoRA r {t.get('lora_r')}" if t.get("lora_r") else None]
    return ", ".join(p for p in parts if p)


def _strategy_keys(strategy: str, t: dict) -> list[str]:
    """The run's values of its strategy's headline keys (`Strategy.headline`, e.g. dpo: β)."""
    from starloop.strategies import STRATEGIES

    s = STRATEGIES.get(strategy)
    return [f"{label} {t[k]}" for k, label in (s.headline if s else {}).items() if k in t]


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
        md += table(["run", "strategy", "model", "data / language", "prompt", "hyperparameters",
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
            weighted = any("positive_weight_on_wrong" in m for m in r.metrics)  # reward strategies
            rows = [[m["iteration"], m["language"], m["n"], _acc_ci(m), _paired(m), pct(m.get("parse_rate")),
                     pct(m.get("degenerate_rate")), pct(m.get("cross_check_disagreement")), m.get("kept", "–"),
                     pct(m.get("kept_fraction")) if m["iteration"] > 0 else "–",
                     *([pct(m.get("positive_weight_on_wrong"))] if weighted else []),
                     f"{m['train_loss']:.4f}" if isinstance(m.get("train_loss"), (int, float)) else "–"]
                    for m in sorted(r.metrics, key=lambda m: (m["iteration"], m["language"] != "all"))]
            md += table(["iteration", "language", "n", "accuracy [95% CI]", "vs previous (McNemar)",
                          "parse rate", "degenerate", "extraction vs forced choice",
                          "training examples", "kept fraction", *(["weight on wrong answers"] if weighted else []),
                          "final train loss"], rows) if rows else ["(no validation yet)"]
            md.append("")
    for e in evals:
        m = e.metrics
        md += [f"## Evaluation `{e.name}`", "",
               (f"{m.get('model', '?')} on {m.get('data', '?')} `{m.get('split', '?')}` ({m.get('mode', '?')} mode"
               f"{', checkpoint ' + str(m['checkpoint']) if m.get('checkpoint') else ''}): "
               f"**{_acc_ci(m)}**, n = {m.get('n')}, parse rate {pct(m.get('parse_rate'))}"
               + (f", extracted letter differs from the model's forced choice on "
                  f"{pct(m['cross_check_disagreement'])} of {m.get('cross_check_n')} read answers"
                  if "cross_check_disagreement" in m else "") + "."), ""]
        for group in ("by_language", "by_subject"):
            rows = [[k, v["n"], _acc_ci(v), pct(v.get("parse_rate")), pct(v.get("degenerate_rate")),
                     pct(v.get("cross_check_disagreement"))]
                    for k, v in (m.get(group) or {}).items()]
            if len(rows) > 1:
                head = group.removeprefix("by_")
                group_table = table([head, "n", "accuracy [95% CI]", "parse rate", "degenerate",
                                      "extraction vs forced choice"], rows)
                md += (["<details><summary>by subject</summary>", ""] + group_table + ["", "</details>"]
                       if head == "subject" else group_table)
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
    from starloop.runstate import RunLock, folder_owner

    if out.is_dir() and folder_owner(out) is not None:
        raise StarloopError(f"{out}: holds a `starloop {folder_owner(out)}` run; the report does not write into "
                            "it: choose another --out")
    try:
        with RunLock(out):  # one writer at a time; the lock file goes again when the report is written
            path = write_report(runs, evals, out)
    except OSError as e:
        raise StarloopError(f"{out}: cannot write the report ({e.strerror or e})") from None
    import json

    print(json.dumps({"report": str(path), "runs": len(runs), "evals": len(evals)}), flush=True)
    return path


# Loading and plotting live in starloop.results and starloop.plots; their names stay importable from here.
__all__ = ["CHANCE_CHOICES", "IGNORED_KEYS", "EvalResult", "Run", "Style", "best_line",
           "flatten", "is_eval", "is_run", "labels", "legend_keys", "load", "load_eval", "load_run", "main",
           "plot_accuracy", "plot_data_quality", "plot_dpo", "plot_eval", "plot_train_loss", "run_styles",
           "sweep_jobs", "varying_keys", "write_report"]
