"""One full STaR iteration (validate, sample, score, build, train, validate) with stage times and tokens/s, and
the same work done the plain way (`--reference`: `model.generate` + TRL's SFTTrainer), with the ratio.

    python bench/iteration.py                       # embedded model on CPU: 16 questions x 2 samples, 128 tokens
    python bench/iteration.py --sampler static hf   # the same iteration once per sampler backend
    python bench/iteration.py --reference           # + the plain pipeline (bench/iteration_reference.py)
    # GPU, a real model (a folder or a .gguf file), STaR-sized:
    python bench/iteration.py --model PATH --device cuda --questions 256 --samples 4 --new 256 --val 256 --reference

Runs `starloop.loop.run_train` with iterations=1 and strategy sft in a fresh folder and times its stages by
wrapping the entries of `starloop.stages.STAGES`: sampling (the training rationales), scoring (answer
extraction's leftovers, reward columns, building the SFT set), training, validation (iteration 0 and iteration 1, one greedy pass each). Model
loading and the run folder's bookkeeping are `other`. The reference does the same stages on the same questions
with the same settings and the same number of optimizer steps as the starloop run (`--steps N` fixes it for both).
The label-free cross-check of extraction (scoring.cross_check) is off in both unless `--cross-check`: the plain
pipeline has no counterpart. Sampling tokens/s counts generated tokens (up to EOS); training tokens/s is the
loop's own count of prompt + completion tokens per second. ratio = reference seconds / starloop seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from common import environment, out_dir, table, write_json
from iteration_reference import cuda_memory, memory_during, profiled, train_split

from starloop import loop, stages
from starloop import train as fit
from starloop.config import Config, DataConfig, EvalConfig, ModelConfig, ScoringConfig, TrainerConfig
from starloop.records import read_samples

STAGES = ("sampling", "scoring", "training", "validation")
WRAPPED = ("sample", "score", "build", "train", "validate")  # entries of starloop.stages.STAGES


def make_config(args, sampler: str, out: Path) -> Config:
    return Config(
        model=ModelConfig(name=args.model, device=args.device, sampler=sampler),
        data=DataConfig(name="mmlu", limit=None if args.questions is None else args.questions * 4),
        eval=EvalConfig(max_new_tokens=args.new, batch_size=args.batch),
        scoring=ScoringConfig(cross_check=args.cross_check),
        trainer=TrainerConfig(iterations=1, strategy=args.strategy, samples_per_question=args.samples,
                              max_new_tokens=args.new, gen_batch_size=args.batch, train_limit=args.questions,
                              val_limit=args.val, train_batch_size=args.train_batch, train_steps=args.steps),
        out=str(out), progress=args.progress,
    )


class StageTimer:
    """Seconds spent in each wrapped stage (the stages do not call one another), and the parts of each stage that
    `add` charges to it while it runs (LoRA merge and restore, the static sampler's prefill, capture and decode)."""

    def __init__(self, cuda: bool):
        self.seconds: dict[str, float] = defaultdict(float)
        self.spans: dict[str, tuple[float, float]] = {}  # (start, end) of each stage's last call
        self.parts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.running: list[str] = []
        self.cuda = cuda

    def wrap(self, name: str, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            self.running.append(name)
            try:
                return fn(*a, **k)
            finally:
                self.running.pop()
                if self.cuda:
                    torch.cuda.synchronize()
                end = time.perf_counter()
                self.seconds[name] += end - t
                self.spans[name] = (t, end)
        return wrapper

    def add(self, part: str, seconds: float) -> None:
        """Charge `seconds` of `part` to the innermost stage running now (none: not counted)."""
        if self.running:
            self.parts[self.running[-1]][part] += seconds

    def stages(self) -> dict[str, float]:
        s = self.seconds
        return {"sampling": s["sample"], "scoring": s["score"] + s["build"], "training": s["train"],
                "validation": s["validate"]}

    def split(self, stage: str, kind: str) -> dict[str, float]:
        """{kind_merge_s, kind_prefill_s, kind_capture_s, kind_decode_s, kind_rest_s} of `stage` (decode without
        the graph captures it held; rest = the stage less the parts: tokenizing, extraction, files)."""
        p = self.parts.get(stage, {})
        got = {f"{kind}_{k}_s": p.get(k, 0.0) for k in ("merge", "prefill", "capture", "decode")}
        return {**got, f"{kind}_rest_s": self.seconds.get(stage, 0.0) - sum(got.values())}


@contextlib.contextmanager
def timed_parts(timer: StageTimer):
    """Charge Policy.merged's merge and restore, and the static sampler's prefill / capture / decode seconds
    (its own counters, device synchronized), to the stage running when they happen."""
    from starloop.policy import Policy
    from starloop.static_sampler import StaticSampler

    merged, generate_ids = Policy.merged, StaticSampler.generate_ids

    @contextlib.contextmanager
    def timed_merged(self):
        with contextlib.ExitStack() as stack:
            t = time.perf_counter()
            done = stack.enter_context(merged(self))
            timer.add("merge", time.perf_counter() - t)
            try:
                yield done
            finally:
                t = time.perf_counter()
                stack.close()
                timer.add("merge", time.perf_counter() - t)

    def timed_generate_ids(self, *a, **k):
        before = dataclasses.replace(self.stats)
        try:
            return generate_ids(self, *a, **k)
        finally:
            st = self.stats
            capture = st.capture_s - before.capture_s
            timer.add("prefill", st.prefill_s - before.prefill_s)
            timer.add("capture", capture)
            timer.add("decode", st.decode_s - before.decode_s - capture)

    Policy.merged, StaticSampler.generate_ids = timed_merged, timed_generate_ids
    try:
        yield
    finally:
        Policy.merged, StaticSampler.generate_ids = merged, generate_ids


def run_once(args, sampler: str, workdir: Path) -> dict:
    timer = StageTimer(args.device.startswith("cuda"))
    originals = {n: stages.STAGES[n] for n in WRAPPED}
    out = workdir / f"run-{sampler}"
    cfg = make_config(args, sampler, out)
    loop_fn = fit.train
    try:
        stages.STAGES.update({n: timer.wrap(n, f) for n, f in originals.items()})

        def loop_maybe_profiled(*a, **k):
            with profiled(args.profile_train, f"starloop-{sampler}-train"):
                return loop_fn(*a, **k)
        fit.train = timer.wrap("train_loop", loop_maybe_profiled)  # the stage calls it through the module
        train_stage = stages.STAGES["train"]
        memory: dict = {}

        def train_with_memory(*a, **k):
            memory["before"] = cuda_memory() if timer.cuda else {}
            try:
                return train_stage(*a, **k)
            finally:
                memory["after"] = cuda_memory() if timer.cuda else {}
        stages.STAGES["train"] = train_with_memory
        t0 = time.perf_counter()
        with timed_parts(timer):
            loop.run_train(cfg)
        total = time.perf_counter() - t0
    finally:
        stages.STAGES.update(originals)
        fit.train = loop_fn
    split = timer.stages()
    gen = read_samples(out / "iter_1" / "generations.csv")
    val = read_samples(out / "iter_1" / "val" / "generations.csv")
    log = [json.loads(x) for x in (out / "iter_1" / "train" / "log.jsonl").read_text().splitlines() if x.strip()]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    n_gen = sum(s.n_tokens for s in gen)
    n_val = sum(s.n_tokens for s in val)
    return {
        "pipeline": f"starloop ({sampler})", "sampler": sampler, **{f"{k}_s": v for k, v in split.items()},
        "stages_s": sum(split.values()), "total_s": total, "other_s": total - sum(split.values()),
        "samples": len(gen), "gen_tokens": n_gen, "sample_tok_s": n_gen / max(split["sampling"], 1e-9),
        "val_tok_s": n_val / max(split["validation"] / 2, 1e-9),  # iterations 0 and 1 validate the same questions
        "train_steps": len(log), "train_tok_s": log[-1]["tokens_per_s"] if log else None,
        "kept": json.loads((out / "iter_1" / "train" / "DONE").read_text()).get("n_units"),
        "val_accuracy_before": metrics[0]["accuracy"], "val_accuracy_after": metrics[-1]["accuracy"],
        "final_loss": log[-1]["loss"] if log else None,
        **(train_split(timer.spans["train"], timer.spans["train_loop"], [r["wall_s"] for r in log])
           if "train_loop" in timer.spans else {}),
        **memory_during(memory.get("before", {}), memory.get("after", {})),
        **timer.split("sample", "sampling"), **timer.split("validate", "validation"),
    }


def ratios(reference: dict, ours: dict) -> dict:
    """reference seconds / starloop seconds, per stage and over the stages (None where starloop took no time)."""
    keys = [f"{s}_s" for s in STAGES] + ["stages_s", "total_s"]
    return {k: reference[k] / ours[k] if ours.get(k) else None for k in keys}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a preset, a model folder or a .gguf file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--questions", type=int, default=16, help="training questions")
    ap.add_argument("--samples", type=int, default=2, help="rationales per training question")
    ap.add_argument("--val", type=int, default=16, help="validation questions")
    ap.add_argument("--new", type=int, default=128, help="most new tokens, sampling and validation")
    ap.add_argument("--batch", type=int, default=None,
                    help="starloop's generation batch (rows); default: sized from free memory on CUDA, 16 on CPU")
    ap.add_argument("--ref-batch", type=int, default=None,
                    help="the reference's generate batch (rows; k rows a prompt); default --batch, else 256 on "
                         "CUDA, 16 on CPU")
    ap.add_argument("--train-batch", type=int, default=4, help="sequences per optimizer step (both pipelines)")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps (both); default: one pass over starloop's kept rationales")
    ap.add_argument("--strategy", default="sft")
    ap.add_argument("--sampler", nargs="*", default=["auto"], choices=["auto", "hf", "static"])
    ap.add_argument("--reference", action="store_true", help="also run the plain generate + TRL SFTTrainer pipeline")
    ap.add_argument("--cross-check", action="store_true", help="starloop validates with scoring.cross_check")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs only)")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    ap.add_argument("--profile-train", default=None, metavar="DIR",
                    help="torch.profiler over both pipelines' training steps: top ops printed, traces in DIR "
                         "(slows the steps: time without it)")
    ap.add_argument("--out", default=None, help="JSON results file (default $BENCH_OUT/iteration.json)")
    args = ap.parse_args(argv)
    if args.reference and args.strategy != "sft":
        ap.error("--reference is the plain SFT pipeline: use --strategy sft")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    env = environment(args.device)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.sampler:
            rows.append(run_once(args, s, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
        if args.reference:
            from iteration_reference import run_reference

            gc.collect()  # the starloop runs' model and sampler buffers go before the reference loads its own
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

            ref_rows = args.ref_batch or args.batch or (256 if args.device.startswith("cuda") else 16)
            # the steps starloop took (--steps when it kept anything; none when it kept nothing)
            reference = run_reference(make_config(args, "hf", Path(tmp) / "reference"), Path(tmp),
                                      rows=ref_rows, steps=rows[0]["train_steps"], profile=args.profile_train)
            if (reference["train_steps"] == 0) != (rows[0]["train_steps"] == 0):
                print("warning: one pipeline kept no rationale and did not train; the training ratio compares "
                      "unequal work (more questions or samples make it likelier that both keep some)", flush=True)
            print(json.dumps(reference), flush=True)
    cols = [("pipeline", "pipeline"), ("total_s", "total s"), ("sampling_s", "sampling s"),
            ("scoring_s", "scoring s"), ("training_s", "training s"), ("validation_s", "validation s (x2)"),
            ("stages_s", "stages s"), ("gen_tokens", "sampled tokens"), ("sample_tok_s", "sample tok/s"),
            ("kept", "train units"), ("train_steps", "train steps"), ("val_accuracy_before", "val acc before"),
            ("val_accuracy_after", "val acc after")]
    print(f"\n{env['card']}, {env['date']}, {args.model}, {args.questions} questions x {args.samples} samples, "
          f"{args.new} new tokens, {args.val} validation questions, strategy {args.strategy}")
    print(table(rows + ([reference] if reference else []), cols), flush=True)
    print("\ntraining stage split (s): setup = data, LoRA, tokenizing, optimizer up to the first step; steps = the "
          "optimizer steps; save = after the last step (starloop saves the adapter, the reference saves nothing)")
    print(table(rows + ([reference] if reference else []),
                [("pipeline", "pipeline"), ("training_s", "training s"), ("train_setup_s", "setup s"),
                 ("train_steps_s", "steps s"), ("train_save_s", "save s"), ("train_steps", "steps"),
                 ("train_step_first_s", "first step s"), ("train_step_median_s", "median step s"),
                 ("train_free_gib_at_start", "free GiB at start"), ("train_alloc_retries", "alloc retries")]),
          flush=True)
    print("\nsampling and validation split (s): merge = folding the LoRA adapter in and restoring the base weights; "
          "prefill, capture (CUDA graphs), decode = the static sampler's own counters (device synchronized); rest = "
          "tokenizing, answer extraction, files")
    print(table(rows, [("pipeline", "pipeline")] + [(f"{kind}_{part}_s", f"{kind} {part} s")
                                                    for kind in ("sampling", "validation")
                                                    for part in ("merge", "prefill", "capture", "decode", "rest")]),
          flush=True)
    result = {"env": env, "args": vars(args), "rows": rows}
    if reference:
        result["reference"] = reference
        result["ratio"] = ratios(reference, rows[0])
        print("\nratio (reference s / starloop s, first starloop row):")
        print(table([{"stage": k.removesuffix("_s"), "ratio": v} for k, v in result["ratio"].items()],
                    [("stage", "stage"), ("ratio", "x")]), flush=True)
    write_json(args.out or (out_dir() and f"{out_dir()}/iteration.json"), result)
    return result


if __name__ == "__main__":
    main()
