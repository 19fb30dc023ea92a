"""Markdown tables for docs/results.md from the run folders of experiments/qwen15.sh.

    python experiments/qwen15_tables.py runs/qwen15 > /tmp/tables.md
    python experiments/qwen15_tables.py runs/qwen15 runs/qwen15-earlier  # and the runs both folders hold, paired

Reads only what the runs wrote (metrics.json, metrics.jsonl, DONE markers, jobs.tsv, iter_*/val/generations.csv,
and the letter-logit evaluations' generations.csv and config.yaml);
recomputes only the stage split (the time between consecutive DONE markers of an iteration), the paired tests
between runs and the answer-letter shares, from the validation generations (the columns question_id, extracted and
correct are enough, so a folder of trimmed copies gives the same tables).
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

from starloop.metrics import mcnemar, wilson_interval

csv.field_size_limit(sys.maxsize)  # a validation row holds a whole rationale

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


@functools.cache  # the tables read one file many times (every pair, every row); callers do not change it
def answers(path: Path) -> dict[str, dict] | None:
    """A generations.csv's rows by question id, or None where the file is absent."""
    if not path.exists():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        return {r["question_id"]: r for r in csv.DictReader(f)}


def val_answers(run: Path, it: int) -> dict[str, dict] | None:
    """Iteration `it`'s validation rows of a run by question id, or None where the file is absent."""
    return answers(run / f"iter_{it}" / "val" / "generations.csv")


def metric_lines(run: Path) -> list[dict]:
    """The lines of a run's metrics.jsonl (none where it is absent)."""
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def correct(rows: dict[str, dict]) -> dict[str, bool]:
    return {q: r["correct"] == "True" for q, r in rows.items()}


def top_letter(rows: dict[str, dict] | None) -> str:
    """The commonest extracted letter and its share of the parsed answers: a policy collapsing onto one
    letter shows here before it shows in accuracy."""
    letters = Counter(r["extracted"] for r in (rows or {}).values() if r["extracted"])
    if not letters:
        return "-"
    letter, n = letters.most_common(1)[0]
    return f"{letter} {100 * n / sum(letters.values()):.0f}"


def shuffled_chance(rows: dict[str, dict] | None) -> float | None:
    """Expected accuracy of the run's own answers dealt to the questions at random (a permutation
    baseline): sum over letters of (share of rows answering it) x (share of rows whose gold it is).
    Unparsed rows answer nothing. It is 25% for any answers when the gold letters are uniform, and differs
    from 25% when both the key and the answers lean: a run that answers mostly the key's commonest letter
    beats 25% without knowing anything."""
    if not rows:
        return None
    n = len(rows)
    said = Counter(r["extracted"] for r in rows.values() if r["extracted"])
    gold = Counter(r["gold"] for r in rows.values())
    return sum(said[k] * gold[k] for k in said) / n**2


