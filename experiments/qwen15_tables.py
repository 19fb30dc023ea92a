"""Markdown tables for docs/results.md from the run folders of experiments/qwen15.sh.

    python experiments/qwen15_tables.py runs/qwen15 > /tmp/tables.md

Reads only what the runs wrote (metrics.json, metrics.jsonl, DONE markers, jobs.tsv); recomputes nothing
but the stage split, which is the time between consecutive DONE markers of an iteration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ("sample", "rationalize", "train", "val")  # the order a STaR iteration writes its DONE markers


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(m: dict) -> str:
    return f"{pct(m['accuracy'])} [{pct(m['ci_low'])}, {pct(m['ci_high'])}]"


def load(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def knowledge(root: Path) -> str:
    rows = [("letter-logit, 0-shot", "know-logit0"), ("letter-logit, 5-shot", "know-logit5"),
            ("chain of thought, greedy (384 tokens)", "know-cot")]
    out = ["| method | accuracy % [95% CI] | parse % | truncated % | forced-choice % | wall s |",
           "|---|---|---|---|---|---|"]
    for label, name in rows:
        if not (root / name / "metrics.json").exists():
            out.append(f"| {label} | not run | | | | |")
            continue
        m = load(root / name)
        fc = m.get("forced_choice_accuracy")
        out.append(f"| {label} | {ci(m)} | {pct(m['parse_rate'])} | {pct(m['truncated_rate'])} | "
                   f"{pct(fc) if fc is not None else '-'} | {m['wall_s']:.0f} |")
    return "\n".join(out)


def subjects(root: Path, n: int = 8) -> str:
    """The subjects where chain of thought loses most against letter-logit, and where it gains most."""
    if not all((root / r / "metrics.json").exists() for r in ("know-logit0", "know-cot")):
        return "(not run)"
    lo, co = load(root / "know-logit0")["by_subject"], load(root / "know-cot")["by_subject"]
    diff = sorted((co[s]["accuracy"] - lo[s]["accuracy"], s) for s in lo if s in co)
    out = ["| subject | n | letter-logit % | chain of thought % | CoT truncated % |", "|---|---|---|---|---|"]
    for d, s in diff[:n] + diff[-n:]:
        out.append(f"| {s} | {lo[s]['n']} | {pct(lo[s]['accuracy'])} | {pct(co[s]['accuracy'])} | "
                   f"{pct(co[s]['truncated_rate'])} |")
    return "\n".join(out)


def languages(root: Path) -> str:
    runs = [("letter-logit", "afr-logit"), ("native", "afr-native"), ("English", "afr-english"),
            ("translate", "afr-translate")]
    ms = {label: load(root / name)["by_language"] for label, name in runs if (root / name / "metrics.json").exists()}
    if not ms:
        return "(not run)"
    langs = sorted(next(iter(ms.values())), key=lambda k: (k != "en", k))
    head = "| language | n | " + " | ".join(f"{lab} %" for lab in ms) + " | degenerate % (native / English / translate) |"
    out = [head, "|" + "---|" * (len(ms) + 3)]
    for lang in langs:
        cells = [f"{pct(m[lang]['accuracy'])} [{pct(m[lang]['ci_low'])}, {pct(m[lang]['ci_high'])}]" for m in ms.values()]
        deg = " / ".join(pct(ms[k][lang].get("degenerate_rate", 0.0)) for k in ("native", "English", "translate") if k in ms)
        n = next(iter(ms.values()))[lang]["n"]
        out.append(f"| {lang} | {n} | " + " | ".join(cells) + f" | {deg} |")
    return "\n".join(out)


def stage_split(run: Path, it: int) -> dict[str, float]:
    """Seconds per stage of iteration `it`: from the previous DONE marker (the last one of iteration
    it-1) to this stage's DONE."""
    prev = run / f"iter_{it - 1}" / "val" / "DONE"
    if not prev.exists():
        return {}
    t, out = prev.stat().st_mtime, {}
    for s in STAGES:
        done = run / f"iter_{it}" / s / "DONE"
        if done.exists():
            out[s] = done.stat().st_mtime - t
            t = done.stat().st_mtime
    return out


def seconds(split: dict[str, float]) -> str:
    return " / ".join(f"{split[s]:.0f}" if s in split else "-" for s in STAGES) if split else "-"


def star(root: Path, prefix: str = "") -> str:
    """Validation rows of each run whose name starts with `prefix`: English rows for English runs, the
    run's one language for the low-language runs."""
    out = [("| run | iteration | val accuracy % [95% CI] | parse % | McNemar p vs previous | kept | "
            "mean tokens | stage seconds (sample / rationalize / train / val) |"), "|---|---|---|---|---|---|---|---|"]
    for run in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)):
        path = run / "metrics.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        rows = [r for r in rows if r.get("split") == "val"
                and (prefix.startswith("low") or r.get("language") in ("en", "all"))]
        for r in rows:
            p = r.get("mcnemar_prev_p")
            sec = seconds(stage_split(run, r["iteration"])) if r["iteration"] else "-"
            out.append(f"| {run.name} | {r['iteration']} | {ci(r)} | {pct(r['parse_rate'])} | "
                       f"{'-' if p is None else f'{p:.3g}'} | {r.get('kept', 0)} | {r['mean_tokens']:.0f} | {sec} |")
        nxt = 1 + max((r["iteration"] for r in rows), default=-1)
        partial = stage_split(run, nxt)
        if partial:  # an iteration that started but did not validate before the run was stopped
            out.append(f"| {run.name} | {nxt} | stopped before validation | | | | | {seconds(partial)} |")
    return "\n".join(out)


def main(root: Path) -> None:
    print("## What it knows (MMLU val)\n\n" + knowledge(root))
    print("\n### Subjects where chain of thought loses or gains most against letter-logit\n\n" + subjects(root))
    print("\n## The African subset (val, per language)\n\n" + languages(root))
    print("\n## STaR runs, English\n\n" + star(root, "en-"))
    print("\n## STaR runs, lowest language\n\n" + star(root, "low-"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
