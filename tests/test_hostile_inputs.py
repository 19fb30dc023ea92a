"""What a hostile user tries on a run folder: another command's folder, NaN settings, data edited between
runs, damaged files, wrong checkpoints and preload files, a full disk. Each must give one line naming the
thing (exit code 2) and leave the folder as it was. `bench/fuzz.py` runs many more of each category."""

from __future__ import annotations

import errno
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from starloop.errors import StarloopError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_fuzz_h", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = fuzz
spec.loader.exec_module(fuzz)  # type: ignore[union-attr]

RUN = ["model=tiny-random", "model.device=cpu", "data.limit=4", "trainer.iterations=1", "trainer.samples_per_question=2",
       "trainer.max_new_tokens=4", "eval.max_new_tokens=4", "trainer.val_limit=2", "progress=false",
       "trainer.strategy=weighted_sft", "trainer.reward=answer_logprob"]


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln and "warnings.warn" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A dataset folder and a finished one-iteration run on it (trains: weighted SFT on answer likelihood)."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    fuzz.write_dataset(data)
    run = root / "run"
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", *RUN, f"data.path={data}", f"out={run}"],
                       capture_output=True, text=True, timeout=600, check=False,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == 1  # the summary is the last line
    return data, run


@pytest.fixture
def run_copy(base, tmp_path):
    data, run = base
    shutil.copytree(run, tmp_path / "run")
    return data, tmp_path / "run"


def refused(argv: list[str], out: Path, *needles: str) -> None:
    """argv must stop before the run starts, with one line naming `needles`, and `out` unchanged."""
    before = fuzz.snapshot(out)
    code, err = fuzz.run_inprocess(argv)
    line = one_line(err)
    assert code == 2, (code, err)
    for n in needles:
        assert n in line, line
    assert fuzz.snapshot(out) == before


# --- 1. a folder belongs to one command -----------------------------------------------------------


def test_eval_refuses_a_train_run_and_train_refuses_an_eval_folder(run_copy, tmp_path):
    data, run = run_copy
    refused(["eval", *RUN, f"data.path={data}", f"out={run}"], run, str(run), "starloop train")
    ev = tmp_path / "ev"
    code, _, err = run_cli(["eval", *RUN, f"data.path={data}", "data.limit=2", f"out={ev}"])
    assert code == 0, err[-2000:]
    refused(["train", *RUN, f"data.path={data}", f"out={ev}"], ev, str(ev), "starloop eval")
    refused(["eval", *RUN, f"data.path={data}", "data.limit=3", f"out={ev}"], ev, "data.limit")


def test_report_does_not_write_into_a_run_folder(run_copy, tmp_path):
    _, run = run_copy
    before = fuzz.snapshot(run)
    code, _, err = run_cli(["report", str(run), "--out", str(run)])
    assert code == 2 and "starloop train" in one_line(err) and fuzz.snapshot(run) == before
    code, out, err = run_cli(["report", str(run), "--out", str(tmp_path / "rep")])
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["report"] == str(tmp_path / "rep" / "report.md")
    assert not (tmp_path / "rep" / ".lock").exists()


# --- 2. non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["trainer.lr=nan", "eval.temperature=nan", "trainer.top_p=nan",
                                      "trainer.lr=inf", "trainer.dpo_beta=-inf", "data.heldout_fraction=nan"])
def test_non_finite_settings_refused(base, tmp_path, override):
    data, _ = base
    out = tmp_path / "new"
    refused(["train", *RUN, f"data.path={data}", override, f"out={out}"], out, override.split("=")[0],
            "is not a finite number")
    assert not out.exists()


def test_a_step_that_makes_weights_non_finite_stops_training(tiny):
    from starloop import train
    from starloop.build import Example
    from starloop.config import TrainerConfig
    from starloop.models import attach_lora

    model, tok = tiny
    cfg = TrainerConfig(lora_r=4, train_batch_size=2, lr=1e30)
    peft_model = attach_lora(model, cfg, seed=0)
    try:
        ex = [Example(prompt=f"Q{i}?", completion=f"A {i}. The answer is (A)", group=f"q{i}") for i in range(4)]
        from starloop.strategies import get

        units = get("sft").units(tok, ex, cfg)
        with pytest.raises(StarloopError, match="step 1 made the LoRA weights non-finite"):
            train.train(peft_model, tok, units, cfg, seed=0, progress=False)
    finally:
        peft_model.unload()


# --- 3. a resume sees the same questions and config ---------------------------------------------------


def test_resume_after_the_data_changed_is_refused_naming_the_change(run_copy, tmp_path):
    data, run = run_copy
    shutil.copytree(data, tmp_path / "saved")
    try:
        for f in data.rglob("*.csv"):  # one more word in every question: the same ids, other content
            f.write_text(f.read_text(encoding="utf-8").replace("which option", "which single option"),
                         encoding="utf-8")
        refused(["train", *RUN, f"data.path={data}", f"out={run}"], run, "questions differ", "changed")
    finally:
        shutil.rmtree(data)
        shutil.copytree(tmp_path / "saved", data)


