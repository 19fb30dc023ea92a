"""One full STaR iteration (validate, sample, score, build, train, validate) with stage times and tokens/s.

    python bench/iteration.py                       # embedded model on CPU: 16 questions x 2 samples, 128 tokens
    python bench/iteration.py --sampler static hf   # the same iteration once per sampler backend

Runs `starloop.loop.run_train` with iterations=1 in a fresh folder and times its stages by wrapping them
(the entries of `starloop.stages.STAGES`).
Sampling tokens/s counts generated tokens (up to EOS); training tokens/s is the loop's own count of prompt +
completion tokens per second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from common import environment, out_dir, table, write_json

from starloop import loop, stages
from starloop.config import Config, DataConfig, EvalConfig, ModelConfig, TrainerConfig
from starloop.records import read_samples


def run_once(args, sampler: str, workdir: Path) -> dict:
    times: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] += time.perf_counter() - t
        return wrapper

    originals = dict(stages.STAGES)
    out = workdir / f"run-{sampler}"
    cfg = Config(
        model=ModelConfig(name=args.model, device=args.device, sampler=sampler),
        data=DataConfig(name="mmlu", limit=args.questions * 4),
        eval=EvalConfig(max_new_tokens=args.new, batch_size=args.batch),
        trainer=TrainerConfig(iterations=1, strategy=args.strategy, samples_per_question=args.samples,
                              max_new_tokens=args.new, gen_batch_size=args.batch, train_limit=args.questions,
                              val_limit=args.val, train_batch_size=4),
        out=str(out), progress=False,
    )
    try:
        # the validate stage's own sampling is counted under validate, not under sample
        stages.STAGES.update(validate=timed("validate", originals["validate"]),
                             sample=timed("sample+score", originals["sample"]),
                             score=timed("sample+score", originals["score"]),
                             train=timed("train", originals["train"]))
        t0 = time.perf_counter()
        loop.run_train(cfg)
        total = time.perf_counter() - t0
    finally:
        stages.STAGES.update(originals)
    gen = read_samples(out / "iter_1" / "generations.csv")
    val = read_samples(out / "iter_1" / "val" / "generations.csv")
    log = [json.loads(x) for x in (out / "iter_1" / "train" / "log.jsonl").read_text().splitlines() if x.strip()]
    n_gen = sum(s.n_tokens for s in gen)
    n_val = sum(s.n_tokens for s in val)
    val_time = times["validate"] / 2  # iteration 0 and iteration 1 validate the same questions
    return {
        "sampler": sampler, "total_s": total, "validate_s": times["validate"], "sample_s": times["sample+score"],
        "train_s": times["train"], "other_s": total - sum(times.values()), "samples": len(gen),
        "gen_tokens": n_gen, "sample_tok_s": n_gen / max(times["sample+score"], 1e-9),
        "val_tok_s": n_val / max(val_time, 1e-9), "train_steps": len(log),
        "train_tok_s": log[-1]["tokens_per_s"] if log else None,
        "kept": json.loads((out / "iter_1" / "train" / "DONE").read_text()).get("n_units"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16, help="generation batch (rows)")
    ap.add_argument("--strategy", default="sft")
    ap.add_argument("--sampler", nargs="*", default=["auto"], choices=["auto", "hf", "static"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = environment(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.sampler:
            rows.append(run_once(args, s, Path(tmp)))
            print(rows[-1], flush=True)
    cols = [("sampler", "sampler"), ("total_s", "total s"), ("validate_s", "validate s (x2)"),
            ("sample_s", "sample+score s"), ("train_s", "train s"), ("other_s", "other s"),
            ("gen_tokens", "sampled tokens"), ("sample_tok_s", "sample tok/s"), ("val_tok_s", "validate tok/s"),
            ("kept", "train units"), ("train_steps", "train steps"), ("train_tok_s", "train tok/s")]
    print(f"\n{env['card']}, {env['date']}, {args.model}, {args.questions} questions x {args.samples} samples, "
          f"{args.new} new tokens, {args.val} validation questions, strategy {args.strategy}")
    print(table(rows, cols), flush=True)
    write_json(args.out or (out_dir() and f"{out_dir()}/iteration.json"), {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
