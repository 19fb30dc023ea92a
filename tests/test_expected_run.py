"""A tiny run gives the same files as the stored expectation (tests/fixtures/expected_run/snapshot.json).

The test fails if any output file's text changes, a number moves beyond a relative 1%, or a file appears
or disappears. What is normalised away (wall times, time stamps, the absolute run folder) is listed in
tests/run_manifest.py; the tolerance absorbs what differs between CPUs (float sums over AVX2 or AVX-512
kernels), which exact hashes of the same files did not. Regenerate the expectation, only for a deliberate
change of outputs, with `python tests/test_expected_run.py write`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_manifest import compare, manifest, snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "expected_run" / "snapshot.json"
# weighted_sft with a likelihood reward trains every iteration on the random model (it never answers
# correctly), so the scoring, build and training stages all write something.
ARGS = ["model=tiny-random", "data.limit=8", "trainer.iterations=2", "trainer.samples_per_question=2",
        "trainer.max_new_tokens=8", "eval.max_new_tokens=8", "trainer.val_limit=4", "progress=false",
        "trainer.strategy=weighted_sft", "trainer.reward=answer_logprob", "trainer.lr=1e-2",
        "trainer.train_limit=8"]  # pinned: the manifest does not follow changes of the laptop defaults
# One thread: float sums then come out the same on machines with different numbers of cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}


def starloop(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starloop.cli", *argv], capture_output=True, text=True,
                          timeout=600, env=ENV, check=False)


def run_train(out: Path) -> dict[str, str]:
    r = starloop("train", *ARGS, f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return manifest(out)


def differences(got: dict[str, str], want: dict[str, str]) -> list[str]:
    return ([f"missing: {p}" for p in sorted(want.keys() - got.keys())]
            + [f"unexpected: {p}" for p in sorted(got.keys() - want.keys())]
            + [f"changed: {p}" for p in sorted(want.keys() & got.keys()) if want[p] != got[p]])


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("expected") / "run"
    return out, run_train(out)


def test_a_tiny_run_writes_the_stored_files(loop_run):
    want = json.loads(FIXTURE.read_text())
    got = snapshot(loop_run[0])
    assert differences(dict.fromkeys(got, ""), dict.fromkeys(want, "")) == []  # the same files
    assert compare(got, want)[:10] == []


def test_the_stored_comparison_sees_a_moved_number_and_a_changed_word(loop_run):
    want = json.loads(FIXTURE.read_text())
    got = json.loads(json.dumps(want))
    rows = got["iter_1/generations.csv"]
    col = next(i for i, c in enumerate(rows[1]) if isinstance(c, float) and c != 0)
    rows[1][col] *= 1 + 1e-4  # within the tolerance: another CPU's rounding
    assert compare(got, want) == []
    rows[1][col] *= 1.05
    rows[2][0] = rows[2][0] + "x"
    assert len(compare(got, want)) == 2


def test_the_manifest_sees_a_changed_and_a_missing_file(loop_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(loop_run[0], copy)
    gens = copy / "iter_1" / "generations.csv"
    gens.write_text(gens.read_text().replace("mmlu/", "mmlu-x/", 1))
    (copy / "iter_2" / "train" / "log.jsonl").unlink()
    assert differences(manifest(copy), loop_run[1]) == ["missing: iter_2/train/log.jsonl",
                                                         "changed: iter_1/generations.csv"]


def test_the_stages_run_one_by_one_give_the_files_of_the_loop(loop_run, tmp_path):
    """`starloop stage` for each stage of each iteration, in a folder holding only the run's claim (its
    config.yaml, run.json and lock file), writes the same files as the loop."""
    import shutil

    import torch
    from cli_helpers import run_cli

    out = tmp_path / "staged"
    out.mkdir()
    for name in ("config.yaml", "run.json", ".lock"):
        shutil.copy(loop_run[0] / name, out / name)
    plan = [("validate", 0)] + [(s, k) for k in (1, 2) for s in ("sample", "score", "build", "train", "validate")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage, k in plan:
            code, _, err = run_cli(["stage", stage, f"out={out}", f"iteration={k}", "progress=false"])
            assert code == 0, (stage, k, err[-2000:])
    finally:
        torch.set_num_threads(threads)
    assert differences(manifest(out), loop_run[1]) == []


def test_a_run_preloading_the_generations_of_another_trains_on_the_same_data(loop_run, tmp_path):
    """trainer.preload_data_for_training: the preloaded file stands for iteration 1's samples; the score
    stage writes it (with its reward columns) as iter_1/generations.csv and the later stages read that."""
    ref = loop_run[0] / "iter_1"
    out = tmp_path / "preloaded"
    r = starloop("train", *ARGS, "trainer.iterations=1", f"trainer.preload_data_for_training={ref / 'generations.csv'}",
                 f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "iter_1" / "sample").exists()  # nothing sampled
    got, want = manifest(out), loop_run[1]
    for f in ("generations.csv", "train_data.jsonl", "train/log.jsonl", "train/adapter/adapter_model.safetensors"):
        assert got[f"iter_1/{f}"] == want[f"iter_1/{f}"], f


if __name__ == "__main__" and sys.argv[1:] == ["write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run_train(Path(d) / "run")
        m = snapshot(Path(d) / "run")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(m, indent=0, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE} ({len(m)} files)")
