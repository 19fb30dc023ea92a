"""The plain pipeline a starloop iteration is measured against (`bench/iteration.py --reference`).

The same work as `starloop.loop.run_train` with iterations=1 and strategy sft, done the usual way:

    validation   transformers `model.generate` (greedy, batches of prompts) on the val questions, before and after
    sampling     `model.generate(do_sample=True, temperature, top_p, top_k=0, num_return_sequences=k)`
    scoring      starloop's answer extraction and SFT filter (the same kept-rationale rules), into a
                 `datasets.Dataset` of prompt / completion rows
    training     TRL's `SFTTrainer` with a peft LoRA (same rank, alpha, dropout, targets), the same number of
                 optimizer steps, batch size, gradient accumulation, learning rate, schedule and max length

Questions, prompts, seeds of the data order, model, dtype and device are the starloop run's. Model loading is
outside the stages in both pipelines. Needs `trl` and `datasets` (starloop's dev extra).
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from starloop import evaluate
from starloop.config import Config
from starloop.metrics import summarize
from starloop.models import load_model
from starloop.sampling import Generation
from starloop.stages.sampling import run_questions
from starloop.stages.training import training_data

STAGES = ("sampling", "scoring", "training", "validation")


def train_split(stage: tuple[float, float], inner: tuple[float, float], step_s: list[float]) -> dict:
    """The training stage split into setup (stage start to the first step: training data, LoRA, tokenizing,
    optimizer, plan), steps (the optimizer steps' own seconds), save (last step to stage end: adapter, logs),
    with the first and the median step's seconds (the first pays for warm-up). stage: (start, end) of the
    stage; inner: (start, end) of the part holding the steps; step_s: each step's seconds."""
    steps = sum(step_s)
    rest = step_s[1:] or step_s
    return {"train_setup_s": inner[0] - stage[0] + (inner[1] - inner[0] - steps), "train_steps_s": steps,
            "train_save_s": stage[1] - inner[1], "train_step_first_s": step_s[0] if step_s else None,
            "train_step_median_s": statistics.median(rest) if rest else None}


def cuda_memory() -> dict:
    """Free GPU memory, what the caching allocator holds, and its retries so far (a retry frees every cached
    block and synchronizes: many of them in training mean it runs short of memory, e.g. buffers left from
    sampling); {} without CUDA."""
    if not torch.cuda.is_available():
        return {}
    free, _ = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    return {"free_gib": free / 2**30, "reserved_gib": torch.cuda.memory_reserved() / 2**30,
            "alloc_retries": stats.get("num_alloc_retries", 0)}


def memory_during(before: dict, after: dict) -> dict:
    """The training stage's memory figures: free and reserved at its start, allocator retries during it."""
    if not before:
        return {}
    return {"train_free_gib_at_start": before["free_gib"], "train_reserved_gib_at_start": before["reserved_gib"],
            "train_alloc_retries": after["alloc_retries"] - before["alloc_retries"]}


@contextmanager
def profiled(folder: str | None, name: str):
    """With a folder: torch.profiler over the block (CPU, and CUDA when present), its top ops by self time
    printed and its trace written to folder/<name>.json; without: nothing (the profiler slows every op)."""
    if not folder:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        yield
    Path(folder).mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(Path(folder) / f"{name}.json"))
    for key in ["self_cpu_time_total"] + (["self_cuda_time_total"] if torch.cuda.is_available() else []):
        print(f"\n{name}: top ops by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)


class StepClock(TrainerCallback):
    """When the first optimizer step begins and each one ends (after the device finished it, on CUDA): a step
    is the time from the end of the one before (data collation, the step, the trainer's per-step logging)."""

    def __init__(self, cuda: bool):
        self.cuda, self.first_begin, self.ends = cuda, None, []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        if self.first_begin is None:
            self.first_begin = self._now()

    def on_step_end(self, args, state, control, **kw):
        self.ends.append(self._now())


def plain_generate(model, tok, prompts: list[str], *, k: int, max_new_tokens: int, temperature: float,
                   top_p: float, rows: int) -> list[list[Generation]]:
    """k generations per prompt with `model.generate`, `rows // k` prompts a batch (at least one), in order."""
    per_batch = max(1, rows // k)
    eos = tok.eos_token_id
    sampling = temperature > 0
    settings = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if sampling
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    tok.padding_side = "left"
    out: list[list[Generation]] = []
    for i in range(0, len(prompts), per_batch):
        enc = tok(prompts[i : i + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=k if sampling else 1,
                                 pad_token_id=tok.pad_token_id, eos_token_id=eos, **settings)
        new = ids[:, enc["input_ids"].shape[1] :].tolist()
        gens = []
        for row in new:
            n = row.index(eos) if eos in row else len(row)
            gens.append(Generation(tok.decode(row[:n], skip_special_tokens=True), n, eos not in row))
        step = k if sampling else 1
        out += [gens[j : j + step] for j in range(0, len(gens), step)]
    return out


def _score(cfg: Config, questions, prompts, gens: list[list[Generation]]):
    return [evaluate.generation_to_sample(q, p, g, j, evaluate.expected_language(q, cfg.prompt),
                                      repetition=cfg.scoring.repetition)
            for q, p, group in zip(questions, prompts, gens) for j, g in enumerate(group)]


def _validate(cfg: Config, model, tok, val_qs, val_prompts, rows: int) -> dict:
    model.eval()
    gens = plain_generate(model, tok, val_prompts, k=1, max_new_tokens=cfg.eval.max_new_tokens,
                          temperature=0.0, top_p=1.0, rows=rows)
    return summarize(_score(cfg, val_qs, val_prompts, gens))


def run_reference(cfg: Config, workdir: Path, *, rows: int, steps: int | None, profile: str | None = None) -> dict:
    """Time the plain pipeline on `cfg`'s questions. steps: optimizer steps (None = what starloop would plan
    for the kept examples: inner_epochs passes, or trainer.train_steps). profile: a folder for a torch.profiler
    trace of the training steps (`profiled`)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    t = cfg.trainer
    times = dict.fromkeys(STAGES, 0.0)
    cuda = torch.device(cfg.model.device if cfg.model.device != "auto" else "cpu").type == "cuda"

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize()
            times[name] += time.perf_counter() - start

    torch.manual_seed(cfg.seed)
    qs = run_questions(cfg)
    train_qs, val_qs = qs["train"], qs["val"]
    t0 = time.perf_counter()
    model, tok = load_model(cfg.model, for_training=True)
    load_s = time.perf_counter() - t0
    val_prompts = evaluate.chat_prompts(tok, val_qs, cfg.prompt)
    train_prompts = evaluate.chat_prompts(tok, train_qs, cfg.prompt)
    with stage("validation"):
        before = _validate(cfg, model, tok, val_qs, val_prompts, rows)
    with stage("sampling"):
        gens = plain_generate(model, tok, train_prompts, k=t.samples_per_question, max_new_tokens=t.max_new_tokens,
                              temperature=t.temperature, top_p=t.top_p, rows=rows)
    with stage("scoring"):
        samples = _score(cfg, train_qs, train_prompts, gens)
        examples = training_data(cfg, samples)  # the sft strategy's filter: correct, deduplicated, ended
        data = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    per_step = t.train_batch_size * t.grad_accum
    n_steps = steps if steps is not None else (t.train_steps or t.inner_epochs * math.ceil(len(examples) / per_step))
    log: list[dict] = []
    split: dict = {}
    if examples and n_steps:
        bf16 = next(model.parameters()).dtype == torch.bfloat16
        args = SFTConfig(
            output_dir=str(workdir / "trl"), max_steps=n_steps, per_device_train_batch_size=t.train_batch_size,
            gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type="constant",
            warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
            max_length=t.max_seq_len, gradient_checkpointing=t.gradient_checkpointing, bf16=bf16, fp16=False,
            use_cpu=not cuda, logging_steps=1, save_strategy="no", report_to="none", seed=cfg.seed,
            disable_tqdm=not cfg.progress, dataloader_num_workers=0,
        )
        lora = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, task_type="CAUSAL_LM",
                          target_modules="all-linear" if t.lora_target_modules == ["all-linear"]
                          else list(t.lora_target_modules))
        clock = StepClock(cuda)
        memory = cuda_memory() if cuda else {}
        with stage("training"):
            started = time.perf_counter()
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora,
                                 callbacks=[clock])
            with profiled(profile, "reference-train"):
                trainer.train()
            if cuda:
                torch.cuda.synchronize()
            ended = time.perf_counter()
        if clock.ends:
            step_s = [b - a for a, b in zip([clock.first_begin, *clock.ends], clock.ends)]
            split = train_split((started, ended), (clock.first_begin, clock.ends[-1]), step_s)
        split.update(memory_during(memory, cuda_memory() if cuda else {}))
        log = [r for r in trainer.state.log_history if "loss" in r]
        model = trainer.model
        model.config.use_cache = True
    with stage("validation"):
        after = _validate(cfg, model, tok, val_qs, val_prompts, rows)
    n_gen = sum(g.n_tokens for group in gens for g in group)
    return {"pipeline": "generate + TRL", **{f"{s}_s": times[s] for s in STAGES},
            "stages_s": sum(times.values()), "total_s": sum(times.values()) + load_s, "load_s": load_s,
            "samples": len(samples), "gen_tokens": n_gen, "sample_tok_s": n_gen / max(times["sampling"], 1e-9),
            "kept": len(examples), "train_steps": len(log), "rows": rows,
            "val_accuracy_before": before["accuracy"], "val_accuracy_after": after["accuracy"],
            "final_loss": log[-1]["loss"] if log else None, **split}
