"""Typed configuration: one dataclass per config group, the only home of defaults.

Hydra composes these (registered in its ConfigStore by `starloop.hydra_config`); presets and YAML
under `configs/` only override fields. Every field has a comment above it: docs/configuration.md is
generated from these comments (`python scripts/gen_config_docs.py`; a test checks that none is
missing). A comment line of the form `# --- Title ---` starts a section in that document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starloop import strategies
from starloop.data.sources import SOURCES
from starloop.rewards import REWARDS


@dataclass
class ModelConfig:
    # Preset (smollm2-135m, tiny-random, qwen2.5-0.5b, llama-3.1-8b: gated, needs access and a login), a
    # local folder, a .gguf file, or a hub id.
    name: str = "smollm2-135m"
    # GGUF file name inside `name` when `name` is a folder or hub repo holding one.
    gguf_file: str | None = None
    # Weights' dtype: auto = bfloat16 where the device runs it fast (CUDA, recent CPUs), else float32;
    # or float32, bfloat16, float16.
    dtype: str = "auto"
    # auto = cuda if available, else cpu.
    device: str = "auto"
    # Attention kernel passed to transformers (sdpa, eager, flash_attention_2); null = library default.
    attn_implementation: str | None = None
    # Generation backend: hf (transformers generate), static (static KV cache decode loop, CUDA graphs
    # on GPU), vllm (needs the vllm extra); auto = static on CUDA, hf on CPU.
    sampler: str = "auto"


@dataclass
class DataConfig:
    # Source: mmlu (bundled), mmlu-afr (bundled African-language clinical subset), cais-mmlu, mmmlu,
    # global-mmlu, afrimmlu, commonsense-qa, arc-challenge, arc-easy, mmlu-pro (hub datasets); the table is
    # starloop/data/sources.
    name: str = "mmlu"
    # A local folder (hendrycks layout) or file to read instead of the bundled or hub copy.
    path: str | None = None
    # Split evaluated by `starloop eval`: train, val, test, dev, heldout.
    split: str = "val"
    # Split the STaR loop samples and trains on.
    train_split: str = "train"
    # Held-out split the STaR loop validates on.
    val_split: str = "val"
    # Language code (en; for mmmlu e.g. YO_NG; for mmlu-afr e.g. zu) or `all`.
    language: str = "en"
    # Only these subjects (empty = all).
    subjects: list[str] = field(default_factory=list)
    # Use at most this many questions of the split (after a seeded shuffle); null = all.
    limit: int | None = None
    # Fraction of `test` held out as `val` (or `heldout`) for sources whose splits lack train/val.
    heldout_fraction: float = 0.1
    # Seed of the shuffle and of the held-out partition (kept apart from the global seed so that
    # changing the training seed never moves questions between splits).
    seed: int = 1234


@dataclass
class PromptConfig:
    # native: reason in the question's language; english: reason in English; translate: translate to
    # English first, then reason.
    strategy: str = "native"
    # Number of worked examples from the dev split placed before the question (0 = zero-shot).
    few_shot: int = 0
    # System message; null = the model's default.
    system: str | None = None


@dataclass
class EvalConfig:
    # generate: chain-of-thought then answer extraction; logit: compare answer-letter logits.
    mode: str = "generate"
    # Questions per generation batch; null = sized from free GPU memory by the static sampler on CUDA,
    # 16 otherwise (and for eval.mode=logit).
    batch_size: int | None = None
    # Longest rationale generated.
    max_new_tokens: int = 256
    # Questions `starloop eval` scores (the first of data.split after its seeded shuffle and data.limit);
    # the default finishes in minutes on a laptop CPU (stated in the output); null = all of the split.
    limit: int | None = 20
    # 0 = greedy decoding.
    temperature: float = 0.0
    # Nucleus sampling mass when temperature > 0.
    top_p: float = 1.0


@dataclass
class ScoringConfig:
    # How an output flagged as a repetition loop is scored, in eval, validation and training samples:
    # no_answer (a loop commits to nothing, even when it repeats an answer line) or extracted (score the
    # letter that answer extraction reads). A letter contradicted by the option text restated after it is
    # no answer under both (see docs/extraction.md).
    repetition: str = "no_answer"
    # Label-free check of answer extraction in eval and validation: after each generated output the model
    # scores an appended answer line for every letter (one forward pass per option), and the metrics report
    # how often the extracted letter disagrees with the model's forced choice, per language.
    cross_check: bool = True


@dataclass
class _TrainerBase:
    # Outer STaR iterations (metrics are written for iterations 0..iterations).
    iterations: int = 1
    # How a scored iteration becomes a training signal: a strategy of starloop/strategies (sft, dpo,
    # reinforce, weighted_sft, grpo).
    strategy: str = "sft"
    # Rationales sampled per training question.
    samples_per_question: int = 4
    # Sampling temperature for training rationales.
    temperature: float = 0.7
    # Nucleus sampling mass for training rationales.
    top_p: float = 0.95
    # Longest training rationale. The default is sized for a first `starloop train` on a laptop CPU, where a
    # batch of rationales waits for its longest one (stated in the output); 256 or more on a GPU.
    max_new_tokens: int = 128
    # Sequences per generation batch; null = sized from free GPU memory by the static sampler on CUDA,
    # 16 otherwise. Reward scoring and DPO's reference log-probs take as many rows a forward (16 when null).
    gen_batch_size: int | None = None
    # Sample again with the gold answer as a hint for questions with no correct sample (STaR).
    rationalize: bool = False
    # Keep at most this many correct rationales per question in the SFT set (null = all).
    max_kept_per_question: int | None = None
    # Drop rationales whose text repeats another kept rationale of the same question.
    dedupe: bool = True
    # Drop degenerate generations (loops, truncation, wrong language) from training data.
    filter_degenerate: bool = False
    # Keep a correct sample for sft (or as dpo's chosen) only with at least this many words of reasoning
    # before its answer line (0 = off). Near chance, STaR otherwise learns bare "The answer is (X)" guesses.
    min_rationale_words: int = 0
    # Reward subtracted from degenerate samples in reward strategies.
    degenerate_penalty: float = 0.0
    # Train on correct samples cut by max_new_tokens (without an end-of-sequence token) instead of dropping
    # them from the SFT set and from dpo's chosen side. Reward strategies always keep them, without EOS.
    keep_truncated: bool = False
    # Keep only samples whose rationale beats answering without one (reward column gain > 0), in every
    # strategy: the notes' filter. Costs the scoring pass of the reward strategies.
    require_gain: bool = False
    # Training questions used per iteration (null = all of the train split after data.limit). The small
    # default (x samples_per_question = one CPU generation batch) makes a first `starloop train` on a laptop
    # CPU finish in about 3 minutes (stated in the output); set null on a GPU.
    train_limit: int | None = 4
    # Validation questions per evaluation (null = all of the val split after data.limit); small for a laptop
    # CPU like train_limit.
    val_limit: int | None = 8

    # --- LoRA ---
    # LoRA rank (width of the low-rank update).
    lora_r: int = 16
    # LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.
    lora_alpha: int = 32
    # Dropout on the LoRA branch during training.
    lora_dropout: float = 0.05
    # Module names LoRA wraps; all-linear = every linear layer but the output head.
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    # --- Optimisation ---
    # Peak learning rate of AdamW (reached after warmup_steps).
    lr: float = 1e-4
    # AdamW decoupled weight decay.
    weight_decay: float = 0.0
    # Linear warmup steps (optimizer steps).
    warmup_steps: int = 0
    # Learning-rate schedule after warmup: constant, linear, cosine.
    scheduler: str = "constant"
    # Sequences per micro-batch.
    train_batch_size: int = 4
    # Micro-batches per optimizer step.
    grad_accum: int = 1
    # Gradient clipping norm (0 = off).
    max_grad_norm: float = 1.0
    # Passes over an iteration's training data (when train_steps is null).
    inner_epochs: int = 1
    # Optimizer steps in iteration 1, passing over the data as often as needed; null = inner_epochs passes.
    train_steps: int | None = None
    # train_steps is multiplied by this in each later iteration (STaR: 40 steps, then x1.2 per iteration).
    steps_growth: float = 1.0
    # Recompute activations in the backward pass to save memory (slower).
    gradient_checkpointing: bool = False
    # Longest training sequence (prompt + completion) in tokens. A longer sample is dropped, never cut
    # (counted as dropped_too_long in the iteration's metrics).
    max_seq_len: int = 1024
    # Start each iteration from the base model (STaR) instead of the last adapter.
    restart_from_base: bool = True
    # Validate every n optimizer steps inside an iteration (0 = only at the end).
    val_every_n_steps: int = 0
    # Skip the iteration-0 validation before any training.
    skip_first_validation: bool = False
    # Log training metrics every n optimizer steps.
    log_every_n_steps: int = 1
    # Train repeatedly on a single batch (debugging: the loss should fall to near zero).
    single_batch: bool = False
    # Optimizer steps in single-batch mode.
    single_batch_steps: int = 30
    # Reuse a generations CSV for training instead of sampling.
    preload_data_for_training: str | None = None
    # Reuse a generations CSV for validation instead of sampling.
    preload_data_for_val: str | None = None

    # --- Rewards ---
    # Reward of a sample (reward strategies: reinforce, weighted_sft, grpo): correct, answer_logprob,
    # quiet_star, gain, expected_likelihood.
    reward: str = "correct"
    # D(y|x) of the expected_likelihood reward, log sum_y D(y|x) p(y|x,z): gold (one-hot: = answer_logprob),
    # smoothed (gold with label_smoothing spread over the other options), model (the model's own answer
    # distribution without a rationale, p(y|x)), or file (soft_labels).
    label_dist: str = "smoothed"
    # Mass moved from the gold answer to the other options, evenly, for label_dist=smoothed.
    label_smoothing: float = 0.1
    # CSV of per-question label distributions for label_dist=file: a question_id column and one column per
    # option letter (A, B, ...), each row summing to 1.
    soft_labels: str | None = None


@dataclass
class TrainerConfig(*reversed(strategies.config_classes()), _TrainerBase):  # type: ignore[misc]
    """The STaR loop, its training and its rewards; each strategy's own keys come from its config
    dataclass in starloop/strategies (documented there, keys trainer.<name> like the others)."""


@dataclass
class LoggerConfig:
    # local (CSV/JSONL in the run folder) or wandb (local files too).
    name: str = "local"
    # Also write TensorBoard event files (<out>/tensorboard; needs the tensorboard extra).
    tensorboard: bool = False
    # wandb project the run is logged to.
    project: str = "starloop"
    # wandb team or user; null = your default entity.
    entity: str | None = None
    # wandb mode: online, offline, disabled.
    mode: str = "offline"
    # Sample generations logged per iteration.
    table_rows: int = 32


@dataclass
class LauncherConfig:
    """Where the jobs of a `-m` sweep run: read by `launcher=slurm` (and `launcher=submitit-local`).

    The default `launcher=local` runs the jobs one after another in this process and ignores these keys.
    """

    # Slurm partition; null = the cluster's default.
    partition: str | None = None
    # Slurm account to charge; null = your default.
    account: str | None = None
    # Slurm quality of service; null = the default.
    qos: str | None = None
    # Slurm node constraint (e.g. a GPU type such as a100); null = any node.
    constraint: str | None = None
    # Wall-clock limit of each job, in minutes.
    timeout_min: int = 1440
    # GPUs per job (one node per job).
    gpus_per_node: int = 1
    # CPU cores per job.
    cpus_per_task: int = 8
    # Host memory per job in GB; null = the partition's default.
    mem_gb: int | None = None
    # Most jobs of the sweep running at the same time.
    array_parallelism: int = 16
    # Times a job that hits timeout_min is requeued; runs resume where they stopped, so this is safe.
    max_num_timeout: int = 3


@dataclass
class Config:
    # Model to load (group: model=PRESET, or model=PATH/HUB_ID).
    model: ModelConfig = field(default_factory=ModelConfig)
    # Questions and splits (group: data=PRESET).
    data: DataConfig = field(default_factory=DataConfig)
    # How questions are put to the model (group: prompt=native|english|translate).
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # Evaluation and validation decoding.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # How outputs are scored: repetition loops, the forced-choice cross-check of extraction.
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    # The STaR loop and its training strategy (group: trainer=PRESET).
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # Where metrics go besides the run folder (group: logger=local|wandb).
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Where sweep jobs run (group: launcher=local|slurm|submitit-local).
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    # Output folder of the run; a rerun with the same folder resumes it. null = the command's own folder:
    # runs/train, runs/eval, runs/eval-logit, runs/eval-<checkpoint> (runs/<command>-sweep for a -m sweep).
    out: str | None = None
    # Global seed: sampling, LoRA init, data order.
    seed: int = 0
    # Deterministic kernels where torch has them (attention backward, cuBLAS, cuDNN), so that a rerun on the
    # same hardware and software repeats a run bit for bit; slower on a GPU (starloop.reproducibility).
    deterministic: bool = False
    # A saved run iteration (<out>/iter_<k>) or adapter folder to evaluate instead of the base model.
    checkpoint: str | None = None
    # Show progress bars.
    progress: bool = True


def to_dict(obj: Any) -> dict:
    """A plain dict of a config dataclass (or OmegaConf node) for saving beside artifacts."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return asdict(obj)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]


