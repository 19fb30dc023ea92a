"""Registers the config dataclasses and their group options in Hydra's ConfigStore; documents the keys.

Group options are presets: each changes only the fields that differ from the dataclass defaults
(which stay the only home of defaults). Groups that must also touch Hydra's own settings (`launcher`)
or several groups at once (`experiment`) are YAML files under `starloop/configs/<group>/`.

`describe_config()` renders docs/configuration.md from the comments above each field in config.py
(`python scripts/gen_config_docs.py` writes it; a test checks that it is current and complete).
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starloop import config as config_module
from starloop.config import (
    CHOICES,
    RANGES,
    Config,
    DataConfig,
    LoggerConfig,
    ModelConfig,
    PromptConfig,
    TrainerConfig,
)
from starloop.data.sources import SOURCES

GROUP_OPTIONS: dict[str, dict[str, object]] = {
    "model": {
        "smollm2-135m": ModelConfig(),
        "tiny-random": ModelConfig(name="tiny-random"),
        "llama-3.1-8b": ModelConfig(name="llama-3.1-8b"),
        "qwen2.5-0.5b": ModelConfig(name="qwen2.5-0.5b"),
        "custom": ModelConfig(),  # `model=PATH` is rewritten to model=custom model.name=PATH
    },
    # One preset per data source (starloop/data/sources), in its default language.
    "data": {name: DataConfig(name=name, language=s.default_language) for name, s in SOURCES.items()},
    "prompt": {
        "native": PromptConfig(),
        "english": PromptConfig(strategy="english"),
        "translate": PromptConfig(strategy="translate"),
    },
    # The strategy presets set what makes the strategy work out of the box; every other key keeps its
    # default and can still be overridden (`trainer=dpo trainer.dpo_beta=0.3`).
    "trainer": {
        # Rejection-sampling fine-tuning on the correct rationales (STaR without rationalization).
        "sft": TrainerConfig(),
        # STaR (Zelikman et al. 2022): SFT on correct rationales plus rationalizations with the gold hint.
        "star": TrainerConfig(rationalize=True),
        # DPO on (correct, wrong) rationale pairs of a question; LoRA DPO wants a small learning rate.
        "dpo": TrainerConfig(strategy="dpo", lr=1e-5),
        # GRPO-style group-normalised advantages on the answer-likelihood reward.
        "grpo": TrainerConfig(strategy="grpo", lr=1e-5, reward="answer_logprob"),
        # REINFORCE with a leave-one-out baseline on the correctness reward.
        "reinforce": TrainerConfig(strategy="reinforce", lr=1e-5),
        # SFT weighted by softmax(log p(answer | x, z) / lambda): the max-entropy target of the notes.
        "weighted_sft": TrainerConfig(strategy="weighted_sft", reward="answer_logprob"),
    },
    "logger": {
        "local": LoggerConfig(),
        "wandb": LoggerConfig(name="wandb"),
    },
}

# Groups whose options are YAML files in starloop/configs/<group>/ (they set Hydra keys or several groups).
YAML_GROUPS = ("launcher", "experiment")

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


def yaml_options(group: str) -> dict[str, str]:
    """{option name: YAML text} of a YAML group (`launcher`, `experiment`)."""
    folder = resources.files("starloop.configs") / group
    if not folder.is_dir():
        return {}
    return {p.name[: -len(".yaml")]: p.read_text(encoding="utf-8")
            for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".yaml")}


def option_names(group: str) -> list[str]:
    """Every option of a config group, dataclass presets and YAML files alike."""
    return sorted(set(GROUP_OPTIONS.get(group, ())) | set(yaml_options(group)))


# --- documentation -------------------------------------------------------------------------------

SECTION_PREFIX = "# ---"
# The dataclass of each top-level key, in the order the reference lists them.
GROUP_CLASSES = {f.name: f.type for f in dataclasses.fields(Config) if isinstance(f.type, str)
                 and f.type.endswith("Config")}


@dataclass
class FieldDoc:
    key: str  # dotted key, e.g. trainer.lr
    type: str
    default: object
    doc: str  # the comment lines above the field, joined
    section: str = ""  # the `# --- Title ---` heading the field sits under, if any


def _comment_block(lines: list[str], lineno: int) -> tuple[str, str]:
    """(doc, section) from the comment lines directly above source line `lineno` (1-based)."""
    doc: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#") and not lines[i].strip().startswith(SECTION_PREFIX):
        doc.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    section = ""
    for j in range(i, -1, -1):  # nearest section heading above, within the class body
        s = lines[j].strip()
        if s.startswith("class "):
            break
        if s.startswith(SECTION_PREFIX):
            section = s.strip("#- ").strip()
            break
    return " ".join(doc), section


def class_docs() -> dict[str, tuple[str, list[FieldDoc]]]:
    """{class name: (docstring, field docs)} of every config group's dataclass, from its source comments.

    A class's fields are read from every dataclass it inherits too, in field order, wherever that class
    is written (TrainerConfig inherits the training strategies' config dataclasses)."""
    classes = {name: obj for name, obj in vars(config_module).items()
               if dataclasses.is_dataclass(obj) and isinstance(obj, type) and obj.__module__ == config_module.__name__
               and not name.startswith("_")}
    prefix = {cls: key for key, cls in GROUP_CLASSES.items()}
    out: dict[str, tuple[str, list[FieldDoc]]] = {}
    for name, cls in classes.items():
        defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
        found: dict[str, FieldDoc] = {}
        for base in reversed(cls.__mro__):
            node, lines = _class_node(base)
            if node is None:
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    fname = stmt.target.id
                    doc, section = _comment_block(lines, stmt.lineno)
                    key = f"{prefix[name]}.{fname}" if name in prefix else fname
                    found[fname] = FieldDoc(key, ast.unparse(stmt.annotation), defaults.get(fname), doc, section)
        fields = [found[f.name] for f in dataclasses.fields(cls)]
        node, _ = _class_node(cls)
        out[name] = ((ast.get_docstring(node) if node else None) or "", fields)
    return out


def _class_node(cls: type) -> tuple[ast.ClassDef | None, list[str]]:
    """The ClassDef of a dataclass in its source file, and that file's lines; (None, []) for others."""
    import inspect
    import sys

    if not dataclasses.is_dataclass(cls):
        return None, []
    path = inspect.getsourcefile(sys.modules[cls.__module__])
    source = Path(path).read_text(encoding="utf-8") if path else ""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, source.splitlines()
    return None, []


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _fmt(v: object) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, list):
        return "`[" + ", ".join(str(x) for x in v) + "]`"
    if dataclasses.is_dataclass(v):
        return "(group)"
    return f"`{v}`"


