"""docs/extending.md's worked examples, executed: its code blocks are added to a copy of the package the
way the page says (a module plus a registry line each), their tests run, and a tiny run uses all three
(the positive_pg strategy, the answer_prob reward, the SciQ source read from a local copy in the hub
schema) on the random-weight model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(encoding="utf-8"), re.DOTALL)


def insert_after(path: Path, anchor: str, text: str) -> None:
    s = path.read_text(encoding="utf-8")
    assert anchor in s, f"{path}: {anchor!r} not found (the page's registry instructions no longer hold)"
    path.write_text(s.replace(anchor, anchor + text, 1), encoding="utf-8")


def package_with_the_examples(tmp: Path) -> Path:
    strategy, _, reward, _, source = code_blocks()
    src = tmp / "src"
    shutil.copytree(ROOT / "src" / "starloop", src / "starloop", ignore=shutil.ignore_patterns("__pycache__"))
    pkg = src / "starloop"
    # A strategy: its module, then the import and the tuple entry in strategies/__init__.py.
    (pkg / "strategies" / "positive_pg.py").write_text(strategy, encoding="utf-8")
    insert_after(pkg / "strategies" / "__init__.py", "from starloop.strategies import dpo, grpo,", " positive_pg,")
    insert_after(pkg / "strategies" / "__init__.py", "    grpo.STRATEGY,\n", "    positive_pg.STRATEGY,\n")
    # A reward: the function above the registry, its line in REWARDS.
    function, _, registry = reward.partition("REWARDS = {")
    entry = next(ln for ln in registry.splitlines() if '"answer_prob"' in ln)
    rewards = pkg / "rewards.py"
    s = rewards.read_text(encoding="utf-8")
    s = s.replace("# The model-scored rewards", function.strip() + "\n\n\n# The model-scored rewards", 1)
    rewards.write_text(s, encoding="utf-8")
    insert_after(rewards, "REWARDS: dict[str, Callable[[RewardInputs], Tensor]] = {\n", entry + "\n")
    # A source: its module, then the import and the tuple entry in data/sources/__init__.py.
    (pkg / "data" / "sources" / "sciq.py").write_text(source, encoding="utf-8")
    insert_after(pkg / "data" / "sources" / "__init__.py", "from starloop.data.sources import afrimmlu,", " sciq,")
    insert_after(pkg / "data" / "sources" / "__init__.py", "    mmlu_pro.SOURCE,\n", "    sciq.SOURCE,\n")
    return src


def sciq_copy(folder: Path) -> Path:
    """A local copy of allenai/sciq in the hub schema: a few rows per split."""
    folder.mkdir()
    for split, n in (("train", 6), ("validation", 4), ("test", 2)):
        rows = [{"question": f"{split} question {i}: which gas do plants take in?", "distractor1": "oxygen",
                 "distractor2": "helium", "distractor3": "neon", "correct_answer": "carbon dioxide",
                 "support": ""} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_the_worked_examples_run_as_written(tmp_path):
    src = package_with_the_examples(tmp_path)
    data = sciq_copy(tmp_path / "sciq")
    _, strategy_test, _, reward_test, _ = code_blocks()
    out = tmp_path / "run"
    script = "\n".join([
        "import pytest, torch",
        "from starloop.rewards import answer_prob_reward",
        strategy_test, reward_test,
        "test_only_positive_advantages_train()",
        "test_answer_prob_by_hand()",
        "from starloop.config import DataConfig",
        "from starloop.data import load_questions",
        f"qs = load_questions(DataConfig(name='sciq', path={str(data)!r}), 'train')",
        "assert len(qs) == 6 and all(q.choices[q.answer] == 'carbon dioxide' for q in qs)",
        "from starloop.cli import main",
        (f"main(['train', 'model=tiny-random', 'data=sciq', 'data.path={data}', 'trainer.strategy=positive_pg',"
         "      'trainer.reward=answer_prob', 'trainer.iterations=1', 'trainer.samples_per_question=2',"
         "      'trainer.max_new_tokens=6', 'eval.max_new_tokens=6', 'progress=false', 'trainer.lr=1e-2',"
         f"      'out={out}'])"),
    ])
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                       check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    header = (out / "iter_1" / "generations.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "answer_prob" in header.split(",")
    assert json.loads((out / "iter_1" / "train" / "DONE").read_text())["n_units"] > 0
