"""The STaR outer loop: for each iteration run the stages, skipping those whose output exists.

    <out>/config.yaml                      resolved config (a resumed run must match it)
    <out>/metrics.jsonl                    one line per (iteration, language) validation, rebuilt from
                                           the val folders so that it can never hold a half-written line
    <out>/iter_0/val/                      validation of the base model
    <out>/iter_k/sample/part_*.csv, DONE   training rationales of the model after iteration k-1
    <out>/iter_k/generations.csv           every sample of iteration k, scored (+ reward columns)
    <out>/iter_k/train_data.jsonl          the SFT set / preference pairs / rewarded samples
    <out>/iter_k/train/adapter/, log.jsonl, DONE
    <out>/iter_k/val/generations.csv, metrics.json, DONE

Each stage reads the previous stage's files; all writes are atomic; a killed run started again with
the same `out=` continues at the first missing output and reaches the same result.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from starloop import distributed, evaluate, io, strategies
from starloop.config import Config, TrainerConfig, to_dict
from starloop.data import load_questions
from starloop.errors import StarloopError
from starloop.fast_sampling import make_sampler
from starloop.loggers import open_logger
from starloop.metrics import clustered_interval, mcnemar, summarize
from starloop.records import Question, Sample, read_samples, write_samples
from starloop.runfiles import iteration_folders, read_json_file
from starloop.runstate import RunLock
from starloop.sampler_support import CPU_BATCH_SIZE
from starloop.sampling import sample_seed

log = logging.getLogger("starloop.train")

PART_QUESTIONS = 32  # questions per saved sampling part: the most work a kill can lose


class Policy:
    """The base model plus, at most, one LoRA adapter: the model of a given iteration."""

    def __init__(self, cfg: Config):
        from starloop.models import load_model

        self.cfg = cfg
        self.base, self.tok = load_model(cfg.model, for_training=True)
        self.model = self.base
        self.adapter: str | None = None

    def use(self, adapter: Path | None, trainable: bool = False, fresh_seed: int | None = None):
        """Switch to `adapter` (None = base; fresh_seed = a new seeded LoRA for training)."""
        from starloop.models import attach_lora, load_adapter

        key = f"fresh:{fresh_seed}" if fresh_seed is not None else (str(adapter) if adapter else None)
        if key == self.adapter and not trainable:
            return self.model
        if self.model is not self.base:
            self.model = self.model.unload()  # remove LoRA layers, keep base weights untouched
            self.base = self.model
        if fresh_seed is not None:
            self.model = attach_lora(self.base, self.cfg.trainer, seed=fresh_seed)
        elif adapter is not None:
            self.model = load_adapter(self.base, adapter, trainable=trainable)
        self.base.requires_grad_(False)
        if trainable:
            for n, p in self.model.named_parameters():
                p.requires_grad_("lora_" in n)
        self.adapter = key
        self.model.eval()
        return self.model


def part_questions(batch_size: int, k: int, processes: int = 1) -> int:
    """Questions per saved sampling part: enough to fill every process's generation batch (k samples a
    question), and at least PART_QUESTIONS, so that a kill loses at most one part of work."""
    return max(PART_QUESTIONS, -(-batch_size * processes // max(k, 1)))


def sample_stage(policy: Policy, cfg: Config, questions: list[Question], folder: Path, *, k: int,
                 seed_parts: tuple, temperature: float, top_p: float, max_new_tokens: int,
                 batch_size: int, hints: dict[str, str] | None = None, desc: str) -> list[Sample]:
    """Sample in parts (`part_questions`), each saved atomically; on resume, every question found in a
    saved part is reused, whatever part size wrote it (samples are seeded per question and sample index,
    so they do not depend on how questions were grouped). Once generations.csv and the DONE marker are
    written, the parts are deleted.

    With several processes each samples every W-th question of a part; the part file holds all of them
    in question order (see `distributed.map_sharded`)."""
    distributed.barrier()  # every process sees the same files before deciding what is left to do
    if io.is_done(folder):
        return read_samples(folder / "generations.csv")
    folder.mkdir(parents=True, exist_ok=True)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise StarloopError(f"{folder}: duplicate question ids in the questions to sample")
    saved: dict[str, list[Sample]] = {}

    def keep(samples: list[Sample]) -> None:
        for s in samples:
            saved.setdefault(s.question_id, []).append(s)

    parts = sorted(folder.glob("part_*.csv"))
    for part in parts:
        keep(read_samples(part))
    todo = [q for q in questions if q.id not in saved]
    sampler = make_sampler(cfg.model, policy.model, policy.tok, batch_size) if todo else None
    few_shot = evaluate.few_shot_examples(cfg) if todo else {}
    rows = sampler.plan_batch(max_new_tokens, k) if hasattr(sampler, "plan_batch") else batch_size
    size = part_questions(rows or CPU_BATCH_SIZE, k, distributed.world()[1])
    n_parts = (len(todo) + size - 1) // size
    first = len(parts)
    for p in range(n_parts):
        qs = todo[p * size : (p + 1) * size]

        def run(share: list[Question], p=p) -> list[Sample]:
            h = [hints[q.id] for q in share] if hints is not None else None
            return evaluate.sample_questions(
                sampler, policy.tok, share, cfg.prompt, k=k, seed_parts=seed_parts,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, hints=h,
                few_shot=few_shot, progress=cfg.progress and distributed.is_main(),
                desc=f"{desc} [{p + 1}/{n_parts}]", repetition=cfg.scoring.repetition)

        samples = distributed.map_sharded(run, qs, per_item=k)
        write_samples(folder / f"part_{first + p:05d}.csv", samples)
        keep(samples)
    out = [s for q in questions for s in sorted(saved[q.id], key=lambda s: s.sample_index)]
    write_samples(folder / "generations.csv", out)
    io.mark_done(folder, {"n": len(out)})
    distributed.barrier()  # no process still reads a part
    if distributed.is_main():  # the parts are in generations.csv now: keep one copy on disk
        for part in folder.glob("part_*.csv"):
            part.unlink()
    return out


def validate_stage(policy: Policy, cfg: Config, val_qs: list[Question], folder: Path, iteration: int,
                   extra: dict) -> dict:
    distributed.barrier()
    if io.is_done(folder):
        return json.loads((folder / "metrics.json").read_text())
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
        samples = sample_stage(policy, cfg, val_qs, folder / "sample", k=1, seed_parts=(cfg.seed, "val", iteration),
                               temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                               max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                               desc=f"validate iter {iteration}")
        if cfg.scoring.cross_check:  # the model's forced choice after each output (metrics.cross_check)
            by_id = {q.id: q for q in val_qs}
            samples = distributed.map_sharded(
                lambda share: evaluate.add_forced_choice(policy.model, policy.tok, share, by_id, cfg.prompt,
                                                         cfg.eval.batch_size or CPU_BATCH_SIZE), samples)
    lines = []
    langs = sorted({s.language for s in samples})
    earlier = {name: _val_correct(folder.parent.parent / f"iter_{k}" / "val")
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
    distributed.barrier()  # the main process has written every metrics.json this reads
    lines = []
    for _, it in iteration_folders(out):
        m = it / "val" / "metrics.json"
        if io.is_done(it / "val") and m.exists():
            lines += read_json_file(m, list)
    io.write_text(out / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    return lines


def training_data(cfg: Config, samples: list[Sample]):
    return strategies.get(cfg.trainer.strategy).build(samples, cfg.trainer)


def units_for(policy: Policy, cfg: Config, data) -> tuple[list, int]:
    """(tokenized units that fit trainer.max_seq_len, how many samples were dropped as too long)."""
    from starloop import train

    t = cfg.trainer
    units = strategies.get(t.strategy).units(policy.tok, data, t)
    kept, dropped = train.drop_too_long(units, t.max_seq_len)
    if dropped:
        log.warning("%d of %d training samples are longer than trainer.max_seq_len=%d tokens (prompt + "
                    "completion) and were dropped, not cut; raise trainer.max_seq_len to keep them",
                    dropped, len(units), t.max_seq_len)
    return kept, dropped


def train_stage(policy: Policy, cfg: Config, k: int, data, folder: Path, prev_adapter: Path | None,
                on_step=None, val_data=None) -> dict:
    """Fit LoRA for iteration k and save the adapter; returns a summary (final loss, counts).

    on_step: called with each logged step record (the run's loggers). val_data: training data built
    from validation generations; with trainer.val_every_n_steps its objective is logged as val_loss."""
    from starloop import train

    distributed.barrier()
    if io.is_done(folder):
        return json.loads((folder / "DONE").read_text())
    t = cfg.trainer
    strategy = strategies.get(t.strategy)
    seed = sample_seed(cfg.seed, "lora", k)
    if t.restart_from_base or prev_adapter is None:
        model = policy.use(None, trainable=True, fresh_seed=seed)
    else:
        model = policy.use(prev_adapter, trainable=True)
    units, too_long = units_for(policy, cfg, data)
    val_units = units_for(policy, cfg, val_data)[0] if t.val_every_n_steps and val_data else None
    model = strategy.prepare(strategies.TrainContext(policy, model, units, val_units, prev_adapter, seed,
                                                     cfg.progress))
    validate = None
    if val_units:
        validate = lambda step: {"val_loss": train.objective_loss(model, policy.tok, val_units, t)}
    records: list[dict] = []
    if units:
        records += strategy.pre_train(model, policy.tok, units, t, seed, cfg.progress)
        records += train.train(model, policy.tok, units, t, seed=seed, iteration=k, progress=cfg.progress,
                               on_log=on_step or (lambda r: log.debug("step %s", r)), validate=validate)
    else:
        log.warning("iteration %d: no training data (no usable samples); the adapter stays untrained", k)
    with io.atomic_path(folder / "adapter") as tmp:
        model.save_pretrained(tmp)
    io.write_text(folder / "log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = {"n_units": len(units), "steps": len(records), "dropped_too_long": too_long,
               "loss": records[-1]["loss"] if records else None}
    io.mark_done(folder, summary)
    distributed.barrier()  # the adapter is on disk before any process reloads it
    policy.adapter = None  # the next `policy.use(path)` reloads the saved adapter, as a resumed run would
    policy.model.eval()
    return summary


def reward_columns_needed(cfg: Config) -> set[str]:
    """Answer-likelihood reward columns the training data needs (the model scores the samples for them)."""
    t = cfg.trainer
    return strategies.get(t.strategy).reward_columns(t) | ({"gain"} if t.require_gain else set())


def add_reward_columns(policy: Policy, cfg: Config, samples: list[Sample], by_id: dict[str, Question]) -> None:
    from starloop.scoring import add_rewards, read_soft_labels

    t = cfg.trainer
    soft = read_soft_labels(t.soft_labels) if t.label_dist == "file" else None
    add_rewards(policy.model, policy.tok, samples, by_id, batch_size=t.gen_batch_size or CPU_BATCH_SIZE,
                label_dist=t.label_dist,
                label_smoothing=t.label_smoothing, soft_labels=soft)


def preloaded_samples(policy: Policy, cfg: Config, by_id: dict[str, Question]) -> list[Sample]:
    """trainer.preload_data_for_training, with reward columns added by the current model if missing."""
    samples = read_preload_for(cfg, "train", list(by_id.values()))
    # read_preload_for keeps only samples of this run's questions, so every one can be scored here.
    if any(c not in s.extra for s in samples for c in reward_columns_needed(cfg)):
        add_reward_columns(policy, cfg, samples, by_id)
    return samples


def _val_training_data(cfg: Config, out: Path):
    """Training data built from the base model's validation generations (or the preloaded val file):
    the fixed set whose objective `trainer.val_every_n_steps` tracks during training."""
    if not cfg.trainer.val_every_n_steps:
        return None
    src = cfg.trainer.preload_data_for_val or out / "iter_0" / "val" / "generations.csv"
    if not Path(src).exists():
        log.warning("trainer.val_every_n_steps: no validation generations at %s; val_loss not logged", src)
        return None
    try:
        data = training_data(cfg, read_samples(src))
    except StarloopError as e:
        log.warning("trainer.val_every_n_steps: %s; val_loss not logged", e)
        return None
    if not data:
        log.warning("trainer.val_every_n_steps: the validation generations give no %s data; val_loss not "
                    "logged", cfg.trainer.strategy)
    return data


def run_questions(cfg: Config, say: bool = False) -> dict[str, list[Question]]:
    """{"train": ..., "val": ...}: the questions a `starloop train` run samples and validates on
    (`say`: log how many of the split the limits keep)."""
    t = cfg.trainer
    out = {}
    for which, split, limit, key in (("train", cfg.data.train_split, t.train_limit, "trainer.train_limit"),
                                     ("val", cfg.data.val_split, t.val_limit, "trainer.val_limit")):
        qs = load_questions(cfg.data, split)
        if say and limit is not None and len(qs) > limit:
            log.info("%s on %d of the %d %s questions (%s=%d, sized for a laptop CPU; %s=null for all)",
                     "training" if which == "train" else "validating", limit, len(qs), split, key, limit, key)
        out[which] = qs[:limit]
    if say and t.max_new_tokens == TrainerConfig.max_new_tokens:  # the laptop default
        log.info("sampling rationales of at most %d tokens (trainer.max_new_tokens=%d, sized for a laptop CPU; "
                 "raise it on a GPU, e.g. trainer.max_new_tokens=256)", t.max_new_tokens, t.max_new_tokens)
    return out


def read_preload_for(cfg: Config, which: str, questions: list[Question]) -> list[Sample]:
    """trainer.preload_data_for_<which>, checked against the run's questions of that split."""
    from starloop.preload import read_preload

    key = "preload_data_for_training" if which == "train" else "preload_data_for_val"
    split = cfg.data.train_split if which == "train" else cfg.data.val_split
    whole = load_questions(replace(cfg.data, limit=None), split)
    return read_preload(getattr(cfg.trainer, key), questions, f"trainer.{key}", whole)


def check_preloads(cfg: Config, qs: dict[str, list[Question]]) -> None:
    for which in ("train", "val"):
        if getattr(cfg.trainer, "preload_data_for_training" if which == "train" else "preload_data_for_val"):
            read_preload_for(cfg, which, qs[which])


def run_train(cfg: Config) -> list[dict]:
    """`starloop train`: iterations 0..cfg.trainer.iterations; returns the metrics lines.

    The run folder is claimed (config.yaml, run.json) once the questions, preload files and model are
    checked and loaded: a run that fails before then leaves the folder as it was."""
    from starloop.models import check_lora_targets
    from starloop.runstate import check_run_folder, claim

    t = cfg.trainer
    out = Path(cfg.out)
    qs = run_questions(cfg, say=True)
    train_qs, val_qs = qs["train"], qs["val"]
    check_preloads(cfg, qs)  # fail on a bad file before any work
    with RunLock(out):
        check_run_folder(out, t.strategy)
        t0 = time.time()
        policy = Policy(cfg)
        check_lora_targets(policy.base, t.lora_target_modules)
        claim(out, "train", to_dict(cfg), qs)
        lines = _iterations(cfg, policy, out, train_qs, val_qs)
        log.info("done in %.1f s; outputs in %s (metrics.jsonl, iter_*/)", time.time() - t0, out.resolve())
    # After the loggers have closed (W&B prints on teardown): the summary is the last line of the output.
    last = [ln for ln in lines if ln["language"] in ("all", lines[-1]["language"])][-1] if lines else {}
    print(json.dumps({k: last.get(k) for k in ("iteration", "accuracy", "ci_low", "ci_high", "parse_rate", "n")}
                     | {"out": str(out)}), flush=True)
    return lines


def _iterations(cfg: Config, policy: Policy, out: Path, train_qs: list[Question], val_qs: list[Question]):
    t = cfg.trainer
    with open_logger(cfg, out) as run_log:
        by_id = {q.id: q for q in train_qs}
        if not t.skip_first_validation:
            run_log.validation(0, validate_stage(policy, cfg, val_qs, out / "iter_0" / "val", 0,
                                                 {"kept": 0, "kept_fraction": 0.0}), out / "iter_0" / "val")
            rebuild_metrics(out)
        prev: Path | None = None
        for k in range(1, t.iterations + 1):
            it = out / f"iter_{k}"
            policy.use(prev)
            if k == 1 and t.preload_data_for_training:
                samples = preloaded_samples(policy, cfg, by_id)
            else:
                samples = score_iteration(policy, cfg, train_qs, by_id, it, k)
            data = _load_or_build(cfg, samples, it / "train_data.jsonl")
            solved = {s.question_id for s in samples if s.correct}
            summary = train_stage(policy, cfg, k, data, it / "train", prev,
                                  on_step=lambda r, k=k: run_log.train_step(k, r),
                                  val_data=_val_training_data(cfg, out))
            prev = it / "train" / "adapter"
            policy.use(prev)
            extra = {"kept": len(data), "kept_fraction": len(solved) / max(len(train_qs), 1),
                     "train_loss": summary.get("loss"), "train_accuracy": summarize(
                         [s for s in samples if not s.hinted]).get("accuracy"),
                     "dropped_too_long": summary.get("dropped_too_long", 0),
                     "dropped_truncated": 0 if t.keep_truncated or not strategies.get(t.strategy).imitates
                     else sum(s.correct and s.truncated for s in samples)}
            run_log.validation(k, validate_stage(policy, cfg, val_qs, it / "val", k, extra), it / "val")
            rebuild_metrics(out)
        return rebuild_metrics(out)


def score_iteration(policy: Policy, cfg: Config, train_qs: list[Question], by_id: dict, it: Path, k: int):
    """Sample (and rationalize) with the current policy, add reward columns; -> iter_k/generations.csv."""
    gens = it / "generations.csv"
    distributed.barrier()
    if gens.exists():
        return read_samples(gens)
    t = cfg.trainer
    samples = sample_stage(policy, cfg, train_qs, it / "sample", k=t.samples_per_question,
                           seed_parts=(cfg.seed, "train", k), temperature=t.temperature, top_p=t.top_p,
                           max_new_tokens=t.max_new_tokens, batch_size=t.gen_batch_size,
                           desc=f"sample iter {k}")
    if t.rationalize:
        solved = {s.question_id for s in samples if s.correct}
        failed = [q for q in train_qs if q.id not in solved]
        if failed:
            samples += sample_stage(policy, cfg, failed, it / "rationalize", k=1,
                                    seed_parts=(cfg.seed, "rationalize", k), temperature=t.temperature,
                                    top_p=t.top_p, max_new_tokens=t.max_new_tokens, batch_size=t.gen_batch_size,
                                    hints={q.id: q.gold_letter for q in failed}, desc=f"rationalize iter {k}")
    if reward_columns_needed(cfg):
        add_reward_columns(policy, cfg, samples, by_id)
    write_samples(gens, samples)
    return samples


def _load_or_build(cfg: Config, samples: list[Sample], path: Path):
    if path.exists():
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        cls = strategies.get(cfg.trainer.strategy).record
        return [cls(**r) for r in rows]
    data = training_data(cfg, samples)
    io.write_text(path, "".join(json.dumps(asdict(x), ensure_ascii=False) + "\n" for x in data))
    if not data:
        log.warning("iteration data: no %s training examples from these samples", cfg.trainer.strategy)
    return data


__all__ = ["StarloopError", "run_train"]
