"""The sample and score stages: rationales of the current model (in parts a kill cannot lose), then the
reward columns the training strategy needs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from starloop import distributed, evaluate, io, strategies
from starloop.config import Config, TrainerConfig
from starloop.data import load_questions
from starloop.errors import StarloopError
from starloop.fast_sampling import make_sampler
from starloop.policy import Policy
from starloop.records import Question, Sample, read_samples, write_samples
from starloop.sampler_support import CPU_BATCH_SIZE
from starloop.stages.context import Run

log = logging.getLogger("starloop.train")

PART_QUESTIONS = 32  # questions per saved sampling part: the most work a kill can lose


def part_questions(batch_size: int, k: int, processes: int = 1) -> int:
    """Questions per saved sampling part: enough to fill every process's generation batch (k samples a
    question), and at least PART_QUESTIONS, so that a kill loses at most one part of work."""
    return max(PART_QUESTIONS, -(-batch_size * processes // max(k, 1)))


def sample_to_folder(policy: Policy, cfg: Config, questions: list[Question], folder: Path, *, k: int,
                     seed_parts: tuple, temperature: float, top_p: float, max_new_tokens: int,
                     batch_size: int, hints: dict[str, str] | None = None, desc: str) -> list[Sample]:
    """k samples of each question -> folder/generations.csv + DONE.

    Sampled in parts (`part_questions`), each saved atomically as part_*.csv; on resume, every question
    found in a saved part is reused, whatever part size wrote it (samples are seeded per question and
    sample index, so they do not depend on how questions were grouped). Once generations.csv and the DONE
    marker are written, the parts are deleted.

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


def _unsolved(run: Run, samples: list[Sample]) -> list[Question]:
    solved = {s.question_id for s in samples if s.correct}
    return [q for q in run.questions["train"] if q.id not in solved]


def _preloaded(run: Run, k: int) -> bool:
    """Whether trainer.preload_data_for_training stands for iteration k's samples (iteration 1 only)."""
    return k == 1 and bool(run.cfg.trainer.preload_data_for_training)


def _drawn(run: Run, k: int) -> list[Sample]:
    """Iteration k's training samples: the preloaded file, or iter_k/sample/'s. read_preload_for keeps only
    samples of this run's questions, so every one can be scored."""
    if _preloaded(run, k):
        return read_preload_for(run.cfg, "train", run.questions["train"])
    return read_samples(run.iter(k) / "sample" / "generations.csv")


def sample(run: Run, k: int) -> None:
    """Training rationales of iteration k's model (the adapter of iteration k-1) -> iter_k/sample/ (unless the
    preloaded file stands for them); with trainer.rationalize, one hinted sample of each question no sample
    solved -> iter_k/rationalize/."""
    cfg, t, it = run.cfg, run.cfg.trainer, run.iter(k)
    distributed.barrier()
    if (it / "generations.csv").exists():
        return  # scored already
    policy = run.policy
    if _preloaded(run, k) or io.is_done(it / "sample"):
        samples = _drawn(run, k)
    else:
        policy.use(run.adapter(k - 1))
        with policy.merged():
            samples = sample_to_folder(policy, cfg, run.questions["train"], it / "sample", k=t.samples_per_question,
                                       seed_parts=(cfg.seed, "train", k), temperature=t.temperature, top_p=t.top_p,
                                       max_new_tokens=t.max_new_tokens, batch_size=t.gen_batch_size,
                                       desc=f"sample iter {k}")
    failed = _unsolved(run, samples) if t.rationalize else []
    if failed and not io.is_done(it / "rationalize"):
        policy.use(run.adapter(k - 1))
        with policy.merged():
            sample_to_folder(policy, cfg, failed, it / "rationalize", k=1, seed_parts=(cfg.seed, "rationalize", k),
                             temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_new_tokens,
                             batch_size=t.gen_batch_size, hints={q.id: q.gold_letter for q in failed},
                             desc=f"rationalize iter {k}")


def score(run: Run, k: int) -> None:
    """iter_k/sample/ (+ rationalize/), or the preloaded file in iteration 1, with the reward columns the
    strategy needs computed by iteration k's model -> iter_k/generations.csv."""
    cfg, t, it = run.cfg, run.cfg.trainer, run.iter(k)
    gens = it / "generations.csv"
    distributed.barrier()
    if gens.exists():
        return
    samples = _drawn(run, k)
    if t.rationalize and _unsolved(run, samples):
        samples += read_samples(it / "rationalize" / "generations.csv")
    columns = reward_columns_needed(cfg)  # a preloaded file may bring them already
    needed = any(c not in s.extra for s in samples for c in columns) if _preloaded(run, k) else bool(columns)
    if needed:
        run.policy.use(run.adapter(k - 1))
        with run.policy.merged():
            compute_reward_columns(run.policy, cfg, samples, run.by_id)
    write_samples(gens, samples)


def reward_columns_needed(cfg: Config) -> set[str]:
    """Answer-likelihood reward columns the training data needs (the model scores the samples for them)."""
    t = cfg.trainer
    return strategies.get(t.strategy).reward_columns(t) | ({"gain"} if t.require_gain else set())


def compute_reward_columns(policy: Policy, cfg: Config, samples: list[Sample],
                           by_id: dict[str, Question]) -> None:
    """The reward columns of `samples`, scored by `policy` as the trainer config asks (in place)."""
    from starloop.scoring import add_reward_columns, read_soft_labels

    t = cfg.trainer
    soft = read_soft_labels(t.soft_labels) if t.label_dist == "file" else None
    add_reward_columns(policy.model, policy.tok, samples, by_id, batch_size=t.gen_batch_size or CPU_BATCH_SIZE,
                       label_dist=t.label_dist, label_smoothing=t.label_smoothing, soft_labels=soft)


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
