"""A seeded sample of `bench/fuzz.py`'s broken inputs (the full run has 870): one line, exit code 2, nothing written."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PER_CATEGORY = {"dataset": 5, "hub": 2, "config": 6, "preload": 2, "checkpoint": 2, "run folder": 2, "output": 2,
                "ownership": 1, "numbers": 2, "resume": 2, "damaged": 3, "preload values": 3, "checkpoint fit": 2,
                "environment": 2}


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def sample(fuzz, tmp_path_factory):
    cases = fuzz.prepare(tmp_path_factory.mktemp("fuzz"), seed=0, scale=0.1)
    rng = random.Random(0)
    chosen = []
    for category, n in PER_CATEGORY.items():
        pool = [c for c in cases if c.category == category and not c.real]
        chosen += rng.sample(pool, min(n, len(pool)))
    return chosen


def test_broken_inputs_give_one_line_and_exit_2(fuzz, sample):
    assert len(sample) >= 20
    failed = [fuzz.describe(r) for r in (fuzz.run_case(c) for c in sample) if r.problems]
    assert not failed, "\n".join(failed)


def test_broken_inputs_as_real_processes(fuzz, sample):
    picks = [c for c in sample if not c.inprocess_only and c.category in ("dataset", "checkpoint")][:2]
    failed = [fuzz.describe(r) for r in (fuzz.run_case(c, subprocess_mode=True) for c in picks) if r.problems]
    assert not failed, "\n".join(failed)
