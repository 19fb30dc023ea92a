"""Agreement of starloop's letter-logit MMLU accuracy with lm-evaluation-harness's `mmlu` task.

One command reproduces everything (the harness is the optional `experiments` extra):

    pip install -e ".[experiments]"
    nice -n 10 python experiments/lm_eval_agreement.py --out /tmp/lm_eval_agreement

`--model` picks the model (default: the embedded SmolLM2-135M-Instruct): a starloop preset, a local
folder, a .gguf file or a hub id, resolved as `starloop eval model=...` resolves it; lm-eval loads the
same folder (`pretrained=`). For each dtype (default: bfloat16 and float32) it

1. writes the bundled MMLU validation split (`load_questions(DataConfig(), "val")`, 1531 questions)
   as one JSON-lines file per subject in cais/mmlu's schema (question, subject, choices, answer) plus
   the question id, and a local task group `starloop_mmlu_val` whose 57 subject tasks copy lm-eval's
   `mmlu` default template (same doc_to_text, choices, target, per-subject description, metric acc)
   but read those files (`dataset_path: json`, `data_files`) instead of `cais/mmlu` from the hub;
2. runs `lm-eval run --model hf --model_args pretrained=<model folder>,dtype=<dtype>
   --tasks starloop_mmlu_val --include_path <out>/tasks --num_fewshot 0 --log_samples`;
3. runs `starloop eval eval.mode=logit model=<model> model.dtype=<dtype> out=<out>/starloop_<dtype> progress=false`
   (or reuses an earlier run's folder with `--reuse-starloop <dtype>=<dir>`);
4. checks that both sides scored the same prompt string and continuations " A".." D", then compares,
   question by question: both accuracies, the fraction of questions where the chosen letter
   is the same, every disagreement with both sides' log-probability gap between the two letters, and
   the largest difference between the two sides' log p(" X" | prompt) over all letters.

It writes <out>/report.md and <out>/comparison.json and prints the report. `--limit N` runs a quick
check on the first N questions of starloop's seeded validation order (`data.limit=N`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

TASK_GROUP = "starloop_mmlu_val"
LETTERS = "ABCD"

# lm-eval's tasks/mmlu/default/_default_template_yaml, with the hub dataset replaced by local files and
# no few-shot split (this experiment is 0-shot).
TEMPLATE = """\
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


class BadInput(SystemExit):
    """A bad argument or reused folder: its one line goes to stderr, the exit code is 2."""

    def __init__(self, msg: str):
        super().__init__(2)
        self.msg = msg
        print(f"lm_eval_agreement: {msg}", file=sys.stderr)

    def __str__(self) -> str:
        return self.msg