def test_resume_without_config_yaml_is_refused(run_copy):
    data, run = run_copy
    (run / "config.yaml").unlink()
    refused(["train", *RUN, f"data.path={data}", "trainer.lr=0.5", f"out={run}"], run, "config.yaml", "missing")


# --- 4. damaged run folders ---------------------------------------------------------------------------


def _half(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage,needle", [
    (lambda r: _half(r / "iter_1" / "val" / "metrics.json"), "metrics.json"),
    (lambda r: _half(r / "iter_1" / "train_data.jsonl"), "train_data.jsonl"),
    (lambda r: (r / "logs" / "steps.jsonl").write_text("garbage\n{}\n"), "steps.jsonl"),
    (lambda r: (r / "iter_1" / "train" / "DONE").write_text("not json"), "DONE"),
    (lambda r: shutil.copytree(r / "iter_1", r / "iter_1.bak"), "iter_1.bak"),
    (lambda r: ((r / ".lock").unlink(), (r / ".lock").mkdir()), ".lock"),
    (lambda r: (r / "run.json").write_text("[1, 2"), "run.json"),
])
def test_damaged_run_folder_one_line_naming_the_file(run_copy, damage, needle):
    data, run = run_copy
    damage(run)
    refused(["train", *RUN, f"data.path={data}", f"out={run}"], run, needle)


# --- 5. inputs checked before the model loads ----------------------------------------------------------


@pytest.mark.parametrize("override,needle", [
    ("checkpoint=/nonexistent", "checkpoint"), ("model.dtype=int8", "model.dtype"),
    ("model.device=meta", "model.device"), ("data.train_split=dev", "data.train_split"),
    ("data.val_split=train", "data.train_split"), ("out=", "config key 'out': is empty"),
])
def test_unusable_settings_refused(base, tmp_path, override, needle):
    data, _ = base
    out = tmp_path / "new"
    refused(["train", *RUN, f"data.path={data}", f"out={out}", override], out, needle)
    assert not out.exists()


def test_failed_run_leaves_no_folder_and_the_corrected_command_runs(base, tmp_path):
    """A LoRA target the model lacks is found once the model has loaded: before the folder is claimed."""
    data, _ = base
    out = tmp_path / "new" / "run"
    code, _, err = run_cli(["train", *RUN, f"data.path={data}", "trainer.lora_target_modules=[no_such]",
                            "trainer.iterations=0", f"out={out}"])
    assert code == 2 and "trainer.lora_target_modules" in one_line(err)
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(["train", *RUN, f"data.path={data}", "trainer.iterations=0", f"out={out}"])
    assert code == 0, err[-2000:]
    assert (out / "config.yaml").exists() and (out / "run.json").exists()


# --- 6. preload files ---------------------------------------------------------------------------------


def _preload(run: Path, tmp_path: Path, edit, src: str = "iter_1/generations.csv") -> Path:
    from starloop.records import read_samples, write_samples

    samples = read_samples(run / src)
    edit(samples)
    path = tmp_path / "preload.csv"
    write_samples(path, samples)
    return path


def _set_extra(col, value):
    def edit(samples):
        samples[1].extra[col] = value
    return edit


@pytest.mark.parametrize("edit,needles", [
    (_set_extra("answer_logprob", "abc"), ["row 3", "answer_logprob", "not a finite number"]),
    (_set_extra("answer_logprob", float("nan")), ["row 3", "answer_logprob"]),
    (_set_extra("answer_logprob", float("inf")), ["row 3", "answer_logprob"]),
    (lambda s: setattr(s[0], "question_id", "mmmlu/test/YO_NG/anatomy/0001"), ["row 2", "question_id"]),
    (lambda s: (setattr(s[0], "correct", True), setattr(s[0], "extracted", "")), ["row 2", "correct"]),
])
def test_bad_preload_values_name_file_row_and_column(run_copy, tmp_path, edit, needles):
    data, run = run_copy
    path = _preload(run, tmp_path, edit)
    refused(["train", *RUN, f"data.path={data}", f"trainer.preload_data_for_training={path}",
             f"out={tmp_path / 'new'}"], tmp_path / "new", path.name, *needles)
    assert not (tmp_path / "new").exists()


