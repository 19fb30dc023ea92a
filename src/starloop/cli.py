"""Command line: `starloop train | eval | report`, Hydra overrides and multirun sweeps.

    starloop eval model=tiny-random data.limit=8 out=runs/smoke
    starloop train -m trainer.lr=1e-5,2e-5 trainer.dpo_beta=0.1,0.3
    starloop report runs/a runs/b

Overrides are validated (unknown keys, wrong types, out-of-range values) before Hydra starts or any
model loads; errors print one line and exit with code 2.
"""

from __future__ import annotations

import itertools
import re
import logging
import os
import sys
from collections.abc import Sequence

from starloop.errors import ConfigError, StarloopError

COMMANDS = ("train", "eval", "report")
USAGE = """usage: starloop {train,eval,report} [key=value ...] [-m]

  starloop eval [overrides]      evaluate a model or checkpoint (eval.mode=generate|logit)
  starloop train [overrides]     run the STaR loop (trainer.strategy=sft|dpo|reinforce|weighted_sft)
  starloop report RUN [RUN ...]  write a Markdown report with plots for run folders

common overrides: model=smollm2-135m|tiny-random|PATH|HUB_ID  data=mmlu|mmlu-afr|mmmlu|...
  data.path=DIR data.split=val data.limit=N data.language=zu eval.mode=logit out=DIR seed=0
  -m / --multirun with comma-separated values runs a sweep. See README.md for every key."""

MAX_VALIDATED_SWEEP = 256


def _group_options(group: str) -> set[str]:
    from starloop.hydra_config import GROUP_OPTIONS

    return set(GROUP_OPTIONS.get(group, ()))


def rewrite_shorthands(overrides: Sequence[str]) -> list[str]:
    """`model=PATH_OR_HUB_ID` (not a preset) becomes `model.name=...` on the default preset."""
    out = []
    models = _group_options("model")
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key == "model" and value not in models and "," not in value:
            out += ["model=custom", f"model.name={value}"]
        else:
            out.append(o)
    return out


def _expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """All combinations of a multirun's sweep values, as plain override lists (for validation)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    choices: list[list[str]] = []
    for o in overrides:
        if o.startswith("hydra.") or o.startswith("hydra/"):
            continue
        try:
            parsed = parser.parse_override(o)
        except Exception as e:  # hydra raises its own OverrideParseException
            raise ConfigError(o.partition("=")[0], f"cannot parse override {o!r}: {str(e).splitlines()[0]}") \
                from None
        if parsed.is_sweep_override():
            key = parsed.get_key_element()
            choices.append([f"{key}={v}" for v in parsed.sweep_string_iterator()])
        else:
            choices.append([o])
    combos = list(itertools.islice(itertools.product(*choices), MAX_VALIDATED_SWEEP))
    return [list(c) for c in combos]


def compose(overrides: Sequence[str]):
    """Compose and validate a config from overrides -> Config dataclass (raises ConfigError)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from starloop.config import validate
    from starloop.hydra_config import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="starloop.configs", version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="starloop", overrides=list(overrides))
        except Exception as e:
            raise _config_error(overrides, e) from None
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as e:
        raise _config_error(overrides, e) from None
    validate(obj)
    return obj


def _config_error(overrides: Sequence[str], err: Exception) -> ConfigError:
    """One line naming the key, from Hydra's and OmegaConf's multi-line messages."""
    cause = err.__cause__ or err
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(err).__name__
    full_key = getattr(cause, "full_key", None)
    if "Could not find" in str(err):  # an unknown group option: name the options
        m = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if m:
            from starloop.hydra_config import GROUP_OPTIONS

            opts = ", ".join(sorted(GROUP_OPTIONS.get(m.group(1), ())))
            return ConfigError(m.group(1), f"unknown option {m.group(2)!r} (choose from {opts})")
    if re.match(r"Key '.*' not in '", first):
        return ConfigError(full_key or "overrides", "unknown key")
    return ConfigError(full_key or "overrides", first)


def _run_hydra(command: str, overrides: list[str], multirun: bool) -> None:
    import hydra

    from starloop.hydra_config import register

    register()

    @hydra.main(config_path="pkg://starloop.configs", config_name="starloop", version_base="1.3")
    def task(cfg) -> None:
        _task(command, cfg)

    argv = [f"starloop-{command}", *overrides]
    if multirun:
        argv.append("--multirun")
    old = sys.argv
    sys.argv = argv
    try:
        task()
    finally:
        sys.argv = old


def _task(command: str, dcfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(dcfg)
    hc = HydraConfig.get()
    if str(hc.mode) == "RunMode.MULTIRUN":
        cfg.out = hc.runtime.output_dir  # each job of a sweep writes its own folder
    try:
        if command == "eval":
            from starloop.evaluate import run_eval

            run_eval(cfg)
        else:
            from starloop.loop import run_train

            run_train(cfg)
    except StarloopError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r} (expected one of {', '.join(COMMANDS)})", file=sys.stderr)
        sys.exit(2)
    try:
        if command == "report":
            from starloop.report import main as report_main

            report_main(rest)
            return
        multirun = any(a in ("-m", "--multirun") for a in rest)
        overrides = rewrite_shorthands([a for a in rest if a not in ("-m", "--multirun")])
        for combo in _expand_sweeps(overrides):
            compose(combo)
    except StarloopError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _run_hydra(command, overrides, multirun)


if __name__ == "__main__":
    main()
