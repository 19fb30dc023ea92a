"""`starloop report` and sweep summaries on hand-made run folders (no model needed)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from starloop.errors import StarloopError
from starloop.metrics import wilson_interval


def make_run(path: Path, strategy: str = "sft", accs=(0.30, 0.40, 0.45), languages=("en",), n=100,
             steps=12, lr=1e-4) -> Path:
    """A finished run folder as the loop writes it: config.yaml, metrics.jsonl, iter_k/train/log.jsonl."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model": {"name": "tiny-random"}, "data": {"name": "mmlu", "language": languages[0]},
           "prompt": {"strategy": "native"}, "out": str(path),
           "trainer": {"strategy": strategy, "iterations": len(accs) - 1, "lr": lr, "dpo_beta": 0.1,
                       "dpo_nll_weight": 1.0, "dpo_reference": "previous", "weighted_sft_lambda": 0.5,
                       "samples_per_question": 2, "lora_r": 16}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for it, acc in enumerate(accs):
        for lang in list(languages) + (["all"] if len(languages) > 1 else []):
            k = round(acc * n)
            lo, hi = wilson_interval(k, n)
            lines.append({"iteration": it, "split": "val", "language": lang, "n": n, "accuracy": k / n,
                          "ci_low": lo, "ci_high": hi, "parse_rate": 0.9, "degenerate_rate": 0.05,
                          "kept": 10 * it, "kept_fraction": 0.1 * it, "train_loss": 0.5 if it else None})
        if it:
            log = path / f"iter_{it}" / "train"
            log.mkdir(parents=True)
            recs = [{"step": s, "loss": 1 / s, "lr": lr} | ({"rewards/margins": 0.01 * s, "rewards/accuracies": 0.6}
                                                          if strategy == "dpo" else {}) for s in range(1, steps + 1)]
            (log / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starloop.cli", "report", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_report_on_two_runs_writes_markdown_and_plots(tmp_path):
    a = make_run(tmp_path / "english_sft", "sft")
    b = make_run(tmp_path / "english_dpo", "dpo", accs=(0.30, 0.35, 0.50), lr=5e-6)
    r = report(str(a), str(b), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "rep"
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"report": str(out / "report.md"), "runs": 2, "evals": 0}
    for png in ("accuracy.png", "data_quality.png", "train_loss.png", "dpo_rewards.png"):
        assert (out / png).stat().st_size > 10_000, png
        assert f"]({png})" in (out / "report.md").read_text()
    md = (out / "report.md").read_text()
    assert "english_sft" in md and "english_dpo" in md
    assert "50.0% [40.4, 59.6]" in md  # final accuracy of the DPO run with its Wilson interval
    assert "β 0.1, NLL 1.0, reference previous" in md  # DPO hyperparameters shown for the DPO run: RPO shows
    assert md.count("λ 0.5") == 0  # a key of another strategy is not shown


def test_report_names_each_strategys_own_keys(tmp_path):
    from starloop.report import _hyper, load

    runs, _ = load([make_run(tmp_path / "w", "weighted_sft")])
    assert _hyper(runs[0]) == "lr 0.0001, λ 0.5, 2 samples/q, LoRA r 16"
    el = make_run(tmp_path / "el", "weighted_sft")
    cfg = yaml.safe_load((el / "config.yaml").read_text())
    cfg["trainer"] |= {"reward": "expected_likelihood", "label_dist": "model"}  # two EL runs differ by this alone
    (el / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert _hyper(load([el])[0][0]) == "lr 0.0001, reward expected_likelihood (model labels), λ 0.5, 2 samples/q, LoRA r 16"
    grpo = make_run(tmp_path / "g", "grpo")
    cfg = yaml.safe_load((grpo / "config.yaml").read_text())
    cfg["trainer"] |= {"baseline": "rloo", "grpo_scale_std": True}  # grpo ignores reinforce's baseline
    (grpo / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert _hyper(load([grpo])[0][0]) == "lr 0.0001, std scaling True, 2 samples/q, LoRA r 16"


def test_plot_labels_name_run_strategy_and_what_differs(tmp_path):
    from starloop.report import labels, load

    runs, _ = load([make_run(tmp_path / "a", "sft"), make_run(tmp_path / "b", "dpo", lr=5e-6)])
    lab = labels(runs)
    assert lab[0] == "a · sft (lr=0.0001)" and lab[1] == "b · dpo (lr=5e-06)"


def test_accuracy_plot_has_a_panel_per_language_and_the_chance_line(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from starloop import report as rep

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: saved.append(self))
    run = rep.load_run(make_run(tmp_path / "multi", languages=("yo", "zu")))
    rep.plot_accuracy([run], tmp_path / "acc.png")
    axes = [ax for ax in saved[0].axes if ax.get_visible()]
    assert [ax.get_title().split(",")[0] for ax in axes] == [
        "each run overall (pooled over its languages)", "language: yo", "language: zu"]
    for ax in axes:
        assert any(abs(line.get_ydata()[0] - 0.25) < 1e-9 for line in ax.get_lines())  # the chance line
        assert ax.get_xlabel().startswith("STaR iteration") and "accuracy" in ax.get_ylabel()
    legend = saved[0].legends[0]
    assert any("random chance (25%" in t.get_text() for t in legend.get_texts())


def test_report_expands_a_sweep_folder_and_reads_eval_folders(tmp_path):
    from starloop.report import load

    sweep = tmp_path / "sweep"
    make_run(sweep / "0", lr=1e-5)
    make_run(sweep / "1", lr=2e-5)
    (sweep / "multirun.yaml").write_text("{}")
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({
        "n": 8, "accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "parse_rate": 1.0, "mode": "generate",
        "by_language": {"en": {"n": 4, "accuracy": 0.5, "ci_low": 0.15, "ci_high": 0.85},
                        "zu": {"n": 4, "accuracy": 0.25, "ci_low": 0.05, "ci_high": 0.7}}}))
    runs, evals = load([sweep, ev])
    assert [r.name for r in runs] == ["sweep/0", "sweep/1"] and [e.name for e in evals] == ["eval"]
    r = report(str(sweep), str(ev), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "eval_by_language.png").exists()
    assert "sweep/1" in (tmp_path / "rep" / "report.md").read_text()


def test_single_run_report_defaults_into_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run")
    r = report(str(run))
    assert r.returncode == 0, r.stderr
    assert (run / "report" / "report.md").exists()


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir"])
def test_bad_paths_one_line_exit_2(tmp_path, make):
    p = tmp_path / "x"
    if make == "file":
        p.write_text("hello")
    elif make == "empty_dir":
        p.mkdir()
    r = report(str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(p) in r.stderr


def test_load_rejects_bad_json_naming_the_line(tmp_path):
    from starloop.report import load

    run = make_run(tmp_path / "run")
    (run / "metrics.jsonl").write_text('{"iteration": 0}\n{oops\n')
    with pytest.raises(StarloopError, match=r"metrics.jsonl, line 2"):
        load([run])


def test_sweep_summary_lists_every_job_with_its_status(tmp_path):
    from starloop.sweep import write_sweep_summary

    sweep = tmp_path / "sweep"
    make_run(sweep / "0", accs=(0.3, 0.5))
    make_run(sweep / "1", accs=(0.3, 0.4, 0.35))  # best iteration 1, final iteration 2
    (sweep / "2").mkdir(parents=True)
    (sweep / "2" / "FAILED").write_text(json.dumps({"error": "training stopped: non-finite loss"}))
    jobs = [["trainer.lr=1e-05", "out=x"], ["trainer.lr=2e-05", "out=x"], ["trainer.lr=0.5", "out=x"],
            ["trainer.lr=1", "out=x"]]
    md, csv_path = write_sweep_summary(sweep, jobs)
    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"] for r in rows] == ["trainer.lr=1e-05", "trainer.lr=2e-05", "trainer.lr=0.5",
                                              "trainer.lr=1"]
    assert rows[0]["status"] == "done" and math.isclose(float(rows[0]["final_accuracy"]), 0.5)
    assert rows[1]["best_iteration"] == "1" and rows[1]["final_iteration"] == "2"
    assert rows[2]["status"].startswith("failed: training stopped")
    assert rows[3]["status"].startswith("missing")
    text = md.read_text()
    assert "Highest final validation accuracy: job 0" in text and "1 job(s) failed" in text


def test_sweep_overrides_follow_hydras_job_order():
    from omegaconf import OmegaConf

    from starloop.sweep import sweep_overrides

    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "0,1", "trainer.dpo_beta": "0.1,0.3"}},
                                      "overrides": {"task": ["trainer.lr=1e-5,2e-5", "trainer.dpo_beta=0.2",
                                                             "out=x"]}}})
    # config params come first; a command-line value of the same key replaces the params' values
    assert sweep_overrides(cfg) == [
        ["seed=0", "trainer.dpo_beta=0.2", "trainer.lr=1e-05", "out=x"],
        ["seed=0", "trainer.dpo_beta=0.2", "trainer.lr=2e-05", "out=x"],
        ["seed=1", "trainer.dpo_beta=0.2", "trainer.lr=1e-05", "out=x"],
        ["seed=1", "trainer.dpo_beta=0.2", "trainer.lr=2e-05", "out=x"]]


