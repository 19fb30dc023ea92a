"""Every strategy and every reward runs one tiny iteration end to end and writes its metrics."""

from __future__ import annotations

import json

import pytest

from starloop.cli import compose
from starloop.loop import run_train

TINY = ["model=tiny-random", "data.limit=4", "trainer.iterations=1", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=6", "eval.max_new_tokens=6", "trainer.val_limit=2", "progress=false",
        "trainer.skip_first_validation=true"]

CASES = [
    ["trainer.strategy=sft"],
    ["trainer.strategy=sft", "trainer.rationalize=true"],
    ["trainer.strategy=dpo"],
    ["trainer.strategy=dpo", "trainer.dpo_loss=ipo", "trainer.dpo_nll_weight=1.0"],
    *[["trainer.strategy=reinforce", f"trainer.reward={r}"]
      for r in ("correct", "answer_logprob", "quiet_star", "gain", "expected_likelihood")],
    ["trainer.strategy=weighted_sft", "trainer.reward=quiet_star", "trainer.baseline=mean"],
    ["trainer.strategy=grpo", "trainer.reward=answer_logprob"],
    ["trainer.strategy=sft", "trainer.require_gain=true"],
]


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_strategy_runs(tmp_path, overrides):
    cfg = compose([*TINY, *overrides, f"out={tmp_path / 'run'}"])
    lines = run_train(cfg)
    assert [ln["iteration"] for ln in lines] == [1]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["n"] == 2 and "accuracy" in rows[0]
    header = (tmp_path / "run" / "iter_1" / "generations.csv").read_text().splitlines()[0]
    reward = next((o.split("=")[1] for o in overrides if o.startswith("trainer.reward=")), "correct")
    if reward != "correct":
        assert reward in header
    if "strategy=sft" not in overrides[0] and "strategy=dpo" not in overrides[0]:
        # Reward strategies train on every sample, so even the random model's iteration trains.
        assert json.loads((tmp_path / "run" / "iter_1" / "train" / "DONE").read_text())["steps"] > 0


def test_every_registered_strategy_is_a_choice_and_has_a_case():
    from starloop.config import CHOICES
    from starloop.hydra_config import GROUP_OPTIONS
    from starloop.strategies import STRATEGIES

    assert CHOICES["trainer.strategy"] == tuple(STRATEGIES)
    assert {o.strategy for o in GROUP_OPTIONS["trainer"].values()} == set(STRATEGIES)
    assert {o[0].split("=")[1] for o in CASES} == set(STRATEGIES)


def test_no_strategy_name_branch_outside_the_strategies_package():
    """`strategy == "dpo"`-style branches belong in starloop/strategies: nowhere else may name one."""
    import re
    from pathlib import Path

    import starloop
    from starloop.strategies import STRATEGIES

    root = Path(starloop.__file__).parent
    names = "|".join(re.escape(n) for n in STRATEGIES)
    branch = re.compile(rf"""strategy\s*(==|!=|in|not in)\s*[\(\[{{]?\s*["'](?:{names})["']""")
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if "strategies" not in p.parts
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if branch.search(line)]
    assert not offenders, offenders
