"""Registers the config dataclasses and their group options in Hydra's ConfigStore.

Group options are presets: each changes only the fields that differ from the dataclass defaults
(which stay the only home of defaults). YAML experiment presets live in `starloop/configs/`.
"""

from __future__ import annotations

from starloop.config import Config, DataConfig, LoggerConfig, ModelConfig

GROUP_OPTIONS: dict[str, dict[str, object]] = {
    "model": {
        "smollm2-135m": ModelConfig(),
        "tiny-random": ModelConfig(name="tiny-random"),
        "llama-3.1-8b": ModelConfig(name="llama-3.1-8b"),
        "qwen2.5-0.5b": ModelConfig(name="qwen2.5-0.5b"),
        "custom": ModelConfig(),  # `model=PATH` is rewritten to model=custom model.name=PATH
    },
    "data": {
        "mmlu": DataConfig(),
        "mmlu-afr": DataConfig(name="mmlu-afr", language="zu"),
        "cais-mmlu": DataConfig(name="cais-mmlu"),
        "mmmlu": DataConfig(name="mmmlu", language="YO_NG"),
        "global-mmlu": DataConfig(name="global-mmlu", language="yo"),
        "afrimmlu": DataConfig(name="afrimmlu", language="yor"),
    },
    "logger": {
        "local": LoggerConfig(),
        "wandb": LoggerConfig(name="wandb"),
    },
}

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, options in GROUP_OPTIONS.items():
        for name, node in options.items():
            cs.store(group=group, name=name, node=node)
    _registered = True
