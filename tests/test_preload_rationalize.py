"""trainer.preload_data_for_training with trainer.rationalize: the preloaded file stands for iteration 1's
samples only; the hinted samples of the questions none of them solved are still drawn (by iteration 0's
model) and trained on, as in a run that samples for itself. Before this was fixed, a preloading run with
rationalization skipped the hinted samples and trained exactly like sft."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run_manifest import manifest
from test_expected_run import starloop

ARGS = ["model=tiny-random", "data.limit=8", "trainer.iterations=1", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=8", "eval.max_new_tokens=8", "trainer.val_limit=2", "trainer.train_limit=4",
        "progress=false", "trainer.strategy=sft", "trainer.rationalize=true"]


def test_a_preloading_run_still_rationalizes_the_unsolved_questions(tmp_path):
    own, pre = tmp_path / "own", tmp_path / "preloaded"
    r = starloop("train", *ARGS, f"out={own}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (own / "iter_1" / "rationalize" / "generations.csv").exists()  # the random model solves nothing
    r = starloop("train", *ARGS, f"trainer.preload_data_for_training={own / 'iter_1' / 'sample' / 'generations.csv'}",
                 f"out={pre}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (pre / "iter_1" / "sample").exists()  # the preload stands for the samples
    got, want = manifest(pre), manifest(own)
    for f in ("rationalize/generations.csv", "generations.csv", "train_data.jsonl"):
        assert got[f"iter_1/{f}"] == want[f"iter_1/{f}"], f
