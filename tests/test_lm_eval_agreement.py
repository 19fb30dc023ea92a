"""experiments/lm_eval_agreement.py: the question-by-question comparison and the --model resolution.

The harness itself (the optional `experiments` extra) is not needed: rows are built by hand here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from starloop.models import embedded_model_dir

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "lm_eval_agreement.py"
_spec = importlib.util.spec_from_file_location("lm_eval_agreement", _PATH)
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)

PROMPT = "The following are multiple choice questions (with answers) about x.\n\nQ?\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def _lm(ll, answer, prompt=PROMPT, letters=" A, B, C, D"):
    pick = max(range(4), key=lambda i: (ll[i], -i))
    return {"ll": ll, "answer": answer, "acc": float(pick == answer),
            "requests": [(prompt, c) for c in letters.split(",")]}


def _sl(logp, gold, prompt=PROMPT):
    pick = max(range(4), key=lambda i: (logp[i], -i))
    return {"letter": "ABCD"[pick], "gold": gold, "prompt": prompt, "logp": logp}


def test_compare_hand_computed():
    lm = {"q1": _lm([-1.0, -2.0, -3.0, -4.0], 0), "q2": _lm([-2.0, -1.5, -3.0, -1.0], 3)}
    sl = {"q1": _sl([-1.25, -2.0, -3.0, -4.0], "A"), "q2": _sl([-2.0, -1.25, -3.0, -1.5], "D")}
    r = agreement.compare(lm, sl, ["q1", "q2"])
    # q1: both pick A (gold); q2: lm-eval D (gold), starloop B.
    assert (r["lm_eval_acc"], r["starloop_acc"], r["agreement"], r["n_disagreements"]) == (1.0, 0.5, 0.5, 1)
    (d,) = r["disagreements"]
    assert (d["id"], d["lm_eval"], d["starloop"]) == ("q2", "D", "B")
    assert d["lm_eval_gap"] == pytest.approx(0.5)  # -1.0 - (-1.5)
    assert d["starloop_gap"] == pytest.approx(0.25)  # -1.25 - (-1.5)
    assert d["max_abs_logp_diff"] == pytest.approx(0.5)  # D: -1.0 vs -1.5
    assert r["max_abs_logp_diff"] == pytest.approx(0.5)
    assert r["mean_max_abs_logp_diff"] == pytest.approx((0.25 + 0.5) / 2)


@pytest.mark.parametrize("lm_row", [
    _lm([-1.0] * 4, 0, prompt="<|im_start|>user\n" + PROMPT),  # a chat-templated context
    _lm([-1.0] * 4, 0, letters="A,B,C,D"),  # continuations without lm-eval's target delimiter
])
def test_compare_refuses_different_scored_strings(lm_row):
    with pytest.raises(SystemExit, match="different strings"):
        agreement.compare({"q1": lm_row}, {"q1": _sl([-1.0] * 4, "A")}, ["q1"])


def test_model_folder(tmp_path):
    assert agreement.model_folder("smollm2-135m") == str(embedded_model_dir())
    assert agreement.model_folder("org/some-model") == "org/some-model"  # a hub id goes to both sides as is
    with pytest.raises(SystemExit, match="--model"):
        agreement.model_folder(str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="no config.json"):
        agreement.model_folder(str(tmp_path))


def test_starloop_side_scores_every_requested_question(tmp_path):
    """More questions than eval.limit's laptop default (20): the starloop side must score them all, or the
    comparison has questions lm-eval scored and starloop did not."""
    from cli_helpers import run_cli

    from starloop.config import EvalConfig

    n = EvalConfig().limit + 4
    out = tmp_path / "sl"
    cmd = agreement.starloop_command("tiny-random", "float32", out, n, batch_size=8)
    assert cmd[:2] == ["starloop", "eval"]
    code, _, err = run_cli(cmd[1:])
    assert code == 0, err
    rows = agreement.read_starloop(out)
    assert len(rows) == n
    assert all(r["prompt"].endswith("\nAnswer:") for r in rows.values())


def test_reused_starloop_folder_must_be_a_finished_run(tmp_path):
    (tmp_path / "generations.csv").write_text("question_id\n", encoding="utf-8")  # a run still going
    with pytest.raises(SystemExit, match="no config.yaml"):
        agreement.check_starloop_run(tmp_path, "float32", "smollm2-135m")


def test_a_bad_model_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        agreement.main(["--model", str(tmp_path / "missing"), "--out", str(out), "--limit", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model" in err and str(tmp_path / "missing") in err
    assert not out.exists()
