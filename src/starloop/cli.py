"""Command line: `starloop train | eval | stage | report`, Hydra overrides and multirun sweeps.

    starloop eval model=tiny-random data.limit=8 out=runs/smoke
    starloop train -m trainer.lr=1e-5,2e-5 trainer.dpo_beta=0.1,0.3
    starloop stage score out=runs/train iteration=2
    starloop report runs/a runs/b

Overrides are validated (unknown keys, wrong types, out-of-range values) before Hydra starts or any
model loads; errors print one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from starloop.errors import ConfigError, DataError, StarloopError
from starloop.reproducibility import CUBLAS_WORKSPACE

COMMANDS = ("train", "eval", "stage", "report")
USAGE = """usage: starloop {train,eval,stage,report} [key=value ...] [-m]

  starloop eval [overrides]      evaluate a model or checkpoint (eval.mode=generate|logit)
  starloop train [overrides]     run the STaR loop (trainer.strategy=sft|dpo|reinforce|weighted_sft)
  starloop stage NAME out=RUN iteration=K [overrides]
                                 run one stage (sample|score|build|train|validate) of iteration K of an
                                 existing train run, from its files and its saved config.yaml
  starloop report RUN [RUN ...]  write a Markdown report with plots for run folders

common overrides: model=smollm2-135m|qwen2.5-0.5b|llama-3.1-8b|tiny-random|PATH|HUB_ID  data=mmlu|mmlu-afr|...
  data.path=DIR data.split=val data.limit=N data.language=zu eval.mode=logit eval.limit=N out=DIR seed=0
  checkpoint=RUN/iter_K (eval an adapter)  progress=false  trainer=sft|star|dpo|reinforce|weighted_sft
  prompt=native|english|translate  logger=local|wandb  experiment=english_dpo|english_sft|yoruba_sft|...
  -m / --multirun with comma-separated values runs a sweep (one folder per job, then sweep_summary.md);
  launcher=slurm (with -m) runs the jobs on Slurm.
  Default out=: runs/train, runs/eval, runs/eval-logit, runs/eval-<checkpoint>.
  `starloop train --help` / `starloop eval --help`: every key with its default and meaning;
  `starloop report --help`: its options; docs/configuration.md; Slurm: docs/slurm.md."""

MAX_VALIDATED_SWEEP = 256


def _group_options(group: str) -> set[str]:
    from starloop.hydra_config import option_names

    return set(option_names(group))


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
        if o.startswith(("hydra.", "hydra/")):
            continue
        try:
            parsed = parser.parse_override(o)
        except Exception as e:  # noqa: BLE001 - hydra raises its own OverrideParseException
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

    _check_added_keys(overrides)
    register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="starloop.configs", version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="starloop", overrides=list(overrides), return_hydra_config=True)
        except Exception as e:  # noqa: BLE001 - any composition error is the user's override, said in one line
            raise _config_error(overrides, e) from None
    from omegaconf import open_dict

    with open_dict(cfg):
        hydra_node = cfg.pop("hydra")
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as e:  # noqa: BLE001 - a value of the wrong type for its key, said in one line
        raise _config_error(overrides, e) from None
    validate(obj)
    obj._sweep = str(hydra_node.get("mode")) == "RunMode.MULTIRUN"  # an experiment preset may set the mode
    obj._launcher = str(OmegaConf.select(hydra_node, "launcher._target_", default="") or "")
    return obj


def _check_added_keys(overrides: Sequence[str]) -> None:
    """`+key=v` / `++key=v` must still name a config key: Hydra would add an unknown one silently."""
    import importlib.resources
    from dataclasses import fields, is_dataclass

    from starloop.config import Config
    from starloop.hydra_config import GROUP_OPTIONS

    res = importlib.resources.files("starloop.configs")
    groups = set(GROUP_OPTIONS) | {p.name for p in res.iterdir() if p.is_dir() and not p.name.startswith("_")}
    for o in overrides:
        if not o.startswith("+"):
            continue
        key = o.lstrip("+").partition("=")[0].strip()
        if key.startswith("hydra") or key in groups:
            continue
        obj: object = Config()
        for part in key.split("."):
            if not is_dataclass(obj) or part not in {f.name for f in fields(obj)}:
                raise ConfigError(key, "unknown key")
            obj = getattr(obj, part)


def _config_error(overrides: Sequence[str], err: Exception) -> ConfigError:
    """One line naming the key, from Hydra's and OmegaConf's multi-line messages."""
    cause = err.__cause__ or err
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(err).__name__
    full_key = getattr(cause, "full_key", None)
    if "Could not find" in str(err):  # an unknown group option: name the options
        m = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if m and m.group(1) == "hydra" and "submitit" in m.group(2):
            return ConfigError("launcher", "this launcher needs hydra-submitit-launcher: pip install "
                                           "'starloop[slurm]'")
        if m:
            from starloop.hydra_config import option_names

            opts = ", ".join(option_names(m.group(1)))
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
    else:
        argv.append("hydra.output_subdir=null")  # the run folder holds config.yaml; nothing before the claim
    old = sys.argv
    sys.argv = argv
    try:
        task()
    finally:
        sys.argv = old


def _task(command: str, dcfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from starloop.reproducibility import deterministic_kernels
    from starloop.runstate import RunLock

    cfg = OmegaConf.to_object(dcfg)
    hc = HydraConfig.get()
    sweep_job = str(hc.mode) == "RunMode.MULTIRUN"
    if sweep_job:
        cfg.out = hc.runtime.output_dir  # each job of a sweep writes its own folder
        Path(cfg.out, "FAILED").unlink(missing_ok=True)  # a rerun of a failed job starts clean
    if hc.runtime.cwd and os.getcwd() != hc.runtime.cwd:
        # hydra.job.chdir=true: starloop writes only under out=, and relative paths (out=, data.path=, ...)
        # mean what they meant where the command was typed.
        os.chdir(hc.runtime.cwd)
    try:
        with RunLock(cfg.out), deterministic_kernels(cfg.deterministic):
            if command == "eval":
                from starloop.evaluate import run_eval

                run_eval(cfg)
            else:
                from starloop.loop import run_train

                run_train(cfg)
    except Exception as exc:
        e = exc if isinstance(exc, StarloopError) else resource_error(exc)
        if e is None:
            raise
        _error_line(f"error: {e}")
        if sweep_job:  # one failed job must not stop the sweep; sweep_summary.md lists it as failed
            from starloop.io import write_json

            write_json(Path(cfg.out, "FAILED"), {"error": str(e)})
            return
        sys.exit(e.exit_code)


def resource_error(exc: BaseException) -> StarloopError | None:
    """An out-of-memory error that no stage turned into advice (loading the model, say), a full disk or an
    over-long path: one line."""
    from starloop.oom import is_oom
    from starloop.runstate import disk_error

    if isinstance(exc, OSError) and disk_error(exc) is not None:
        return disk_error(exc)
    if not is_oom(exc):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return StarloopError(f"out of memory ({first}); another process may hold the device's memory, or lower "
                         "eval.batch_size, trainer.gen_batch_size and trainer.train_batch_size")


def _error_line(message: str) -> None:
    """Print one line to stderr; undecodable characters (bytes of a non-UTF-8 argument) are escaped."""
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    print(message.encode(enc, "backslashreplace").decode(enc, "replace"), file=sys.stderr, flush=True)


def _check_text(args: Sequence[str]) -> None:
    """Arguments must be text: bytes that are not UTF-8 arrive as lone surrogates and break YAML and files."""
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            key = a.partition("=")[0] if "=" in a else "overrides"
            raise ConfigError(key.encode("utf-8", "backslashreplace").decode("ascii", "replace"),
                              "value is not valid UTF-8 text") from None


def preflight(command: str, cfg, multirun: bool = False, seen: set[str] | None = None) -> None:
    """Check the inputs and the output folder before Hydra starts or any model loads (reads only).

    Bad data, preload files, checkpoints, an unusable output folder, a damaged run folder, and a folder
    that holds another command's run, another config or other questions are reported here (one line, exit
    code 2) with nothing written; the stages read the inputs again when they run, and the run checks its
    folder again under its lock before claiming it. `seen`: input sets already checked (sweeps).
    """
    from starloop.config import to_dict
    from starloop.data import load_questions
    from starloop.data.sources import SPECS
    from starloop.runstate import check_claim, check_out_path, check_run_folder

    d, t = cfg.data, cfg.trainer
    check_out_path(cfg.out)
    if command == "train" and cfg.checkpoint:
        raise ConfigError("checkpoint", "is read by starloop eval only (starloop train starts from the base "
                                        "model); drop it, or evaluate the adapter with starloop eval checkpoint=")
    key = repr((command, d, t.preload_data_for_training, t.preload_data_for_val, t.train_limit, t.val_limit,
                cfg.eval.limit, cfg.checkpoint, cfg.prompt))
    questions = None
    local_data = d.name not in SPECS or d.path not in (None, "")  # hub downloads are left to the run itself
    if local_data:
        if command == "eval":
            from starloop.evaluate import eval_questions

            questions = {d.split: eval_questions(cfg)}
            if cfg.prompt.few_shot:
                load_questions(d, "dev")
        else:
            from starloop.stages.sampling import run_questions

            questions = run_questions(cfg)
    if seen is None or key not in seen:
        if command == "train":
            from starloop.records import read_samples
            from starloop.stages.sampling import check_preloads

            if questions is not None:
                check_preloads(cfg, questions)
            else:
                for path in (t.preload_data_for_training, t.preload_data_for_val):
                    if path and not read_samples(path):
                        raise DataError(path, "no rows (a header only): nothing to preload")
        _check_model(cfg.model)
        _check_against_model(command, cfg)
        if seen is not None:
            seen.add(key)
    if multirun:
        return  # each job of a sweep writes its own sub-folder, checked when it starts
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise StarloopError(f"{out}: output folder is not writable (a file of that name exists)")
    if command == "train":
        check_run_folder(out, t.strategy)
    check_claim(out, command, to_dict(cfg), questions)


def default_out(command: str, cfg, sweep: bool = False) -> str:
    """Each command's own folder under runs/, so that commands run one after another never share one:
    runs/train, runs/eval (runs/eval-logit in logit mode; + the checkpoint's path for an adapter)."""
    if command == "train":
        return "runs/train-sweep" if sweep else "runs/train"
    name = "eval" + ("-logit" if cfg.eval.mode == "logit" else "")
    if cfg.checkpoint:
        parts = [p for p in Path(cfg.checkpoint).parts if p not in ("/", ".", "..", "runs", "train", "adapter")]
        name += "-" + "-".join(parts[-2:] or ["checkpoint"])
    return f"runs/{name}" + ("-sweep" if sweep else "")


def _check_launcher(cfg, multirun: bool) -> None:
    """launcher=slurm submits the jobs of a -m sweep: refuse it without -m, and where Slurm is missing."""
    import shutil

    if "submitit" not in cfg._launcher or "Local" in cfg._launcher:
        return
    if not multirun:
        raise ConfigError("launcher", "launcher=slurm submits the jobs of a sweep: add -m (a single run with "
                                      "-m is a sweep of one job)")
    if shutil.which("sbatch") is None:
        raise ConfigError("launcher", "launcher=slurm needs Slurm, and sbatch is not on this machine's PATH: run "
                                      "on the cluster's login node, or use launcher=local")


def _check_against_model(command: str, cfg) -> None:
    """An eval checkpoint must fit the model, and LoRA's target layers must exist in it (checked on the
    model's weightless skeleton, before anything loads)."""
    from starloop.models import check_adapter_fits, check_lora_targets, model_skeleton, resolve_checkpoint

    adapter = resolve_checkpoint(cfg.checkpoint) if command == "eval" and cfg.checkpoint else None
    if adapter is None and (command != "train" or cfg.trainer.lora_target_modules == ["all-linear"]):
        return
    skeleton = model_skeleton(cfg.model)
    if skeleton is None:
        return  # checked after the model has loaded, still before the run folder is claimed
    if adapter is not None:
        check_adapter_fits(skeleton, adapter)
    if command == "train":
        check_lora_targets(skeleton, cfg.trainer.lora_target_modules)


def _check_model(m) -> None:
    """Device, dtype and a local model path, checked without loading anything (presets convert lazily)."""
    from pathlib import Path

    from starloop.models import PRESETS, check_hub_model, resolve_device, resolve_dtype, resolve_model_source

    device = resolve_device(m.device)
    resolve_dtype(m.dtype, device)
    check_hub_model(m)
    if m.name.endswith(".gguf"):
        if not Path(m.name).expanduser().is_file():
            raise ConfigError("model.name", f"GGUF file not found: {m.name}")
        resolve_model_source(m.name, m.gguf_file)  # converts it once (cached): a corrupt file fails here
    elif m.name not in ("tiny-random", "smollm2-135m", *PRESETS):
        resolve_model_source(m.name, m.gguf_file)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in COMMANDS and any(a in ("-h", "--help", "help") for a in rest):
        try:
            if command == "report":  # its own argparse help, wherever the flag stands among folder names
                from starloop.report import main as report_main

                with contextlib.suppress(SystemExit):
                    report_main(["--help"])
            elif command == "stage":
                from starloop.stages.command import STAGE_HELP

                print(STAGE_HELP)
            else:
                from starloop.hydra_config import command_help

                print(command_help(command))
            sys.stdout.flush()
        except BrokenPipeError:  # `starloop train --help | head`: the reader left; no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if command not in COMMANDS:
        _error_line(f"error: unknown command {command!r} (expected one of {', '.join(COMMANDS)})")
        sys.exit(2)
    import signal
    import threading

    from starloop.interrupt import Interrupted, raising_on_sigterm
    from starloop.runstate import EVAL_INTERRUPTED_MESSAGE, INTERRUPTED_MESSAGE

    # Preemption (Slurm sends SIGTERM first): unwind, abandon the write in progress.
    preemptible = command in ("train", "stage") and threading.current_thread() is threading.main_thread()
    try:
        with raising_on_sigterm() if preemptible else contextlib.nullcontext():
            _main(command, rest)
    except (Interrupted, KeyboardInterrupt) as e:
        _error_line(EVAL_INTERRUPTED_MESSAGE if command == "eval" else INTERRUPTED_MESSAGE)
        sys.exit(128 + (signal.SIGTERM if isinstance(e, Interrupted) else signal.SIGINT))


def _main(command: str, rest: list[str]) -> None:
    try:
        if command == "report":
            from starloop.report import main as report_main

            report_main(rest)
            return
        _check_text(rest)
        if command == "stage":
            from starloop.stages.command import main as stage_main

            stage_main(rest)
            return
        multirun = any(a in ("-m", "--multirun") for a in rest)
        overrides = rewrite_shorthands([a for a in rest if a not in ("-m", "--multirun")])
        checked: set[str] = set()
        combos = _expand_sweeps(overrides)
        if len(combos) > 1 and not multirun:  # Hydra would print a multi-line "Ambiguous value" and exit 0
            key = next(a.partition("=")[0] for a, b in zip(combos[0], combos[-1]) if a != b)
            raise ConfigError(key, "has several values (a sweep): add -m to run each, or write [a,b] for a list")
        if not any(o.lstrip("+").partition("=")[0] == "out" for o in overrides):
            first = compose(combos[0])
            multirun = multirun or first._sweep
            out = default_out(command, first, multirun)
            overrides.append(f"out={out}")
            combos = [[*c, f"out={out}"] for c in combos]
        for combo in combos:
            cfg = compose(combo)
            multirun = multirun or cfg._sweep
            _check_launcher(cfg, multirun)
            preflight(command, cfg, multirun, seen=checked)
            if cfg.deterministic:  # read by cuBLAS once, when this process first uses it: before any job runs
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    except StarloopError as e:
        _error_line(f"error: {e}")
        sys.exit(e.exit_code)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if multirun:
        _run_hydra(command, overrides, multirun)
    else:
        from starloop.runstate import RunLock

        try:
            lock = RunLock(cfg.out).__enter__()  # before Hydra writes anything into the folder
        except StarloopError as e:
            _error_line(f"error: {e}")
            sys.exit(e.exit_code)
        try:
            _run_hydra(command, overrides, multirun)
        finally:
            lock.__exit__(None, None, None)
    if multirun:
        _exit_if_jobs_failed(Path(cfg.out))


def _exit_if_jobs_failed(sweep_dir: Path) -> None:
    """Exit 2 with one line when some job of the sweep failed (each job's error is in its FAILED file)."""
    failed = sorted(p.parent.name for p in sweep_dir.glob("*/FAILED"))
    if failed:
        _error_line(f"error: {len(failed)} sweep job(s) failed ({', '.join(failed)}); see "
                    f"{sweep_dir / 'sweep_summary.md'}")
        sys.exit(2)


if __name__ == "__main__":
    main()
