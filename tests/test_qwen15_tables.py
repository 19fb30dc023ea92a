"""experiments/qwen15_tables.py: the numbers it computes itself (paired tests between runs, the shuffled-answer
baseline, the commonest letter), on run folders written by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "qwen15_tables.py"
_spec = importlib.util.spec_from_file_location("qwen15_tables", _PATH)
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


def _val(run: Path, it: int, answers: list[tuple[str, str]], truncated: tuple[int, ...] = ()) -> None:
    """iter_<it>/val/generations.csv with (extracted, gold) per question (rows `truncated` ran out of
    tokens), and its metrics line."""
    folder = run / f"iter_{it}" / "val"
    folder.mkdir(parents=True)
    with (folder / "generations.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["question_id", "extracted", "gold", "correct", "truncated"])
        w.writeheader()
        for i, (said, gold) in enumerate(answers):
            w.writerow({"question_id": f"q{i}", "extracted": said, "gold": gold, "correct": said == gold,
                        "truncated": i in truncated})
    acc = sum(s == g for s, g in answers) / len(answers)
    line = {"iteration": it, "split": "val", "language": "en", "n": len(answers), "accuracy": acc, "ci_low": 0.0,
            "ci_high": 1.0, "parse_rate": sum(bool(s) for s, _ in answers) / len(answers), "mean_tokens": 10.0}
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


GOLD = ["A", "A", "A", "B", "C", "D"]


def test_shuffled_chance_by_hand(tmp_path):
    run = tmp_path / "en-x"
    # said: A A B B "" D -> A 2, B 2, D 1 of 6 rows; gold: A 3, B 1, C 1, D 1.
    _val(run, 1, list(zip(["A", "A", "B", "B", "", "D"], GOLD)))
    rows = tables.val_answers(run, 1)
    assert tables.shuffled_chance(rows) == pytest.approx((2 * 3 + 2 * 1 + 1 * 1) / 36)
    assert tables.top_letter(rows) == "A 40"  # 2 of the 5 parsed answers (A and B tie: first seen wins)
    assert tables.val_answers(run, 2) is None and tables.shuffled_chance(None) is None


def test_uniform_key_gives_a_quarter_whatever_the_answers():
    rows = {f"q{i}": {"extracted": "A", "gold": "ABCD"[i % 4]} for i in range(8)}
    assert tables.shuffled_chance(rows) == pytest.approx(0.25)


def test_paired_counts_each_side_and_exact_p(tmp_path):
    # first right on q0-q4 only; second right on q0 and on q5 only: b = 4 (q1-q4), c = 1 (q5).
    first = [("A", "A")] * 5 + [("B", "A")]
    second = [("A", "A")] + [("B", "A")] * 4 + [("A", "A")]
    _val(tmp_path / "en-a", 1, first)
    _val(tmp_path / "en-b", 1, second)
    table = tables.paired(tmp_path, "en-")
    row = [r for r in table.splitlines() if r.startswith("| en-a / en-b | 1 |")]
    # p = 2 * P(Bin(5, 1/2) <= 1) = 2 * 6/32 = 0.375
    assert row == ["| en-a / en-b | 1 | 6 | 83.3 | 33.3 | 4 | 1 | 0.375 |"]
    assert tables.paired(tmp_path, "low-") == "(no two runs validated the same iteration)"


def test_star_table_has_the_new_columns(tmp_path):
    _val(tmp_path / "en-a", 0, [("A", "A"), ("B", "A")])
    table = tables.star(tmp_path, "en-")
    head, rule, row = table.splitlines()
    assert head.count("|") == rule.count("|") == row.count("|")
    assert "| en-a | 0 | 50.0 [0.0, 100.0] | 100.0 | - | 0.0 | A 50 | 50.0 |" in row


def test_format_split_by_what_the_base_model_did(tmp_path):
    run = tmp_path / "en-a"
    # Base: q0 right, q1 wrong, q2 no answer (out of tokens), q3 no answer (stopped), q4 right.
    _val(run, 0, [("A", "A"), ("B", "A"), ("", "A"), ("", "A"), ("C", "C")], truncated=(2,))
    _val(run, 1, [("B", "A"), ("B", "A"), ("A", "A"), ("D", "A"), ("C", "C")])
    _val(run, 2, [("A", "A"), ("A", "A"), ("A", "A"), ("A", "A"), ("D", "C")])  # the last iteration counts
    rows = tables.format_split(tmp_path, "en-").splitlines()[2:]
    assert rows == ["| en-a | 2 | answered | 3 | 2 | 2 | 1 | 1 | 1 |",
                    "| en-a | 2 | unanswered, truncated | 1 | 0 | 1 | 0 | 1 | 1 |",
                    "| en-a | 2 | unanswered, ended | 1 | 0 | 1 | 0 | 1 | 1 |"]
    assert tables.format_split(tmp_path, "low-") == "(no run validated after iteration 0)"


def test_paired_compares_against_the_sft_run_when_there_is_one(tmp_path):
    for name in ("en-dpo", "en-sft", "en-star"):
        _val(tmp_path / name, 1, [("A", "A"), ("B", "A")])
    rows = [r.split(" | ")[0] for r in tables.paired(tmp_path, "en-").splitlines()[2:]]
    assert rows == ["| en-sft / en-dpo", "| en-sft / en-star"]


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    for args, words in (([str(tmp_path / "nope")], "no such folder"), ([], "usage"),
                        ([str(tmp_path), str(tmp_path / "gone")], "gone: no such folder"),
                        ([str(tmp_path)] * 3, "usage")):
        r = subprocess.run([sys.executable, str(_PATH), *args], capture_output=True, text=True, check=False,
                           timeout=60)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_paired_tests_the_gain_filter_against_each_weighted_sft_run(tmp_path):
    for name in ("en-sft", "en-sft-gain", "en-wsft-correct", "en-wsft-el", "en-dpo"):
        _val(tmp_path / name, 1, [("A", "A"), ("B", "A")])
    rows = [r.split(" | ")[0] for r in tables.paired(tmp_path, "en-").splitlines()[2:]]
    assert rows == ["| en-sft / en-dpo", "| en-sft / en-sft-gain", "| en-sft / en-wsft-correct",
                    "| en-sft / en-wsft-el", "| en-sft-gain / en-wsft-correct", "| en-sft-gain / en-wsft-el"]


def test_across_pairs_the_runs_two_sittings_share(tmp_path):
    now, before = tmp_path / "run5", tmp_path / "run4"
    # before right on q0-q2, now right on q0, q1 and q3: b = 1 (q2), c = 1 (q3); p = 1.
    _val(before / "en-sft", 1, [("A", "A"), ("A", "A"), ("A", "A"), ("B", "A")])
    _val(now / "en-sft", 1, [("A", "A"), ("A", "A"), ("B", "A"), ("A", "A")])
    _val(now / "en-dpo", 1, [("A", "A")])  # in one sitting only: not paired
    assert tables.across(now, before).splitlines()[2:] == ["| en-sft: run4 / run5 | 1 | 4 | 75.0 | 75.0 | 1 | 1 | 1 |"]
    assert "| en-dpo: run5 / run5 | 1 | 1 | 100.0 | 100.0 | 0 | 0 | 1 |" in tables.across(now, now)
    empty = tmp_path / "none"
    empty.mkdir()
    assert tables.across(now, empty) == "(no run validated an iteration in both sittings)"


def test_paired_finds_the_lowest_languages_sft_run(tmp_path):
    for name in ("low-zu-sft", "low-zu-sft-gain", "low-zu-wsft-correct", "low-zu-wsft-el"):
        _val(tmp_path / name, 1, [("A", "A"), ("B", "A")])
    rows = [r.split(" | ")[0] for r in tables.paired(tmp_path, "low-").splitlines()[2:]]
    assert rows == ["| low-zu-sft / low-zu-sft-gain", "| low-zu-sft / low-zu-wsft-correct",
                    "| low-zu-sft / low-zu-wsft-el", "| low-zu-sft-gain / low-zu-wsft-correct",
                    "| low-zu-sft-gain / low-zu-wsft-el"]  # not the two weighted runs against each other


def test_across_starts_at_the_base_models_validation(tmp_path):
    now, before = tmp_path / "b", tmp_path / "a"
    for folder in (now, before):
        _val(folder / "en-sft", 0, [("A", "A"), ("B", "A")])
    assert tables.across(now, before).splitlines()[2:] == ["| en-sft: a / b | 0 | 2 | 50.0 | 50.0 | 0 | 0 | 1 |"]


def test_star_table_shows_the_weight_on_wrong_answers_and_keeps_its_columns(tmp_path):
    run = tmp_path / "en-w"
    _val(run, 0, [("A", "A"), ("B", "A")])
    _val(run, 1, [("A", "A"), ("A", "A")])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines[1]["positive_weight_on_wrong"] = 0.523
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "iter_1" / "val" / "DONE").write_text("{}")
    (run / "iter_2" / "sample").mkdir(parents=True)  # iteration 2 started, stopped before validating
    (run / "iter_2" / "sample" / "DONE").write_text("{}")
    head, rule, *rows = tables.star(tmp_path, "en-").splitlines()
    assert len(rows) == 3 and all(r.count("|") == head.count("|") == rule.count("|") for r in rows)
    cols = [c.strip() for c in head.split("|")]
    at = cols.index("weight on wrong %")
    assert [[c.strip() for c in r.split("|")][at] for r in rows[:2]] == ["-", "52.3"]


def _eval(folder: Path, rows: list[tuple[str, str, bool]], checkpoint: str | None = None) -> None:
    """An evaluation folder: generations.csv with (question id, language, correct) per row, and config.yaml
    naming the adapter it scored."""
    folder.mkdir(parents=True)
    with (folder / "generations.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["question_id", "language", "correct"])
        w.writeheader()
        w.writerows({"question_id": q, "language": lang, "correct": ok} for q, lang, ok in rows)
    (folder / "config.yaml").write_text(f"seed: 0\ncheckpoint: {checkpoint or 'null'}\n")


def test_adapter_logits_pair_each_adapter_with_the_base_model_on_its_language(tmp_path):
    # English: the base is right on q0-q3 of 8; the adapter on q0, q1 and q4-q7: b = 2 (q2, q3), c = 4.
    _eval(tmp_path / "know-logit0", [(f"q{i}", "en", i < 4) for i in range(8)])
    _eval(tmp_path / "logit-en-sft-iter_2", [(f"q{i}", "en", i not in (2, 3)) for i in range(8)],
          checkpoint="/x/en-sft/iter_2")
    _val(tmp_path / "en-sft", 1, [("A", "A"), ("A", "A")])  # its chain of thought: 2 of 2 at iteration 1,
    _val(tmp_path / "en-sft", 2, [("A", "A"), ("B", "A")])  # 1 of 2 at iteration 2, the adapter's
    # Zulu: afr-logit holds two languages; only zu's 4 rows count (base right on z0, adapter on z0 and z1).
    _eval(tmp_path / "afr-logit", [("z0", "zu", True), ("z1", "zu", False), ("z2", "zu", False),
                                   ("z3", "zu", False), ("y0", "yo", True), ("y1", "yo", True)])
    _eval(tmp_path / "logit-low-zu-sft-iter_1", [("z0", "zu", True), ("z1", "zu", True)], "/x/low-zu-sft/iter_1")
    _eval(tmp_path / "logit-low-yo-sft-iter_1", [("y0", "yo", True)], "/x/low-yo-sft/iter_1")
    (tmp_path / "afr-logit" / "generations.csv").unlink()  # a base that did not run: said, not counted
    lines = tables.adapter_logits(tmp_path).splitlines()
    p = 2 * (1 + 6 + 15) / 64  # b = 2, c = 4: 2 P(Binomial(6, 1/2) <= 2)
    lo, hi = tables.wilson_interval(6, 8)
    assert lines[2] == f"| en-sft | 2 | en | 8 | 50.0 | 75.0 [{100 * lo:.1f}, {100 * hi:.1f}] | 2 | 4 | {p:.3g} | 50.0 |"
    assert lines[3].startswith("| low-yo-sft | 1 | yo | not run |")
    assert lines[4].startswith("| low-zu-sft | 1 | zu | not run |")


def test_adapter_logits_restrict_the_base_to_the_runs_language(tmp_path):
    _eval(tmp_path / "afr-logit", [("z0", "zu", True), ("z1", "zu", False), ("y0", "yo", True)])
    _eval(tmp_path / "logit-low-zu-sft", [("z0", "zu", True), ("z1", "zu", True)], "/x/low-zu-sft/iter_1")
    (row,) = [x for x in tables.adapter_logits(tmp_path).splitlines() if x.startswith("| low-zu-sft")]
    # 2 zu questions (y0 not counted): base 1 of 2, adapter 2 of 2, c = 1; no run folder: chain of thought "-".
    # (The folder has the name of the runs before the iteration was in it: the iteration comes from its config.)
    cells = row.split(" | ")
    assert cells[1:5] == ["1", "zu", "2", "50.0"] and cells[5].startswith("100.0 [") and cells[6:9] == ["0", "1", "1"]
    assert row.endswith("| - |")


def test_adapter_logits_say_when_the_two_evaluations_share_no_question(tmp_path):
    _eval(tmp_path / "know-logit0", [("q0", "en", True)])
    _eval(tmp_path / "logit-en-sft-iter_1", [("q9", "en", True)], "/x/en-sft/iter_1")
    assert "| en-sft | 1 | en | 0: no question in both evaluations |" in tables.adapter_logits(tmp_path)