def runs_of(root: Path, prefix: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def pairs_of(runs: list[Path], prefix: str) -> list[tuple[Path, Path]]:
    """Which runs of a group to test against each other: every run against the group's sft run (`en-sft`,
    `low-zu-sft`) and the gain filter (`...-sft-gain`) against each weighted_sft run (`...-wsft-*`, the rewards
    of question 5) when there are such runs; else every two runs."""
    sft = next((r for r in runs if r.name.startswith(prefix) and r.name.endswith("-sft")), None)
    if sft is None:
        return list(combinations(runs, 2))
    lang = sft.name.removesuffix("sft")  # "en-", "low-zu-"
    mine = [r for r in runs if r.name.startswith(lang)]
    out = [(sft, r) for r in mine if r != sft]
    gain = next((r for r in mine if r.name == f"{lang}sft-gain"), None)
    if gain is not None:
        out += [(gain, r) for r in mine if r.name.startswith(f"{lang}wsft-")]
    return out


def validated(run: Path) -> list[int]:
    """The iterations whose validation answers the run folder holds."""
    return sorted(int(p.parts[-3].removeprefix("iter_")) for p in run.glob("iter_*/val/generations.csv"))


def paired_rows(pairs: list[tuple[Path, Path]], label=lambda a, b: f"{a.name} / {b.name}",
                first: int = 1) -> list[str]:
    """Exact McNemar tests between two runs at each iteration from `first` that both validated, on the
    questions both answered (b = right in the first run only, c = right in the second only)."""
    out = []
    for a, b in pairs:
        for it in sorted(set(validated(a)) & set(validated(b))):
            if it < first:
                continue
            ca, cb = correct(val_answers(a, it)), correct(val_answers(b, it))
            m = mcnemar(ca, cb)
            both = set(ca) & set(cb)
            acc = [100 * sum(c[q] for q in both) / max(len(both), 1) for c in (ca, cb)]
            out.append(f"| {label(a, b)} | {it} | {m['n']} | {acc[0]:.1f} | {acc[1]:.1f} | {m['b']} | "
                       f"{m['c']} | {m['p']:.3g} |")
    return out


PAIRED_HEAD = ["| runs (first / second) | iteration | n | first % | second % | b | c | McNemar p |",
               "|---|---|---|---|---|---|---|---|"]


def paired(root: Path, prefix: str) -> str:
    """Paired tests between the runs of a group (pairs_of says which)."""
    rows = paired_rows(pairs_of(runs_of(root, prefix), prefix))
    return "\n".join(PAIRED_HEAD + rows) if rows else "(no two runs validated the same iteration)"


def across(root: Path, other: Path) -> str:
    """The same run (by name) in two sittings, iteration by iteration from the base model's (iteration 0):
    how far apart two runs of one configuration and seed land (kernels and batch composition differ between
    sittings)."""
    names = sorted({r.name for r in runs_of(root, "")} & {r.name for r in runs_of(other, "")})
    rows = paired_rows([(other / n, root / n) for n in names],
                       label=lambda a, b: f"{b.name}: {other.name} / {root.name}", first=0)
    return "\n".join(PAIRED_HEAD + rows) if rows else "(no run validated an iteration in both sittings)"


BASE_GROUPS = (("answered", lambda r: bool(r["extracted"])),
               ("unanswered, truncated", lambda r: not r["extracted"] and r.get("truncated") == "True"),
               ("unanswered, ended", lambda r: not r["extracted"] and r.get("truncated") != "True"))


def format_split(root: Path, prefix: str) -> str:
    """Where each run's gain comes from: its last validated iteration against iteration 0 within three
    groups of questions, by what the base model did with them (answered; gave no answer because it ran out
    of tokens; gave no answer and stopped). A gain only in the unanswered groups is the format fix; a gain
    among the answered questions is more than that."""
    out = [("| run | iteration | questions, by the base model's output | n | correct before | correct after | "
            "b | c | McNemar p |"), "|---|---|---|---|---|---|---|---|---|"]
    for run in runs_of(root, prefix):
        base = val_answers(run, 0)
        last = max((k for k in validated(run) if k > 0), default=None)
        if base is None or last is None:
            continue
        then, now = correct(base), correct(val_answers(run, last))
        for label, keep in BASE_GROUPS:
            ids = [q for q, r in base.items() if keep(r) and q in now]
            before = {q: then[q] for q in ids}
            m = mcnemar(before, {q: now[q] for q in ids})
            out.append(f"| {run.name} | {last} | {label} | {len(ids)} | {sum(before.values())} | "
                       f"{sum(now[q] for q in ids)} | {m['b']} | {m['c']} | {m['p']:.3g} |")
    return "\n".join(out) if len(out) > 2 else "(no run validated after iteration 0)"


def star(root: Path, prefix: str = "") -> str:
    """Validation rows of each run whose name starts with `prefix`: English rows for English runs, the
    run's one language for the low-language runs."""
    out = [("| run | iteration | val accuracy % [95% CI] | parse % | forced-choice % | degenerate % | top letter % | shuffled % | "
            "McNemar p vs previous | McNemar p vs iteration 0 | kept | weight on wrong % | mean tokens | "
            "stage seconds (sample / rationalize / train / val) |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs_of(root, prefix):
        rows = [r for r in metric_lines(run) if r.get("split") == "val"
                and (prefix.startswith("low") or r.get("language") in ("en", "all"))]
        for r in rows:
            p, p0, fc = r.get("mcnemar_prev_p"), r.get("mcnemar_base_p"), r.get("forced_choice_accuracy")
            sec = seconds(stage_split(run, r["iteration"])) if r["iteration"] else "-"
            answers = val_answers(run, r["iteration"])
            chance = shuffled_chance(answers)
            out.append(f"| {run.name} | {r['iteration']} | {ci(r)} | {pct(r['parse_rate'])} | "
                       f"{'-' if fc is None else pct(fc)} | {pct(r.get('degenerate_rate', 0.0))} | "
                       f"{top_letter(answers)} | {'-' if chance is None else pct(chance)} | "
                       f"{'-' if p is None else f'{p:.3g}'} | "
                       f"{'-' if p0 is None else f'{p0:.3g}'} | {r.get('kept', 0)} | "
                       f"{pct(r['positive_weight_on_wrong']) if 'positive_weight_on_wrong' in r else '-'} | "
                       f"{r['mean_tokens']:.0f} | {sec} |")
        nxt = 1 + max((r["iteration"] for r in rows), default=-1)
        partial = stage_split(run, nxt)
        if partial:  # an iteration that started but did not validate before the run was stopped
            out.append(f"| {run.name} | {nxt} | stopped before validation |" + " |" * 10 + f" {seconds(partial)} |")
    return "\n".join(out)


def val_accuracy(run: Path, language: str, iteration: int | None) -> str:
    """The run's greedy chain-of-thought accuracy at `iteration` in `language` ("-" where it has none)."""
    rows = [r for r in metric_lines(run) if r.get("split") == "val" and r.get("language") in (language, "all")
            and r.get("iteration") == iteration]
    return pct(rows[-1]["accuracy"]) if rows else "-"


def scored_iteration(ev: Path) -> int | None:
    """The iteration whose adapter an evaluation scored: its config.yaml's checkpoint, `.../iter_<k>`."""
    path = ev / "config.yaml"
    found = re.search(r"^checkpoint: .*iter_(\d+)/?$", path.read_text(), re.MULTILINE) if path.exists() else None
    return int(found[1]) if found else None


def adapter_logits(root: Path) -> str:
    """Letter-logit accuracy (0-shot) of a run's adapter (`logit-<run>-iter_<k>`, experiments/qwen15.sh's LOGIT;
    `logit-<run>` before the iteration was in the name) against the base model's on the same questions:
    know-logit0 for an English run, afr-logit's rows of the run's language for a `low-<L>-` run. b = right with
    the base model only, c = right with the adapter only; the chain of thought is the run's own validation at the
    iteration the adapter comes from."""
    out = [("| run | iteration | language | n | base letter-logit % | adapter letter-logit % [95% CI] | b | c | "
            "McNemar p | adapter's chain of thought % |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for ev in sorted(p for p in root.glob("logit-*") if p.is_dir()):
        run = re.sub(r"-iter_\d+$", "", ev.name.removeprefix("logit-"))
        it = scored_iteration(ev)
        low = re.match(r"low-([a-z]+)-", run)
        lang = low[1] if low else "en"
        base = answers(root / ("afr-logit" if low else "know-logit0") / "generations.csv")
        mine = answers(ev / "generations.csv")
        if base is None or mine is None:
            out.append(f"| {run} | {it} | {lang} | not run | | | | | | |")
            continue
        before = correct({q: r for q, r in base.items() if r["language"] == lang})
        after = correct({q: r for q, r in mine.items() if r["language"] == lang})
        both = set(before) & set(after)
        if not both:
            out.append(f"| {run} | {it} | {lang} | 0: no question in both evaluations | | | | | | |")
            continue
        m = mcnemar(before, after)
        k0, k1 = sum(before[q] for q in both), sum(after[q] for q in both)
        lo, hi = wilson_interval(k1, len(both))
        out.append(f"| {run} | {it} | {lang} | {m['n']} | {pct(k0 / len(both))} | {pct(k1 / len(both))} "
                   f"[{pct(lo)}, {pct(hi)}] | {m['b']} | {m['c']} | {m['p']:.3g} | "
                   f"{val_accuracy(root / run, lang, it)} |")
    return "\n".join(out) if len(out) > 2 else "(not run)"


def main(root: Path, other: Path | None = None) -> None:
    print("## What it knows (MMLU val)\n\n" + knowledge(root))
    print("\n### Subjects where chain of thought loses or gains most against letter-logit\n\n" + subjects(root))
    print("\n## The African subset (val, per language)\n\n" + languages(root))
    print("\n## STaR runs, English\n\n" + star(root, "en-"))
    print("\n### Paired tests between the English runs\n\n" + paired(root, "en-"))
    print("\n### Where the English gains come from\n\n" + format_split(root, "en-"))
    print("\n## STaR runs, lowest language\n\n" + star(root, "low-"))
    print("\n### Paired tests between the lowest language's runs\n\n" + paired(root, "low-"))
    print("\n### Where the lowest language's gains come from\n\n" + format_split(root, "low-"))
    print("\n## What the adapters know: letter-logit before and after\n\n" + adapter_logits(root))
    if other is not None:
        print(f"\n## The same runs in another sitting ({other})\n\n" + across(root, other))


if __name__ == "__main__":
    missing = [a for a in sys.argv[1:] if not Path(a).is_dir()]
    problem = ("usage: python experiments/qwen15_tables.py RUNS [OTHER_RUNS]" if len(sys.argv) not in (2, 3)
               else f"{missing[0]}: no such folder" if missing else None)
    if problem:
        print(f"qwen15_tables.py: {problem}", file=sys.stderr)
        sys.exit(2)
    main(*map(Path, sys.argv[1:]))
