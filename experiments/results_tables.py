"""Markdown tables for docs/results.md from the run folders of experiments/results.sh.

    python experiments/results_tables.py runs/results > /tmp/tables.md

Reads only what the runs wrote (metrics.jsonl, metrics.json, jobs.tsv); recomputes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STRATEGIES = ("sft", "dpo", "reinforce", "weighted_sft")


def val_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == "val"]


def ci(r: dict) -> str:
    return f"{100 * r['accuracy']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def walls(root: Path) -> dict[str, int]:
    path = root / "jobs.tsv"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        name, rc, wall, *_ = line.split("\t")
        if rc == "0":
            out[name] = int(wall)
    return out


def strategy_table(root: Path, model: str) -> str:
    runs = {s: val_rows(root / f"{model}-{s}") for s in STRATEGIES if (root / f"{model}-{s}").exists()}
    n_iter = max(r["iteration"] for rows in runs.values() for r in rows)
    wall = walls(root)
    head = "| strategy | " + " | ".join(f"iteration {i}" for i in range(n_iter + 1)) + " | wall |"
    lines = [head, "|" + "---|" * (n_iter + 3)]
    for s, rows in runs.items():
        by_it = {r["iteration"]: r for r in rows if r["language"] in ("en", "all")}
        cells = [f"{ci(by_it[i])}, parse {100 * by_it[i]['parse_rate']:.0f}%" if i in by_it else "-"
                 for i in range(n_iter + 1)]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {wall.get(f'{model}-{s}', '-')} s |")
    return "\n".join(lines)


def training_data_table(root: Path, model: str) -> str:
    lines = ["| strategy | iteration | training examples | truncated (val) | repetition loops (val) | mean tokens (val) |",
             "|---|---|---|---|---|---|"]
    for s in STRATEGIES:
        if not (root / f"{model}-{s}").exists():
            continue
        for r in val_rows(root / f"{model}-{s}"):
            lines.append(f"| {s} | {r['iteration']} | {r.get('kept', 0)} | {100 * r['truncated_rate']:.1f}% | "
                         f"{100 * r['degenerate_repetition']:.1f}% | {r['mean_tokens']:.0f} |")
    return "\n".join(lines)


def logit_table(root: Path) -> str:
    lines = ["| model | letter-logit accuracy (no generation) | generative accuracy, iteration 0 | parse rate |",
             "|---|---|---|---|"]
    for model in ("smol", "qwen"):
        m = json.loads((root / f"{model}-logit" / "metrics.json").read_text())
        g = next(r for r in val_rows(root / f"{model}-sft") if r["iteration"] == 0)
        lines.append(f"| {model} | {ci(m)} | {ci(g)} | {100 * g['parse_rate']:.1f}% |")
    return "\n".join(lines)


def language_table(root: Path, model: str = "qwen") -> str:
    cols = {}
    for prompt in ("native", "translate"):
        for r in val_rows(root / f"{model}-afr-{prompt}"):
            cols[(prompt, r["iteration"], r["language"])] = r
    langs = sorted({k[2] for k in cols if k[2] != "all"}, key=lambda x: (x != "en", x)) + ["all"]
    lines = ["| language | native, before | native, after | translate, before | translate, after |",
             "|---|---|---|---|---|"]
    for lang in langs:
        cells = []
        for prompt in ("native", "translate"):
            for it in (0, 1):
                r = cols.get((prompt, it, lang))
                cells.append(f"{100 * r['accuracy']:.1f}% (parse {100 * r['parse_rate']:.0f}%)" if r else "-")
        lines.append(f"| {lang} (n={cols[('native', 0, lang)]['n']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else "runs/results")
    missing = [f"{root / n}" for n in ("smol-logit/metrics.json", "qwen-logit/metrics.json", "smol-sft", "qwen-sft",
                                       "qwen-afr-native", "qwen-afr-translate") if not (root / n).exists()]
    if missing:
        print(f"results_tables.py: {missing[0]}: missing (run experiments/results.sh first)", file=sys.stderr)
        sys.exit(2)
    print("## Reference: letter-logit vs generative\n\n" + logit_table(root) + "\n")
    for model in ("qwen", "smol"):
        print(f"## Strategies, {model}\n\n" + strategy_table(root, model) + "\n")
        print(f"### Training data and output quality, {model}\n\n" + training_data_table(root, model) + "\n")
    print("## African subset, qwen, sft, native vs translate\n\n" + language_table(root) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