# Allowed values of enumerated keys, checked before any model loads.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": tuple(SOURCES),  # the source registry (starloop/data/sources)
    "data.split": ("train", "val", "test", "dev", "heldout"),
    "data.train_split": ("train", "val", "test", "dev", "heldout"),
    "data.val_split": ("train", "val", "test", "dev", "heldout"),
    "prompt.strategy": ("native", "english", "translate"),
    "model.sampler": ("auto", "hf", "static", "vllm"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "eval.mode": ("generate", "logit"),
    "scoring.repetition": ("no_answer", "extracted"),
    "trainer.strategy": tuple(strategies.STRATEGIES),
    **strategies.key_choices(),
    "trainer.scheduler": ("constant", "linear", "cosine"),
    "trainer.reward": ("correct", *REWARDS),  # starloop.rewards.REWARDS
    "trainer.label_dist": ("gold", "smoothed", "model", "file"),
    "logger.name": ("local", "wandb"),
    "logger.mode": ("online", "offline", "disabled"),
}

# (minimum, maximum) of numeric keys; None = unbounded.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.limit": (1, None),
    "data.heldout_fraction": (0.0, 0.9),
    "prompt.few_shot": (0, 5),
    "eval.batch_size": (1, None),
    "eval.max_new_tokens": (1, None),
    "eval.limit": (1, None),
    "eval.temperature": (0.0, None),
    "eval.top_p": (1e-6, 1.0),
    "trainer.iterations": (0, None),
    "trainer.train_limit": (1, None),
    "trainer.val_limit": (1, None),
    "trainer.samples_per_question": (1, None),
    "trainer.temperature": (0.0, None),
    "trainer.top_p": (1e-6, 1.0),
    "trainer.max_new_tokens": (1, None),
    "trainer.gen_batch_size": (1, None),
    "trainer.lora_r": (1, None),
    "trainer.lora_dropout": (0.0, 1.0),
    "trainer.lr": (0.0, None),
    "trainer.weight_decay": (0.0, None),
    "trainer.warmup_steps": (0, None),
    "trainer.train_batch_size": (1, None),
    "trainer.grad_accum": (1, None),
    "trainer.max_grad_norm": (0.0, None),
    "trainer.inner_epochs": (0, None),
    "trainer.train_steps": (1, None),
    "trainer.steps_growth": (1e-6, None),
    "trainer.label_smoothing": (0.0, 0.999),
    "trainer.max_seq_len": (16, None),
    "trainer.single_batch_steps": (1, None),
    "trainer.val_every_n_steps": (0, None),
    "trainer.max_kept_per_question": (1, None),
    "trainer.min_rationale_words": (0, None),
    "trainer.lora_alpha": (1, None),
    "trainer.log_every_n_steps": (1, None),
    **strategies.key_ranges(),
    "logger.table_rows": (0, None),
    "launcher.timeout_min": (1, None),
    "launcher.gpus_per_node": (0, None),
    "launcher.cpus_per_task": (1, None),
    "launcher.mem_gb": (1, None),
    "launcher.array_parallelism": (1, None),
    "launcher.max_num_timeout": (0, None),
}


