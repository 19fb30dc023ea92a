"""`starloop stage NAME out=RUN iteration=K [overrides]`: one stage of an existing train run, with the run's
saved config (the command line's side; the stages themselves are in this package, `loop.run_stage` runs one)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from starloop.errors import ConfigError, StarloopError

STAGE_HELP = """usage: starloop stage {sample,score,build,train,validate} out=RUN iteration=K [overrides]

Runs one stage of iteration K of an existing `starloop train` run folder, reading the files of the stage
before it and the run's saved config.yaml (iteration 0 has only validate). A stage whose output exists
does nothing: delete its output to run it again. Only overrides that do not change results are accepted
(progress, logger, eval.batch_size, trainer.gen_batch_size, trainer.iterations, deterministic).
docs/extending.md lists what each stage reads and writes."""


def stage_config(out: str, overrides: Sequence[str]):
    """The saved config of the run in `out` (its config.yaml) with `overrides` (key=value) applied."""
    import yaml
    from omegaconf import OmegaConf

    from starloop.config import Config, validate

    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise StarloopError(f"{path}: missing (starloop stage runs a stage of an existing `starloop train` run "
                            "folder)")
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        node = OmegaConf.merge(OmegaConf.structured(Config), saved, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(node)
    except Exception as e:  # noqa: BLE001 - a damaged file or a bad override: one line naming it
        key = getattr(e, "full_key", None) or str(path)
        raise ConfigError(key, str(e).strip().splitlines()[0]) from None
    cfg.out = str(out)
    validate(cfg)
    return cfg


def main(rest: list[str]) -> None:
    """`starloop stage NAME out=RUN iteration=K [overrides]`."""
    from starloop.loop import run_stage
    from starloop.reproducibility import deterministic_kernels

    name = rest[0] if rest and "=" not in rest[0] else None
    args = dict(a.partition("=")[::2] for a in rest[1 if name else 0:])
    if name is None:
        raise ConfigError("stage", "name the stage: starloop stage sample|score|build|train|validate out=RUN "
                                   "iteration=K")
    for key in ("out", "iteration"):
        if not args.get(key):
            raise ConfigError(key, f"starloop stage {name} needs {key}=")
    out, k = args.pop("out"), args.pop("iteration")
    if not k.isdigit():
        raise ConfigError("iteration", f"{k!r} is not an iteration number")
    cfg = stage_config(out, [f"{a}={b}" for a, b in args.items()])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        with deterministic_kernels(cfg.deterministic):
            run_stage(cfg, name, int(k))
    except StarloopError:
        raise
    except Exception as exc:  # out of memory and a full disk become one line; the rest propagates
        from starloop.cli import resource_error

        e = resource_error(exc)
        if e is None:
            raise
        raise e from None
