"""The build and train stages: scored samples -> the strategy's training data -> a LoRA adapter."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from starloop import distributed, io, sharding, strategies
from starloop.config import Config
from starloop.errors import StarloopError
from starloop.records import Sample, read_samples
from starloop.sampling import sample_seed
from starloop.stages.context import Run

log = logging.getLogger("starloop.train")


def training_data(cfg: Config, samples: list[Sample]) -> list:
    return strategies.get(cfg.trainer.strategy).build(samples, cfg.trainer)


def read_training_data(cfg: Config, path: Path) -> list:
    """The records of a train_data.jsonl (the build stage's output)."""
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    cls = strategies.get(cfg.trainer.strategy).record
    return [cls(**r) for r in rows]


def build(run: Run, k: int) -> None:
    """iter_k/generations.csv -> iter_k/train_data.jsonl (the SFT set / preference pairs / rewarded samples)."""
    path = run.iter(k) / "train_data.jsonl"
    distributed.barrier()  # as every stage: the main process's generations.csv is in place before anyone reads it
    if path.exists():
        return
    data = training_data(run.cfg, read_samples(run.iter(k) / "generations.csv"))
    io.write_text(path, "".join(json.dumps(asdict(x), ensure_ascii=False) + "\n" for x in data))
    if not data:
        log.warning("iteration data: no %s training examples from these samples", run.cfg.trainer.strategy)


def units_for(run: Run, data) -> tuple[list, int]:
    """(tokenized units that fit trainer.max_seq_len, how many samples were dropped as too long)."""
    from starloop import train

    t = run.cfg.trainer
    units = strategies.get(t.strategy).units(run.policy.tok, data, t)
    kept, dropped = train.drop_too_long(units, t.max_seq_len)
    if dropped:
        log.warning("%d of %d training samples are longer than trainer.max_seq_len=%d tokens (prompt + "
                    "completion) and were dropped, not cut; raise trainer.max_seq_len to keep them",
                    dropped, len(units), t.max_seq_len)
    return kept, dropped


def train(run: Run, k: int) -> dict:
    """iter_k/train_data.jsonl -> LoRA adapter of iteration k (iter_k/train/adapter, log.jsonl, DONE, whose
    summary holds the final loss and counts). Starts from the adapter of iteration k-1 unless
    trainer.restart_from_base; with trainer.val_every_n_steps the objective on data built from the
    validation generations is logged as val_loss."""
    from starloop import train as fit

    folder = run.iter(k) / "train"
    distributed.barrier()
    if io.is_done(folder):
        return json.loads((folder / "DONE").read_text())
    cfg, t, policy = run.cfg, run.cfg.trainer, run.policy
    data = read_training_data(cfg, run.iter(k) / "train_data.jsonl")
    val_data = _val_training_data(cfg, run.out)
    prev = run.adapter(k - 1)
    strategy = strategies.get(t.strategy)
    seed = sample_seed(cfg.seed, "lora", k)
    if t.restart_from_base or prev is None:
        model = policy.use(None, trainable=True, fresh_seed=seed)
    else:
        model = policy.use(prev, trainable=True)
    units, too_long = units_for(run, data)
    val_units = units_for(run, val_data)[0] if t.val_every_n_steps and val_data else None
    model = strategy.prepare(strategies.TrainContext(policy, model, units, val_units, prev, seed, cfg.progress))
    if sharding.active():  # launched with configs/accelerate/fsdp2.yaml: train on weights split over processes
        model = sharding.shard(model)
    validate = None
    if val_units:
        validate = lambda step: {"val_loss": fit.objective_loss(model, policy.tok, val_units, t)}
    on_log = (lambda r: run.logger.train_step(k, r)) if run.logger else (lambda r: log.debug("step %s", r))
    records: list[dict] = []
    if units:
        records += strategy.pre_train(model, policy.tok, units, t, seed, cfg.progress)
        records += fit.train(model, policy.tok, units, t, seed=seed, iteration=k, progress=cfg.progress,
                             on_log=on_log, validate=validate)
    else:
        log.warning("iteration %d: no training data (no usable samples); the adapter stays untrained", k)
    with io.atomic_path(folder / "adapter") as tmp:
        if sharding.is_sharded(model):
            sharding.save_adapter(model, tmp)  # gathered: a normal adapter folder
        else:
            model.save_pretrained(tmp)
    io.write_text(folder / "log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = {"n_units": len(units), "steps": len(records), "dropped_too_long": too_long,
               "loss": records[-1]["loss"] if records else None}
    io.mark_done(folder, summary)
    distributed.barrier()  # the adapter is on disk before any process reloads it
    if sharding.is_sharded(model):  # sampling needs whole weights in every process: load the base again
        del model
        policy.base = policy.model = None  # drop the sharded copy before the whole weights load again
        policy.__init__(cfg)
    policy.adapter = None  # the next `policy.use(path)` reloads the saved adapter, as a resumed run would
    policy.model.eval()
    return summary


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
