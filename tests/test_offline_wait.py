"""experiments/offline_wait.sh: returns when the runs end (not when its time is up), packs what they wrote
without the weights, and says "still running" (exit 3) when they have not ended."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "offline_wait.sh"


def _res(tmp_path: Path, done: bool) -> Path:
    res = tmp_path / "res"
    run = res / "qwen15" / "en-x"
    (run / "iter_1" / "val").mkdir(parents=True)
    (run / "iter_1" / "adapter").mkdir()
    (run / "iter_1" / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (run / "iter_1" / "val" / "generations.csv").write_text("question_id,correct\nq0,True\n")
    for ev in ("know-logit0", "logit-en-x", "know-cot"):  # two letter-logit evaluations, one generating
        (res / "qwen15" / ev).mkdir()
        (res / "qwen15" / ev / "generations.csv").write_text("question_id,correct\nq0,True\n")
        (res / "qwen15" / ev / "metrics.json").write_text("{}")
    deep = res / "qwen15" / "logit-en-x" / "iter_1" / "sample"  # a training run's samples: not packed
    deep.mkdir(parents=True)
    (deep / "generations.csv").write_text("question_id\nq0\n")
    lines = [{"iteration": k, "split": "val", "language": "en", "accuracy": a} for k, a in ((0, 0.364), (1, 0.5))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (res / "qwen15" / "jobs.tsv").write_text("en-x\t0\t12\tstarloop train ...\n")
    (res / "driver.log").write_text("[0 s] converting\rbar 10%|#\rbar 100%|##\n[9 s] qwen15.sh\n")
    if done:
        (res / "ALL_DONE").touch()
    return res


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=60)


def test_returns_at_all_done_and_packs_without_weights(tmp_path):
    res, out = _res(tmp_path, done=True), tmp_path / "out"
    out.mkdir()
    t0 = time.time()
    r = _run(str(res), "600", str(out))
    assert r.returncode == 0, r.stderr
    assert time.time() - t0 < 30  # not the 600 s it was allowed
    assert "en-x 0:36.4 1:50.0" in r.stdout and "ALL_DONE" in r.stdout
    assert "10%" not in r.stdout and "[9 s] qwen15.sh" in r.stdout
    with tarfile.open(out / "res.tgz") as t:
        names = t.getnames()
    assert "qwen15/en-x/metrics.jsonl" in names and "driver.log" in names
    assert not [n for n in names if "adapter" in n or n.endswith("generations.csv")]
    with tarfile.open(out / "val.tgz") as t:
        assert sorted(t.getnames()) == ["qwen15/en-x/iter_1/val/generations.csv",
                                        "qwen15/know-logit0/generations.csv", "qwen15/logit-en-x/generations.csv"]


def test_says_still_running_when_time_is_up(tmp_path):
    r = _run(str(_res(tmp_path, done=False)), "0")
    assert r.returncode == 3 and "still running" in r.stdout


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    for args, word in (((str(tmp_path / "nope"), "5"), "no such folder"), ((str(tmp_path), "soon"), "SECONDS"),
                       ((str(tmp_path), "5", str(tmp_path / "missing")), "no such folder"), ((), "usage")):
        r = _run(*args)
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1