def validate(cfg: Config) -> None:
    """Reject out-of-range or unknown values with a ConfigError naming the key."""
    from starloop.errors import ConfigError

    def get(key: str):
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    _check_finite(cfg)
    for key, allowed in CHOICES.items():
        v = get(key)
        if v not in allowed:
            raise ConfigError(key, f"{v!r} is not one of {', '.join(allowed)}")
    for key, (lo, hi) in RANGES.items():
        v = get(key)
        if v is None:
            continue
        if lo is not None and v < lo:
            raise ConfigError(key, f"{v} is below the minimum {lo}")
        if hi is not None and v > hi:
            raise ConfigError(key, f"{v} is above the maximum {hi}")
    if cfg.data.train_split == "dev":
        raise ConfigError("data.train_split", "dev holds the few-shot examples (5 a subject), not training data; "
                                              "use train")
    if cfg.data.train_split == cfg.data.val_split:
        raise ConfigError("data.train_split", f"is the validation split too ({cfg.data.val_split!r}): training "
                                              "and validation must not share questions")
    if cfg.trainer.label_dist == "file" and not cfg.trainer.soft_labels:
        raise ConfigError("trainer.soft_labels", "label_dist=file needs a CSV path of per-question label distributions")
    need = strategies.get(cfg.trainer.strategy).min_samples
    if cfg.trainer.samples_per_question < need and not cfg.trainer.preload_data_for_training:
        raise ConfigError("trainer.samples_per_question", f"{cfg.trainer.strategy} needs at least {need} samples per "
                          "question (dpo: two, to form pairs)")


def _check_finite(cfg: Any, prefix: str = "") -> None:
    """NaN and infinity pass every range check (comparisons with NaN are false): refuse them in every float key."""
    import math
    from dataclasses import fields, is_dataclass

    from starloop.errors import ConfigError

    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            _check_finite(v, f"{prefix}{f.name}.")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{prefix}{f.name}", f"{v} is not a finite number")
