"""Every config key is documented; docs/configuration.md is current; every preset composes and validates."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from starloop import config
from starloop.errors import ConfigError
from starloop.hydra_config import GROUP_OPTIONS, class_docs, describe_config, option_names

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_of_every_config_dataclass_has_a_comment():
    docs = class_docs()
    classes = [c for c in vars(config).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == config.__name__
               and not c.__name__.startswith("_")]  # _TrainerBase is documented through TrainerConfig
    assert {c.__name__ for c in classes} == set(docs)
    for cls in classes:
        documented = {f.key.rsplit(".", 1)[-1]: f.doc for f in docs[cls.__name__][1]}
        for f in dataclasses.fields(cls):
            assert documented.get(f.name), f"{cls.__name__}.{f.name} has no comment line in config.py"


def test_documented_keys_are_the_composed_keys():
    from starloop.cli import compose
    from starloop.report import flatten

    cfg = dataclasses.asdict(compose([]))
    documented = {f.key for _, fields in class_docs().values() for f in fields}
    composed = set(flatten(cfg)) | {k for k in cfg}  # leaves and the group nodes themselves
    assert {k for k in composed if "." in k} <= documented
    assert {k for k in cfg if not isinstance(cfg[k], dict)} <= documented


def test_configuration_md_is_current():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == describe_config(), "docs/configuration.md is stale: run python scripts/gen_config_docs.py"


def test_gen_config_docs_check_passes():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("group", ["model", "data", "prompt", "trainer", "logger", "launcher", "experiment"])
def test_every_option_of_every_group_composes_and_validates(group):
    from starloop.cli import compose

    names = option_names(group)
    assert names, group
    for name in names:
        if group == "launcher" and name != "local":
            pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
        compose([f"{group}={name}"])


def test_presets_change_only_what_they_name():
    for group, options in GROUP_OPTIONS.items():
        for name, node in options.items():
            default = type(node)()
            changed = {f.name for f in dataclasses.fields(node) if getattr(node, f.name) != getattr(default, f.name)}
            assert len(changed) <= 3, (group, name, changed)


def test_experiments_carry_the_notes_hyperparameters():
    from starloop.cli import compose

    dpo = compose(["experiment=english_dpo"])
    t = dpo.trainer
    assert (dpo.model.name, dpo.data.name, t.strategy) == ("llama-3.1-8b", "mmlu", "dpo")
    assert (t.lr, t.dpo_beta, t.train_batch_size, t.grad_accum, t.samples_per_question) == (5e-6, 0.1, 6, 4, 3)
    assert (t.lora_r, t.warmup_steps, t.weight_decay) == (64, 45, 0.0)
    for name in option_names("experiment"):  # real experiments use every question, not the laptop default
        c = compose([f"experiment={name}"])
        assert c.trainer.train_limit is None and c.trainer.val_limit is None, name
    yo = compose(["experiment=yoruba_translate"])
    assert (yo.data.name, yo.data.language, yo.prompt.strategy) == ("mmmlu", "YO_NG", "translate")
    afr = compose(["experiment=afr_sft"])
    assert afr.data.name == "mmlu-afr" and afr.prompt.strategy == "native"
    rpo = compose(["experiment=english_iterative_rpo"]).trainer  # Pang et al.: previous policy as reference
    assert (rpo.strategy, rpo.dpo_nll_weight, rpo.restart_from_base, rpo.dpo_reference) == ("dpo", 1.0, False,
                                                                                              "previous")
    star = compose(["experiment=english_star"]).trainer  # STaR: 40 steps, +20% per iteration, rationalization
    assert (star.train_steps, star.steps_growth, star.rationalize, star.restart_from_base) == (40, 1.2, True, True)
    # a command-line override still wins over the experiment
    assert compose(["experiment=english_dpo", "trainer.lr=1e-5"]).trainer.lr == 1e-5
    assert compose(["experiment=english_dpo", "trainer=reinforce"]).trainer.strategy == "reinforce"


def test_unknown_option_names_the_group_and_the_choices():
    from starloop.cli import compose

    with pytest.raises(ConfigError, match=r"'experiment'.*english_dpo") as e:
        compose(["experiment=nope"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"'trainer'.*reinforce, sft, star, weighted_sft"):
        compose(["trainer=nope"])


def test_experiments_document_themselves():
    from starloop.hydra_config import yaml_description, yaml_options

    for group in ("experiment", "launcher"):
        for name, text in yaml_options(group).items():
            assert text.startswith("# @package _global_"), name
            assert len(yaml_description(text)) > 40, f"{group}/{name}.yaml needs a leading comment"
