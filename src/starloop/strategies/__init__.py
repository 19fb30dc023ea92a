"""Training strategies, one module each; this registry is the only list of them (docs/extending.md).

    from starloop.strategies import get
    strategy = get(cfg.trainer.strategy)
    data = strategy.build(samples, cfg.trainer)          # scored samples -> training data
    units = strategy.units(tok, data, cfg.trainer)       # -> tokenized units
    loss, metrics = strategy.batch_loss(model, tok, micro_batch, cfg.trainer, step_totals)
"""

from __future__ import annotations

from starloop.strategies import dpo, grpo, reinforce, sft, weighted_sft
from starloop.strategies.base import RewardStrategy, Strategy, TrainContext

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    sft.STRATEGY,
    dpo.STRATEGY,
    reinforce.STRATEGY,
    weighted_sft.STRATEGY,
    grpo.STRATEGY,
)}


def get(name: str) -> Strategy:
    return STRATEGIES[name]


def config_classes() -> list[type]:
    """The strategies' config dataclasses, each once (TrainerConfig inherits them all)."""
    return list(dict.fromkeys(s.config for s in STRATEGIES.values() if s.config is not None))


def key_choices() -> dict[str, tuple[str, ...]]:
    return {k: v for s in STRATEGIES.values() for k, v in s.choices.items()}


def key_ranges() -> dict[str, tuple[float | None, float | None]]:
    return {k: v for s in STRATEGIES.values() for k, v in s.ranges.items()}


__all__ = ["STRATEGIES", "RewardStrategy", "Strategy", "TrainContext", "config_classes", "get", "key_choices",
           "key_ranges"]
