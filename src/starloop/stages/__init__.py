"""The stages of a STaR iteration, each a function that reads the files of the stage before it and writes
its own under `<out>/iter_<k>/`, so that each can run alone (`starloop stage NAME out=RUN iteration=K`):

    stage      reads                                   writes (each file written atomically)
    sample     iter_{k-1}/train/adapter/               iter_k/sample/generations.csv, DONE
                                                       (+ iter_k/rationalize/... with trainer.rationalize)
    score      iter_k/sample/ (or the preloaded file)  iter_k/generations.csv: the samples + reward columns
    build      iter_k/generations.csv                  iter_k/train_data.jsonl (SFT set / pairs / rewarded)
    train      iter_k/train_data.jsonl, the previous   iter_k/train/adapter/, log.jsonl, DONE
               adapter
    validate   iter_k/train/ (k >= 1)                  iter_k/val/generations.csv, metrics.json, DONE;
                                                       <out>/metrics.jsonl rebuilt from every val folder

A stage whose output is there does nothing, which is how a killed run resumes. The score and build
stages write one file each, atomically, so the file is its own marker. Iteration 0 has only `validate`
(the base model).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starloop.errors import StarloopError
from starloop.stages.context import Run
from starloop.stages.sampling import sample, score
from starloop.stages.training import build, train
from starloop.stages.validation import rebuild_metrics, validate

# The stages of an iteration, in order.
STAGES: dict[str, Callable[[Run, int], object]] = {
    "sample": sample, "score": score, "build": build, "train": train, "validate": validate,
}


def inputs(run: Run, name: str, k: int) -> list[tuple[Path, str, int]]:
    """(file, the stage that writes it, its iteration) for each file stage `name` of iteration k reads."""
    t = run.cfg.trainer
    it = run.iter(k)
    prev = [(run.iter(k - 1) / "train" / "DONE", "train", k - 1)] if k >= 2 else []
    preloaded = k == 1 and bool(t.preload_data_for_training)
    scored, built = (it / "generations.csv", "score", k), (it / "train_data.jsonl", "build", k)
    return {
        "sample": [] if preloaded else prev,
        "score": [] if preloaded else [(it / "sample" / "DONE", "sample", k)],
        "build": [scored],
        "train": [built, *prev],
        "validate": [] if k == 0 else [(it / "train" / "DONE", "train", k), scored, built],
    }[name]


def check_inputs(run: Run, name: str, k: int) -> None:
    """One error line naming the first input file of the stage that is missing, and the stage to run."""
    for path, writer, j in inputs(run, name, k):
        if not path.exists():
            raise StarloopError(f"{path}: missing (an input of stage {name} of iteration {k}); run `starloop "
                                f"stage {writer} out={run.out} iteration={j}` first")


__all__ = ["STAGES", "Run", "build", "check_inputs", "inputs", "rebuild_metrics", "sample", "score", "train",
           "validate"]