def _allowed(key: str) -> str:
    if key in CHOICES:
        return ", ".join(CHOICES[key])
    if key in RANGES:
        lo, hi = RANGES[key]
        if lo is not None and hi is not None:
            return f"{lo} … {hi}"
        return f"≥ {lo}" if lo is not None else f"≤ {hi}"
    return ""


def _preset_changes(group: str, node: object) -> str:
    """`group.key=value` for each field a dataclass preset changes from the defaults."""
    base = dataclasses.asdict(type(node)())  # type: ignore[call-overload]
    now = dataclasses.asdict(node)  # type: ignore[call-overload]
    diff = [f"`{group}.{k}={_plain(v)}`" for k, v in now.items() if base[k] != v]
    return ", ".join(diff) or "(the defaults)"


def _plain(v: object) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def yaml_description(text: str) -> str:
    """The leading comment of a YAML preset, without the `# @package` line."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("#"):
            break
        if s.startswith("# @package"):
            continue
        out.append(s.lstrip("#").strip())
    return " ".join(x for x in out if x)


def describe_config() -> str:
    """docs/configuration.md: groups, presets and every key with its default, allowed values and meaning."""
    docs = class_docs()
    defaults = _primary_defaults()
    md = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python scripts/gen_config_docs.py` from the comments in src/starloop/config.py;",
        "     edit those comments, not this file. -->",
        "",
        "Every key has its default in one place, the dataclasses of `src/starloop/config.py`. Presets (config",
        "groups) only change some keys; anything can still be overridden on the command line:",
        "",
        "```bash",
        "starloop train model=llama-3.1-8b data=mmmlu trainer=dpo trainer.lr=5e-6 logger=wandb",
        "starloop train experiment=english_dpo                      # a whole experiment from the research notes",
        "starloop train -m trainer.lr=5e-6,1e-5 trainer.dpo_beta=0.1,0.3   # a 2x2 sweep, one folder per job",
        "starloop train -m launcher=slurm launcher.partition=gpu trainer.lr=5e-6,1e-5   # the same sweep on Slurm",
        "```",
        "",
        "Later overrides win: `experiment=...` first sets its groups and keys, then your own `key=value`s apply.",
        "Unknown keys, wrong types and out-of-range values stop the command before any model loads, with one",
        "line naming the key (exit code 2). Each run saves its resolved config as `<out>/config.yaml`; a sweep",
        "writes `<out>/<job>/config.yaml` per job and `<out>/sweep_summary.md` / `.csv` at the end.",
        "See [slurm.md](slurm.md) for cluster sweeps.",
        "`starloop stage NAME out=RUN iteration=K` runs one stage of a train run again from its files with the",
        "run's saved `config.yaml`; it accepts only the overrides a resumed run accepts (`progress`, `logger`,",
        "batch sizes, `trainer.iterations`).",
        "",
        "Logging: every run writes `<out>/metrics.jsonl` (validation per iteration and language),",
        "`<out>/iter_k/train/log.jsonl` (per optimizer step) and, whatever the logger,",
        "`<out>/logs/steps.jsonl` (steps as they happen) and `<out>/logs/metrics.csv`. `logger.tensorboard=true`",
        "adds `<out>/tensorboard/`; `logger=wandb` adds a W&B run (offline unless `logger.mode=online`) with the",
        "config, the same metrics and a table of `logger.table_rows` validation generations per iteration.",
        "`starloop report RUN [RUN ...] [--out DIR]` turns run, sweep and eval folders into a Markdown report",
        "with plots (accuracy with confidence intervals and the chance line, data quality, losses, DPO rewards).",
        "",
        "## Groups and presets",
        "",
        "| group | option | default | changes |",
        "|---|---|---|---|",
    ]
    for group, options in GROUP_OPTIONS.items():
        for name, node in options.items():
            mark = "yes" if defaults.get(group) == name else ""
            change = "`model.name=PATH_OR_HUB_ID` (written `model=PATH`)" if name == "custom" else \
                _preset_changes(group, node)
            md.append(f"| `{group}` | `{name}` | {mark} | {change} |")
    for group in YAML_GROUPS:
        for name, text in yaml_options(group).items():
            mark = "yes" if defaults.get(group) == name else ""
            md.append(f"| `{group}` | `{name}` | {mark} | {_cell(yaml_description(text))} |")
    md += ["", "Experiment presets live in `src/starloop/configs/experiment/*.yaml`; launcher presets in",
           "`src/starloop/configs/launcher/*.yaml`. Copy one to start a new experiment.", ""]
    order = [("", "Config")] + [(key, cls) for key, cls in GROUP_CLASSES.items()]
    for key, cls in order:
        doc, fields = docs[cls]
        title = "Top-level keys" if not key else f"`{key}`"
        md += [f"## {title}", ""]
        if doc:
            md += [" ".join(doc.split()), ""]
        section = None
        rows = [f for f in fields if not (not key and f.key in GROUP_CLASSES)]
        for f in rows:
            if f.section != section:
                if section is not None or f.section:
                    md += ["", f"### {f.section or 'Other'}", ""] if f.section else [""]
                md += ["| key | default | allowed | meaning |", "|---|---|---|---|"]
                section = f.section
            md.append(f"| `{f.key}` | {_fmt(f.default)} | {_allowed(f.key)} | {_cell(f.doc)} |")
        md.append("")
    return "\n".join(md).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def command_help(command: str) -> str:
    """`starloop train --help`: usage, then every config group and key with its default and meaning."""
    docs = class_docs()
    what = {"train": "run the STaR loop: sample rationales, keep the right ones, fine-tune LoRA, validate; a rerun "
                     "with the same out= resumes",
            "eval": "evaluate the model (or checkpoint=ADAPTER) on data.split; eval.limit questions by default"}
    lines = [f"usage: starloop {command} [key=value ...] [-m]", "", f"  {what[command]}.",
             f"  Output: out=DIR (default {'runs/train' if command == 'train' else 'runs/eval, runs/eval-logit'}).",
             "  Every key below can be set as key=value; groups take a preset (group=option).", ""]
    shown = ("model", "data", "prompt", "trainer", "logger", "launcher", "experiment") if command == "train" else \
        ("model", "data", "prompt", "logger")
    groups = ", ".join(f"{g}={'|'.join(o for o in option_names(g) if o != 'custom')}" for g in shown)
    lines += ["groups: " + groups + " (model= also takes a folder, a .gguf file or a hub id)", ""]
    _, top = docs["Config"]
    for f in top:
        if f.key not in GROUP_CLASSES:
            lines.append(f"  {f.key}={_help_value(f.default)}  {f.doc}")
    skip = {"train": (), "eval": ("trainer", "launcher")}[command]
    for key, cls in GROUP_CLASSES.items():
        if key in skip:
            continue
        lines += ["", f"{key}:"]
        for f in docs[cls][1]:
            lines.append(f"  {f.key}={_help_value(f.default)}  {f.doc}")
    lines += ["", "Full reference with allowed values: docs/configuration.md"]
    return "\n".join(lines)


def _help_value(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def _primary_defaults() -> dict[str, str]:
    """{group: default option} from the primary config's defaults list."""
    import yaml

    text = (resources.files("starloop.configs") / "starloop.yaml").read_text(encoding="utf-8")
    out = {}
    for item in yaml.safe_load(text).get("defaults", []):
        if isinstance(item, dict):
            for k, v in item.items():
                out[k.removeprefix("optional ")] = v
    return out
