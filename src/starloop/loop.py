"""The STaR outer loop: for each iteration run the stages in order (starloop.stages), each of which skips
itself when its output exists.

    <out>/config.yaml                      resolved config (a resumed run must match it)
    <out>/run.json                         the command and a fingerprint of its questions
    <out>/metrics.jsonl                    one line per (iteration, language) validation, rebuilt from
                                           the val folders so that it can never hold a half-written line
    <out>/iter_0/val/                      validation of the base model
    <out>/iter_k/sample/generations.csv, DONE   training rationales of the model after iteration k-1
                                           (part_*.csv while sampling; deleted once generations.csv is in)
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
from pathlib import Path

from starloop import interrupt, stages
from starloop.config import Config, to_dict
from starloop.errors import ConfigError, StarloopError
from starloop.loggers import open_logger
from starloop.policy import Policy
from starloop.runstate import RunLock
from starloop.stages.sampling import check_preloads, run_questions

log = logging.getLogger("starloop.train")


def run_train(cfg: Config) -> list[dict]:
    """`starloop train`: iterations 0..cfg.trainer.iterations; returns the metrics lines.

    The run folder is claimed (config.yaml, run.json) once the questions, preload files and model are
    checked and loaded: a run that fails before then leaves the folder as it was."""
    from starloop.models import check_lora_targets
    from starloop.runstate import check_run_folder, claim

    t = cfg.trainer
    out = Path(cfg.out)
    qs = run_questions(cfg, say=True)
    check_preloads(cfg, qs)  # fail on a bad file before any work
    with RunLock(out):
        check_run_folder(out, t.strategy)
        t0 = time.time()
        policy = Policy(cfg)
        check_lora_targets(policy.base, t.lora_target_modules)
        claim(out, "train", to_dict(cfg), qs)
        with open_logger(cfg, out) as run_log:
            lines = run_iterations(stages.Run(cfg, out, qs, policy, run_log))
        log.info("done in %.1f s; outputs in %s (metrics.jsonl, iter_*/)", time.time() - t0, out.resolve())
    # After the loggers have closed (W&B prints on teardown): the summary is the last line of the output.
    last = [ln for ln in lines if ln["language"] in ("all", lines[-1]["language"])][-1] if lines else {}
    print(json.dumps({k: last.get(k) for k in ("iteration", "accuracy", "ci_low", "ci_high", "parse_rate", "n")}
                     | {"out": str(out)}), flush=True)
    return lines


def run_iterations(run: stages.Run) -> list[dict]:
    """Validate the base model, then sample, score, build, train and validate each iteration."""
    if not run.cfg.trainer.skip_first_validation:
        stages.STAGES["validate"](run, 0)
    for k in range(1, run.cfg.trainer.iterations + 1):
        for stage in stages.STAGES:  # looked up as it runs: bench/iteration.py times them by wrapping
            interrupt.check()
            stages.STAGES[stage](run, k)
    return stages.rebuild_metrics(run.out)


def run_stage(cfg: Config, name: str, k: int) -> None:
    """`starloop stage NAME out=RUN iteration=K`: one stage of an existing run, from its files.

    `cfg` is the run's saved config (with overrides that do not change results); a missing input file
    is one error line naming it."""
    from starloop.runstate import check_claim

    out = Path(cfg.out)
    if name not in stages.STAGES:
        raise ConfigError("stage", f"unknown stage {name!r} (expected one of {', '.join(stages.STAGES)})")
    first = 0 if name == "validate" else 1
    if not first <= k <= cfg.trainer.iterations:
        raise ConfigError("iteration", f"{k} is outside {first}..{cfg.trainer.iterations} (trainer.iterations "
                                       "of the run) for stage " + name)
    qs = run_questions(cfg)
    with RunLock(out):
        check_claim(out, "train", to_dict(cfg), qs)  # the run's config and questions, unchanged
        run = stages.Run(cfg, out, qs)
        stages.check_inputs(run, name, k)
        if name == "score" and k == 1:
            check_preloads(cfg, qs)
        with open_logger(cfg, out) as run.logger:
            stages.STAGES[name](run, k)
    log.info("stage %s of iteration %d done; outputs in %s", name, k, run.iter(k))


__all__ = ["StarloopError", "run_stage", "run_train"]