def test_report_shows_the_clustered_interval_and_the_paired_test():
    from starloop.report import _acc_ci, _paired

    line = {"accuracy": 0.5, "ci_low": 0.45, "ci_high": 0.55, "ci_low_clustered": 0.3, "ci_high_clustered": 0.7,
            "mcnemar_prev_b": 4, "mcnemar_prev_c": 11, "mcnemar_prev_p": 0.1185}
    assert _acc_ci(line) == "50.0% [45.0, 55.0], clustered [30.0, 70.0]"
    assert _paired(line) == "-4 / +11, p = 0.118"
    assert _paired({"accuracy": 0.5}) == "–"


def test_language_plot_stays_a_readable_width(tmp_path):
    """Bug: the per-language evaluation plot grew 1.1 inch per bar: four evaluations of the African subset
    (12 languages) gave a 6,028-pixel-wide image. Now it is capped at a page's width."""
    import matplotlib.image

    from starloop.plots import plot_eval
    from starloop.results import EvalResult

    langs = ["en", "af", "am", "bm", "ig", "nso", "sn", "st", "tn", "ts", "xh", "zu"]
    m = {"accuracy": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 69}
    evals = [EvalResult(tmp_path / f"e{i}", f"e{i}", {"mode": "generate", "model": "m",
                                                       "by_language": {lang: m for lang in langs}}, {})
             for i in range(4)]
    path = plot_eval(evals, tmp_path / "by_language.png")
    height, width = matplotlib.image.imread(path).shape[:2]
    assert 600 <= width <= 16 * 110 and height < width


def test_per_iteration_table_shows_the_weight_on_wrong_answers_of_reward_runs(tmp_path):
    w = make_run(tmp_path / "w", "weighted_sft")
    lines = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        if m["iteration"] > 0:
            m["positive_weight_on_wrong"] = 0.523
    (w / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    s = make_run(tmp_path / "s", "sft")
    r = report(str(w), str(s), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    w_part, s_part = md.split("### `w`")[1].split("### `s`")
    assert "weight on wrong answers" in w_part and "| 52.3% |" in w_part
    assert "weight on wrong answers" not in s_part  # sft keeps correct rationales only: no such column