def write_task(questions, out: Path) -> Path:
    """Per-subject JSON-lines data and lm-eval task configs under out/tasks; returns that folder."""
    tasks, data = out / "tasks", out / "data"
    for d in (tasks, data):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    by_subject: dict[str, list] = {}
    for q in questions:
        by_subject.setdefault(q.subject, []).append(q)
    (tasks / "_template_yaml").write_text(TEMPLATE, encoding="utf-8")
    names = []
    for subject, qs in sorted(by_subject.items()):
        path = data / f"{subject}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for q in qs:
                row = {"question": q.question, "subject": q.subject, "choices": list(q.choices),
                       "answer": q.answer, "id": q.id}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        name = f"{TASK_GROUP}_{subject}"
        names.append(name)
        description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        cfg = {
            "include": "_template_yaml",
            "task": name,
            "task_alias": subject,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
            "test_split": "test",
            "description": description,
        }
        # JSON is valid YAML and keeps the description's escapes exact.
        (tasks / f"{name}.yaml").write_text(json.dumps(cfg, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    group = {"group": TASK_GROUP, "task": names,
             "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}], "metadata": {"version": 1}}
    (tasks / f"_{TASK_GROUP}.yaml").write_text(json.dumps(group, indent=1) + "\n", encoding="utf-8")
    return tasks


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run cmd with its output in `log`; return wall seconds; exit on failure."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    if rc != 0:
        sys.exit(f"command failed (exit {rc}); see {log}")
    return wall


def run_lm_eval(model_dir: str, dtype: str, tasks: Path, out: Path, batch_size: int, device: str) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = ["lm-eval", "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype={dtype}",
           "--tasks", TASK_GROUP, "--include_path", str(tasks), "--num_fewshot", "0",
           "--batch_size", str(batch_size), "--device", device, "--log_samples", "--output_path", str(out)]
    return run(cmd, out / "lm_eval.log", env)


def starloop_command(model: str, dtype: str, out: Path, limit: int | None, batch_size: int) -> list[str]:
    """`starloop eval` on the same questions as lm-eval: the first `limit` (all with None) of the seeded
    val order. eval.limit=null: its default (20, a laptop-sized run) would cut the run short."""
    cmd = ["starloop", "eval", "eval.mode=logit", f"model={model}", f"model.dtype={dtype}",
           f"eval.batch_size={batch_size}", "eval.limit=null", f"out={out}", "progress=false"]
    return cmd + ([f"data.limit={limit}"] if limit is not None else [])


def run_starloop(cmd: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    return run(cmd, out.parent / f"{out.name}.log")


def read_lm_eval(out: Path) -> tuple[dict[str, dict], dict]:
    """{question id: {"ll": [4 floats], "acc": 0/1, "answer": int, "requests": [(context, continuation)] * 4}}
    from the logged samples; results json."""
    rows: dict[str, dict] = {}
    for path in glob.glob(str(out / "**" / f"samples_{TASK_GROUP}_*.jsonl"), recursive=True):
        with open(path, encoding="utf-8") as f:
            for line in f:
                s = json.loads(line)
                ll = [float(r[0]) for r in s["filtered_resps"]]
                requests = [(a["arg_0"], a["arg_1"]) for a in s["arguments"].values()]
                rows[s["doc"]["id"]] = {"ll": ll, "acc": float(s["acc"]), "answer": int(s["doc"]["answer"]),
                                        "requests": requests}
    results = sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))
    if not rows or not results:
        sys.exit(f"no lm-eval samples/results under {out}")
    return rows, json.loads(Path(results[-1]).read_text(encoding="utf-8"))


def model_folder(model: str) -> str:
    """The folder (or hub id) that `starloop eval model=<model>` loads; lm-eval's `pretrained=`."""
    from starloop.errors import ConfigError
    from starloop.models import resolve_model_source

    try:
        src, gguf = resolve_model_source(model)
    except ConfigError as e:
        raise BadInput(f"--model: {e}")
    if gguf:
        raise BadInput(f"--model {model}: a GGUF inside a folder or hub repo; pass the .gguf file itself")
    return src


def check_starloop_run(out: Path, dtype: str, model: str) -> dict:
    """A reused starloop folder must be a logit eval of `model` on val, in `dtype`."""
    from omegaconf import OmegaConf

    from starloop.models import resolve_dtype

    if not (out / "config.yaml").is_file():
        raise BadInput(f"{out} has no config.yaml: not a finished `starloop eval` run")
    cfg = OmegaConf.load(out / "config.yaml")
    got = str(resolve_dtype(cfg.model.dtype, torch_device(cfg.model.device))).removeprefix("torch.")
    problems = [f"{k}={v!r}" for k, v, want in [("eval.mode", cfg.eval.mode, "logit"),
                                                   ("data.split", cfg.data.split, "val"),
                                                   ("model", model_folder(cfg.model.name), model_folder(model)),
                                                   ("model.dtype", got, dtype)] if v != want]
    if problems:
        raise BadInput(f"{out} is not a matching starloop run: {', '.join(problems)}")
    return OmegaConf.to_container(cfg)


def torch_device(name: str):
    from starloop.models import resolve_device

    return resolve_device(name)


def wall_times(lm_out: Path, sl_out: Path) -> tuple[float, float]:
    """Each run's own wall-clock seconds (model load included), as its output files record them."""
    results = sorted(glob.glob(str(lm_out / "**" / "results_*.json"), recursive=True))
    lm = float(json.loads(Path(results[-1]).read_text(encoding="utf-8"))["total_evaluation_time_seconds"])
    metrics = json.loads((sl_out / "metrics.json").read_text(encoding="utf-8"))
    return lm, float(metrics["wall_s"])  # from before the model load to the end


def read_starloop(out: Path) -> dict[str, dict]:
    from starloop.evaluate import eval_samples_path

    rows = {}
    with open(eval_samples_path(out), encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            rows[r["question_id"]] = {"letter": r["extracted"], "gold": r["gold"], "prompt": r["prompt"],
                                      "logp": [float(r[f"logp_{L}"]) for L in LETTERS]}
    return rows


def argmax_first(xs: list[float]) -> int:
    """Index of the first maximum (numpy.argmax, which lm-eval uses for `acc`)."""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def prompt_mismatches(lm: dict[str, dict], sl: dict[str, dict], ids: list[str]) -> list[str]:
    """Questions whose lm-eval requests are not (starloop's prompt, " X") for X = A, B, C, D in order."""
    return [qid for qid in ids
            if lm[qid]["requests"] != [(sl[qid]["prompt"], f" {L}") for L in LETTERS]]


def compare(lm: dict[str, dict], sl: dict[str, dict], ids: list[str]) -> dict:
    missing = [i for i in ids if i not in lm or i not in sl]
    if missing:
        sys.exit(f"{len(missing)} questions missing from a side, e.g. {missing[:3]}")
    bad = prompt_mismatches(lm, sl, ids)
    if bad:
        sys.exit(f"{len(bad)} of {len(ids)} questions were scored on different strings by the two sides, "
                 f"e.g. {bad[0]}: lm-eval {lm[bad[0]]['requests'][0]!r}, starloop {sl[bad[0]]['prompt']!r}")
    agree, lm_correct, sl_correct, max_diff, sum_diff, disagreements, ties = 0, 0, 0, 0.0, 0.0, 0, []
    rows = []
    for qid in ids:
        a, b = lm[qid], sl[qid]
        lm_pick, sl_pick = argmax_first(a["ll"]), LETTERS.index(b["letter"])
        gold = a["answer"]
        assert LETTERS[gold] == b["gold"], qid
        lm_correct += lm_pick == gold
        sl_correct += sl_pick == gold
        assert (lm_pick == gold) == bool(a["acc"]), qid  # our argmax is the harness's
        diff = max(abs(x - y) for x, y in zip(a["ll"], b["logp"]))
        max_diff, sum_diff = max(max_diff, diff), sum_diff + diff
        if len(set(a["ll"])) < 4 or len(set(b["logp"])) < 4:
            ties.append(qid)
        if lm_pick == sl_pick:
            agree += 1
            continue
        disagreements += 1
        rows.append({
            "id": qid, "gold": LETTERS[gold], "lm_eval": LETTERS[lm_pick], "starloop": LETTERS[sl_pick],
            # each side's margin for its own pick over the other side's pick (>= 0 by construction)
            "lm_eval_gap": a["ll"][lm_pick] - a["ll"][sl_pick],
            "starloop_gap": b["logp"][sl_pick] - b["logp"][lm_pick],
            "max_abs_logp_diff": diff,
        })
    n = len(ids)
    return {"n": n, "same_prompts": True, "lm_eval_acc": lm_correct / n, "starloop_acc": sl_correct / n,
            "agreement": agree / n, "n_disagreements": disagreements, "disagreements": rows,
            "max_abs_logp_diff": max_diff, "mean_max_abs_logp_diff": sum_diff / n,
            "n_questions_with_tied_letters": len(ties)}


def precision_drift(logps: dict, ids: list[str]) -> dict:
    """Each side's distance from starloop's float32 log-probabilities, for every other dtype.

    Shows whether a disagreement in low precision is one side's mistake or both sides' rounding noise.
    """
    if "float32" not in logps:
        return {}
    ref = logps["float32"][1]
    out = {}
    for dtype, sides in logps.items():
        for side, rows in zip(("lm-eval", "starloop"), sides):
            diffs = [max(abs(a - b) for a, b in zip(rows[i], ref[i])) for i in ids]
            same = sum(argmax_first(rows[i]) == argmax_first(ref[i]) for i in ids)
            out[f"{side} {dtype}"] = {"pick_agreement": same / len(ids), "max_abs_logp_diff": max(diffs),
                                      "mean_max_abs_logp_diff": sum(diffs) / len(ids)}
    return out


def report(results: dict, meta: dict, drift: dict) -> str:
    lines = ["# starloop letter-logit vs lm-eval `mmlu` (0-shot), MMLU validation", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}", f"- model: {meta['model']}",
             f"- questions: {meta['n']}",
             "- scored strings: the same on both sides for every question (lm-eval's context is starloop's prompt; "
             + 'continuations " A" to " D")', ""]
    lines += [("| dtype | lm-eval acc | starloop acc | agreement | disagreements | max abs dlogp | "
               "lm-eval group acc | lm-eval wall s | starloop wall s |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for dtype, r in results.items():
        lines.append(f"| {dtype} | {r['lm_eval_acc']:.4f} | {r['starloop_acc']:.4f} | {100 * r['agreement']:.2f}% "
                     f"| {r['n_disagreements']} | {r['max_abs_logp_diff']:.3g} | {r['lm_eval_group_acc']:.4f} "
                     f"| {r['lm_eval_wall_s']:.0f} | {r['starloop_wall_s']:.0f} |")
    if drift:
        lines += ["", "## Each side against starloop float32", "",
                  "| run | same letter as float32 | max abs dlogp | mean (over questions) of max abs dlogp |",
                  "|---|---|---|---|"]
        for name, d in drift.items():
            lines.append(f"| {name} | {100 * d['pick_agreement']:.2f}% | {d['max_abs_logp_diff']:.3g} "
                         f"| {d['mean_max_abs_logp_diff']:.3g} |")
    for dtype, r in results.items():
        lines += ["", f"## Disagreements, {dtype}", ""]
        if not r["disagreements"]:
            lines.append("none")
            continue
        lines += ["| question | gold | lm-eval | starloop | lm-eval gap | starloop gap | max abs dlogp |",
                  "|---|---|---|---|---|---|---|"]
        for d in r["disagreements"]:
            lines.append(f"| {d['id']} | {d['gold']} | {d['lm_eval']} | {d['starloop']} | {d['lm_eval_gap']:.4g} "
                         f"| {d['starloop_gap']:.4g} | {d['max_abs_logp_diff']:.4g} |")
    lines += ["", "Commands:", ""] + [f"    {c}" for c in meta["commands"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/lm_eval_agreement", help="output folder")
    p.add_argument("--model", default="smollm2-135m",
                   help="starloop preset, model folder, .gguf file or hub id (default: the embedded model)")
    p.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated torch dtypes")
    p.add_argument("--limit", type=int, default=None, help="first N validation questions (quick check)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of both runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reuse-starloop", action="append", default=[], metavar="DTYPE=DIR",
                   help="use an earlier `starloop eval eval.mode=logit` folder for DTYPE instead of running it")
    p.add_argument("--reuse-lm-eval", action="append", default=[], metavar="DTYPE=DIR",
                   help="use an earlier lm-eval output folder (from this script) for DTYPE")
    args = p.parse_args(argv)

    from starloop.config import DataConfig
    from starloop.data import load_questions
    model_dir = model_folder(args.model)  # a bad --model stops before anything is written
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    questions = load_questions(DataConfig(limit=args.limit), "val")
    ids = [q.id for q in questions]
    tasks = write_task(questions, out)
    reuse_sl = dict(x.split("=", 1) for x in args.reuse_starloop)
    reuse_lm = dict(x.split("=", 1) for x in args.reuse_lm_eval)
    results, commands, logps = {}, [], {}
    for dtype in args.dtypes.split(","):
        lm_out = Path(reuse_lm[dtype]) if dtype in reuse_lm else out / f"lm_eval_{dtype}"
        if dtype not in reuse_lm:
            run_lm_eval(model_dir, dtype, tasks, lm_out, args.batch_size, args.device)
        commands.append(f"lm-eval run --model hf --model_args pretrained={model_dir},dtype={dtype} "
                        f"--tasks {TASK_GROUP} --include_path {tasks} --num_fewshot 0 --batch_size "
                        f"{args.batch_size} --device {args.device} --log_samples --output_path {lm_out}")
        sl_out = Path(reuse_sl[dtype]) if dtype in reuse_sl else out / f"starloop_{dtype}"
        if dtype not in reuse_sl:
            cmd = starloop_command(args.model, dtype, sl_out, args.limit, args.batch_size)
            run_starloop(cmd, sl_out)
            commands.append(" ".join(cmd))
        else:
            cfg = check_starloop_run(sl_out, dtype, args.model)
            commands.append(f"starloop eval eval.mode=logit model={cfg['model']['name']} "
                            f"model.dtype={cfg['model']['dtype']} eval.batch_size="
                            f"{cfg['eval']['batch_size']} out={sl_out} progress=false (an earlier run, reused)")
        lm_rows, lm_results = read_lm_eval(lm_out)
        sl_rows = read_starloop(sl_out)
        logps[dtype] = ({k: v["ll"] for k, v in lm_rows.items()}, {k: v["logp"] for k, v in sl_rows.items()})
        r = compare(lm_rows, sl_rows, ids)
        r["lm_eval_group_acc"] = lm_results["results"][TASK_GROUP]["acc,none"]
        r["lm_eval_wall_s"], r["starloop_wall_s"] = wall_times(lm_out, sl_out)
        results[dtype] = r
        print(f"{dtype}: lm-eval {r['lm_eval_acc']:.4f}  starloop {r['starloop_acc']:.4f}  "
              f"agreement {100 * r['agreement']:.2f}% ({r['n_disagreements']} disagreements)", flush=True)
    drift = precision_drift(logps, ids)
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
            "model": model_dir, "n": len(ids), "commands": commands}
    (out / "comparison.json").write_text(json.dumps({"meta": meta, "results": results, "vs_float32": drift},
                                                    indent=1), encoding="utf-8")
    text = report(results, meta, drift)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