def test_val_preload_without_correct_column_refused(run_copy, tmp_path):
    data, run = run_copy
    import csv

    with open(run / "iter_0" / "val" / "generations.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    i = rows[0].index("correct")
    path = tmp_path / "val.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[x for j, x in enumerate(r) if j != i] for r in rows])
    refused(["train", *RUN, f"data.path={data}", f"trainer.preload_data_for_val={path}", f"out={tmp_path / 'n'}"],
            tmp_path / "n", "val.csv", "correct")


def test_boolean_columns_read_strictly(tmp_path):
    from starloop.errors import DataError
    from starloop.records import read_samples

    p = tmp_path / "g.csv"
    p.write_text("question_id,prompt,rationale,correct\nq1,p,r,1.0\nq2,p,r,False\nq3,p,r,\n", encoding="utf-8")
    assert [s.correct for s in read_samples(p)] == [True, False, False]
    p.write_text("question_id,prompt,rationale,correct\nq1,p,r,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 2.*correct"):
        read_samples(p)


# --- 7. checkpoints -----------------------------------------------------------------------------------


def _adapter_copy(run: Path, tmp_path: Path, rename=None, reshape: str | None = None) -> Path:
    from safetensors.torch import load_file, save_file

    src = run / "iter_1" / "train" / "adapter"
    dst = tmp_path / "adapter"
    shutil.copytree(src, dst)
    w = load_file(str(dst / "adapter_model.safetensors"))
    if rename:
        w = {rename(k): v for k, v in w.items()}
    if reshape:
        k = next(k for k in w if reshape in k)
        w[k] = torch.zeros(w[k].shape[0], w[k].shape[1] * 2)
    save_file(w, str(dst / "adapter_model.safetensors"))
    return dst


@pytest.mark.parametrize("how,needle", [
    ({"rename": lambda k: k.replace("layers.1.", "layers.3.")}, "names no module"),  # a 4-layer model's adapter
    ({"rename": lambda k: k.replace("self_attn", "attention")}, "names no module"),  # another architecture
    ({"reshape": "q_proj.lora_A"}, "has shape"),
])
def test_adapter_of_another_model_refused(run_copy, tmp_path, how, needle):
    data, run = run_copy
    adapter = _adapter_copy(run, tmp_path, **how)
    out = tmp_path / "ev"
    code, _, err = run_cli(["eval", *RUN, f"data.path={data}", f"checkpoint={adapter}", f"out={out}"])
    line = one_line(err)
    assert code == 2 and needle in line and "adapter_model.safetensors" in line
    assert not out.exists()


def test_pickle_adapter_and_model_folders_refused_in_one_line(run_copy, tmp_path):
    data, run = run_copy
    adapter = _adapter_copy(run, tmp_path)
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    out = tmp_path / "ev"
    refused(["eval", *RUN, f"data.path={data}", f"checkpoint={adapter}", f"out={out}"], out, "adapter_model.bin",
            "pickle")
    cfg_only = tmp_path / "cfg_only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text("{}")
    refused(["eval", *RUN[1:], f"model={cfg_only}", f"data.path={data}", f"out={out}"], out, "cfg_only", "weights")
    good = run / "iter_1" / "train" / "adapter"
    refused(["eval", *RUN[1:], f"model={good}", f"data.path={data}", f"out={out}"], out, "adapter folder",
            "checkpoint=")


def test_corrupt_gguf_one_line(base, tmp_path, monkeypatch):
    data, _ = base
    monkeypatch.setenv("STARLOOP_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    out = tmp_path / "ev"
    code, _, err = run_cli(["eval", *RUN[1:], f"model={bad}", f"data.path={data}", f"out={out}"])
    assert code == 2 and "broken.gguf" in one_line(err) and not out.exists()


# --- 8. environment -----------------------------------------------------------------------------------


def test_disk_full_while_sampling_is_one_line_and_the_rerun_resumes(base, tmp_path, monkeypatch):
    from starloop.stages import sampling

    data, _ = base
    out = tmp_path / "run"
    real = sampling.write_samples

    def full(path, samples):
        if "part_" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, samples)

    monkeypatch.setattr(sampling, "write_samples", full)
    code, _, err = run_cli(["train", *RUN, f"data.path={data}", f"out={out}"])
    line = one_line(err)
    assert code == 2 and "no space left" in line and "part_" in line
    monkeypatch.setattr(sampling, "write_samples", real)
    code, _, err = run_cli(["train", *RUN, f"data.path={data}", f"out={out}"])
    assert code == 0, err[-2000:]


def test_hydra_chdir_writes_where_out_says(base, tmp_path):
    data, _ = base
    r = subprocess.run([sys.executable, "-m", "starloop.cli", "eval", *RUN, "data.limit=2", f"data.path={data}",
                        "hydra.job.chdir=true", "out=relrun"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, check=False, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "relrun" / "generations.csv").exists() and not (tmp_path / "relrun" / "relrun").exists()


def test_step_lines_of_an_unfinished_iteration_are_dropped_on_resume(tmp_path):
    from starloop import io
    from starloop.loggers import LocalFiles

    (tmp_path / "logs").mkdir()
    lines = [{"iteration": 1, "global_step": 1, "step": 1}, {"iteration": 1, "global_step": 2, "step": 2},
             {"iteration": 2, "global_step": 3, "step": 1}]  # killed while training iteration 2
    (tmp_path / "logs" / "steps.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "iter_1" / "train").mkdir(parents=True)
    io.mark_done(tmp_path / "iter_1" / "train", {"steps": 2})
    b = LocalFiles(tmp_path)
    b.train_step(2, 3, {"step": 1})
    b.close()
    got = [json.loads(x) for x in (tmp_path / "logs" / "steps.jsonl").read_text().splitlines()]
    assert [(x["iteration"], x["step"]) for x in got] == [(1, 1), (1, 2), (2, 1)]
