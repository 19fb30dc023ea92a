"""experiments/qwen15.sh: which runs each documented split starts, and with what arguments (a stand-in for the
starloop command records them; nothing is trained)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/usr/bin/env bash
# Records its arguments; writes what the script waits for (the iteration-1 samples' DONE marker) and, for a
# training run, each iteration's adapter and training DONE marker. FAIL names a run that fails after training.
out=${@: -1}; out=${out#out=}
mkdir -p "$out/iter_1/sample" && touch "$out/iter_1/sample/DONE"
if [ "$1" = train ]; then
  for arg in "$@"; do case $arg in trainer.iterations=*) n=${arg#*=};; esac; done
  for k in $(seq 1 "${n:-1}"); do mkdir -p "$out/iter_$k/train/adapter" && touch "$out/iter_$k/train/DONE"; done
fi
echo "$*" > "$out.args"
[ "$(basename "$out")" != "${FAIL:-}" ]
"""


def _env(tmp_path: Path, **env: str) -> dict[str, str]:
    fake = tmp_path / "fake-starloop"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return os.environ | {"MODEL": "m.gguf", "RUNS": str(tmp_path / "runs"), "STARLOOP": str(fake)} | env


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "experiments" / "qwen15.sh")], capture_output=True, text=True,
                          timeout=120, check=False, env=_env(tmp_path, **env))


def split(tmp_path: Path, **env: str) -> dict[str, str]:
    r = run_script(tmp_path, **env)
    assert r.returncode == 0, r.stderr
    return {p.name.removesuffix(".args"): p.read_text() for p in (tmp_path / "runs").glob("*.args")}


@pytest.mark.parametrize(("env", "names"), [
    ({"LOW": "zu", "ONLY": "en-star|low-.*(wsft-correct|wsft-el$|gain)", "PAR": "2"},
     {"en-sft", "en-star", "low-zu-wsft-correct", "low-zu-wsft-el", "low-zu-sft-gain"}),
    ({"ITERS": "1", "ONLY": "en-(dpo|rpo|rloo|wsft-(logprob|correct|el$)|grpo|sft-gain)", "PAR": "5"},
     {"en-sft", "en-dpo", "en-rpo", "en-rloo", "en-grpo", "en-wsft-logprob", "en-wsft-correct", "en-wsft-el",
      "en-sft-gain"}),
    ({"ITERS": "1", "LOW": "zu", "LOWPAR": "2", "ONLY": "elmodel|^low-.*-sft$", "PAR": "2"},
     {"en-sft", "en-wsft-elmodel", "low-zu-sft", "low-zu-wsft-elmodel"}),
    # An escaped character and an interval, as grep -E reads them (an awk filter once read these otherwise).
    ({"ITERS": "1", "ONLY": r"^en-w(s){1}ft-el\w*$", "PAR": "2"}, {"en-sft", "en-wsft-el", "en-wsft-elmodel"}),
])
def test_each_split_starts_its_runs_and_no_other(tmp_path, env, names):
    assert set(split(tmp_path, **env)) == names


def test_label_dist_model_runs_reuse_en_sft_samples(tmp_path):
    args = split(tmp_path, ITERS="1", LOW="zu", ONLY="elmodel", PAR="2")
    en, zu = args["en-wsft-elmodel"], args["low-zu-wsft-elmodel"]
    for a in (en, zu):
        assert "trainer=weighted_sft trainer.reward=expected_likelihood trainer.label_dist=model" in a
    assert "trainer.preload_data_for_training=" in en and "en-sft/iter_1/sample/generations.csv" in en
    assert "data=mmlu-afr data.language=zu" in zu and "preload" not in zu
    assert "trainer.iterations=1" in args["en-sft"]


def test_a_bad_regular_expression_is_one_line_and_exit_2(tmp_path):
    r = run_script(tmp_path, ONLY="en-(dpo")
    assert r.returncode == 2 and r.stderr.strip() == "qwen15.sh: ONLY: not a regular expression: en-(dpo"
    assert not (tmp_path / "runs").exists()  # nothing claimed


def test_logit_scores_each_named_runs_last_adapter_on_its_own_data(tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "en-sft-gain").mkdir()  # a file name LOGIT's words must not be matched against
    r = subprocess.run(["bash", "-c", f'cd "{tmp_path}" && bash "$0"', str(ROOT / "experiments" / "qwen15.sh")],
                       capture_output=True, text=True, timeout=120, check=False, env=_env(
                           tmp_path, ITERS="10", ITERS_TABLE="1", LOW="zu", PAR="2", FAIL="low-zu-sft",
                           ONLY="^en-sft(-gain)?$|^low-zu-sft$|^know-logit0$|^afr-logit$",
                           LOGIT="en-sft en-sft-g* low-zu-sft en-dpo"))
    assert r.returncode == 0, r.stderr
    args = {p.name.removesuffix(".args"): p.read_text() for p in runs.glob("*.args")}
    assert {n for n in args if n.startswith("logit-")} == {"logit-en-sft-iter_10"}
    assert args["logit-en-sft-iter_10"].startswith("eval ") and "eval.mode=logit" in args["logit-en-sft-iter_10"]
    assert f"checkpoint={runs}/en-sft/iter_10 " in args["logit-en-sft-iter_10"] + " "  # 10 of 10, not 9
    assert "data=" not in args["logit-en-sft-iter_10"]
    # not run (ONLY leaves it out), failed, or not a run's name: one line each, and nothing scored
    for name in ("en-dpo", "low-zu-sft", "en-sft-g*"):
        assert f"logit-{name}: {runs}/{name} did not finish; not scored" in r.stderr
    assert {"know-logit0", "afr-logit"} <= set(args)


def test_logit_reads_the_language_of_a_low_language_run(tmp_path):
    runs = tmp_path / "runs"
    r = run_script(tmp_path, ITERS="1", LOW="zu", PAR="2", ONLY="^low-zu-sft$", LOGIT="low-zu-sft")
    assert r.returncode == 0, r.stderr
    args = (runs / "logit-low-zu-sft-iter_1.args").read_text()
    assert "data=mmlu-afr data.language=zu" in args and f"checkpoint={runs}/low-zu-sft/iter_1" in args
