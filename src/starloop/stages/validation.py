"""The validate stage: accuracy of iteration k's model on the validation questions, with intervals and
paired tests against the previous iteration and the base model; metrics.jsonl is rebuilt from the
validation folders, so it can never hold a half-written line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from starloop import distributed, evaluate, io, strategies
from starloop.metrics import clustered_interval, mcnemar, summarize
from starloop.records import Question, read_samples, write_samples
from starloop.runfiles import iteration_folders, read_json_file
from starloop.sampler_support import CPU_BATCH_SIZE
from starloop.stages.context import Run
from starloop.stages.sampling import read_preload_for, sample_to_folder
from starloop.stages.training import read_training_data

log = logging.getLogger("starloop.train")


def validate(run: Run, k: int) -> list[dict]:
    """Model of iteration k (k = 0: the base model) -> iter_k/val/generations.csv, metrics.json, DONE;
    the lines go to the run's loggers and <out>/metrics.jsonl. Returns the metrics lines."""
    folder = run.iter(k) / "val"
    distributed.barrier()
    if io.is_done(folder):
        lines = json.loads((folder / "metrics.json").read_text())
    else:
        run.policy.use(run.adapter(k))
        with run.policy.merged():
            lines = _validate(run, k, folder, _training_summary(run, k))
    if run.logger is not None:
        run.logger.validation(k, lines, folder)
    rebuild_metrics(run.out)
    return lines


def _training_summary(run: Run, k: int) -> dict:
    """The iteration's training figures that go on each metrics line (from the files of its stages)."""
    if k == 0:
        return {"kept": 0, "kept_fraction": 0.0}
    t, it = run.cfg.trainer, run.iter(k)
    samples = read_samples(it / "generations.csv")
    summary = json.loads((it / "train" / "DONE").read_text())
    solved = {s.question_id for s in samples if s.correct}
    n = max(len(run.questions["train"]), 1)
    data = read_training_data(run.cfg, it / "train_data.jsonl")
    wrong = strategies.get(t.strategy).positive_weight_on_wrong(data, t)
    return {"kept": len(data),
            "kept_fraction": len(solved) / n,  # with a hint counts (rationalization)
            "solved_fraction": len({s.question_id for s in samples if s.correct and not s.hinted}) / n,
            "rationalized": sum(s.correct and s.hinted for s in samples),  # hinted samples that reached the gold
            **({} if wrong is None else {"positive_weight_on_wrong": wrong}),
            "train_loss": summary.get("loss"),
            "train_accuracy": summarize([s for s in samples if not s.hinted]).get("accuracy"),
            "dropped_too_long": summary.get("dropped_too_long", 0),
            "dropped_truncated": 0 if t.keep_truncated or not strategies.get(t.strategy).imitates
            else sum(s.correct and s.truncated for s in samples)}


def _validate(run: Run, iteration: int, folder: Path, extra: dict) -> list[dict]:
    cfg, policy, val_qs = run.cfg, run.policy, run.questions["val"]
    t0 = time.time()
    if iteration == 0 and cfg.trainer.preload_data_for_val:
        samples = read_preload_for(cfg, "val", val_qs)
    elif cfg.eval.mode == "logit":
        samples = distributed.map_sharded(
            lambda share: evaluate.letter_logit_samples(policy.model, policy.tok, share,
                                                        few_shot=evaluate.few_shot_examples(cfg),
                                                        batch_size=cfg.eval.batch_size or CPU_BATCH_SIZE,
                                                        progress=cfg.progress),
            val_qs)
    else:
        samples = sample_to_folder(policy, cfg, val_qs, folder / "sample", k=1,
                                   seed_parts=(cfg.seed, "val", iteration), temperature=cfg.eval.temperature,
                                   top_p=cfg.eval.top_p, max_new_tokens=cfg.eval.max_new_tokens,
                                   batch_size=cfg.eval.batch_size, desc=f"validate iter {iteration}")
        if cfg.scoring.cross_check:  # the model's forced choice after each output (metrics.cross_check)
            by_id: dict[str, Question] = {q.id: q for q in val_qs}
            samples = distributed.map_sharded(
                lambda share: evaluate.add_forced_choice(policy.model, policy.tok, share, by_id, cfg.prompt,
                                                         cfg.eval.batch_size or CPU_BATCH_SIZE), samples)
    lines = []
    langs = sorted({s.language for s in samples})
    earlier = {name: _val_correct(run.iter(k) / "val")
               for name, k in (("prev", iteration - 1), ("base", 0)) if iteration >= 1 and k >= 0}
    for lang in langs + (["all"] if len(langs) > 1 else []):
        sub = [s for s in samples if lang == "all" or s.language == lang]
        line = {"iteration": iteration, "split": cfg.data.val_split, "language": lang, **summarize(sub)}
        if lang == "all":  # the same questions in every language: a language-clustered interval too
            ci = clustered_interval([s.correct for s in sub], [s.language for s in sub])
            line["ci_low_clustered"], line["ci_high_clustered"] = ci if ci else (None, None)
        now = {s.question_id: s.correct for s in sub}
        for name, before in earlier.items():  # paired test against the same questions before
            if before is not None and (name == "prev" or iteration > 1):
                m = mcnemar(before, now)
                line.update({f"mcnemar_{name}_b": m["b"], f"mcnemar_{name}_c": m["c"], f"mcnemar_{name}_p": m["p"]})
        lines.append({**line, **extra, "wall_s": round(time.time() - t0, 2)})
    write_samples(folder / "generations.csv", samples)
    io.write_json(folder / "metrics.json", lines)
    io.mark_done(folder)
    for ln in lines:
        log.info("iteration %d %s: accuracy %.3f [%.3f, %.3f] parse %.3f (n=%d)", iteration, ln["language"],
                 ln["accuracy"], ln["ci_low"], ln["ci_high"], ln["parse_rate"], ln["n"])
    return lines


def _val_correct(folder: Path) -> dict[str, bool] | None:
    """question id -> correct of a finished validation folder (None if it is not there)."""
    if not io.is_done(folder) or not (folder / "generations.csv").exists():
        return None
    return {s.question_id: s.correct for s in read_samples(folder / "generations.csv") if s.sample_index == 0}


def rebuild_metrics(out: Path) -> list[dict]:
    """<out>/metrics.jsonl from the metrics.json of every finished validation folder."""
    distributed.barrier()  # the main process has written every metrics.json this reads
    lines = []
    for _, it in iteration_folders(out):
        m = it / "val" / "metrics.json"
        if io.is_done(it / "val") and m.exists():
            lines += read_json_file(m, list)
    io.write_text(out / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    return lines
