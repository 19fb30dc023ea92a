"""Faults a long cluster run meets: preemption (SIGTERM, SIGKILL), half-written files, NaN steps, out of memory,
and an output folder that cannot take the run. `bench/fault_injection.py` runs the kill test at 20 points."""

from __future__ import annotations

import contextlib
import importlib.util
import io as _io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from starloop import io, strategies
from starloop.errors import StarloopError

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


fi = _bench("fault_injection")


def cli_inprocess(argv: list[str]) -> tuple[int, str]:
    from starloop import cli

    err = _io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


# --- preemption of a real run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("fi") / "reference"
    r = fi.run(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_sigterm_during_training_exits_143_and_resumes_to_the_same_result(reference, tmp_path):
    out = tmp_path / "run"
    killed, _ = fi.kill_after(out, 0.0, signal.SIGTERM, when=out / "iter_1" / "train_data.jsonl")
    assert killed.returncode == 143, killed.stderr[-3000:]
    assert fi.INTERRUPTED in killed.stderr and "Traceback" not in killed.stderr
    assert not io.is_done(out / "iter_1" / "train") and not (out / "iter_2").exists()
    assert not fi.stale_temps(out)  # the write in progress was abandoned cleanly
    assert fi.check_kill(reference, out, killed, signal.SIGTERM) == []


def test_sigkill_in_second_iteration_resumes_to_the_same_result(reference, tmp_path):
    """Iteration 2 trains in a fresh process: equal adapters need training seeded per iteration, not per process."""
    out = tmp_path / "run"
    killed, _ = fi.kill_after(out, 0.0, signal.SIGKILL, when=out / "iter_2" / "train_data.jsonl")
    assert killed.returncode == -signal.SIGKILL
    # What a SIGKILL in the middle of saving the adapter leaves behind: the next start removes it.
    stale = out / "iter_2" / "train" / ".adapter.k1ll3d0x.tmp" / "adapter"
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"half")
    assert fi.check_kill(reference, out, killed, signal.SIGKILL) == []
    assert not stale.parent.exists()


def test_sigterm_handler_turns_into_exit_143(monkeypatch, tmp_path):
    from starloop import cli

    def preempted(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(cli, "_run_hydra", preempted)
    before = signal.getsignal(signal.SIGTERM)
    code, err = cli_inprocess(["train", "model=tiny-random", "data.limit=2", f"out={tmp_path / 'r'}"])
    assert code == 143 and err.strip() == fi.INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) == before  # handler removed again


# --- atomic writes ---------------------------------------------------------------------------------


def test_atomic_path_abandoned_on_interrupt_leaves_nothing(tmp_path):
    from starloop.interrupt import Interrupted

    target = tmp_path / "generations.csv"
    with pytest.raises(Interrupted), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Interrupted()
    assert list(tmp_path.iterdir()) == []


SWALLOWED = """
import os, signal, sys
from pathlib import Path
from starloop import interrupt, io

class Finalizer:
    def __del__(self):  # the signal arrives while a finalizer runs: Python prints its exception and drops it
        os.kill(os.getpid(), signal.SIGTERM)

try:
    with interrupt.raising_on_sigterm():
        Finalizer()
        print("went on", flush=True)
        with io.atomic_path(Path(sys.argv[1])) as tmp:
            tmp.write_text("written after the SIGTERM")
except interrupt.Interrupted:
    sys.exit(143)
"""


def test_a_sigterm_swallowed_by_a_finalizer_still_stops_the_next_write(tmp_path):
    # Seen once in a full test run: the SIGTERM of a preemption test landed in a regex library's __del__,
    # "Exception ignored in: <function Group.__del__ ...>: Interrupted", and the run trained to the end, exit 0.
    target = tmp_path / "generations.csv"
    r = subprocess.run([sys.executable, "-c", SWALLOWED, str(target)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert "went on" in r.stdout  # the exception was indeed swallowed: the script went on
    assert r.returncode == 143, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr  # not printed: it is raised again
    assert list(tmp_path.iterdir()) == []  # nothing published, no temporary left


def test_leaving_the_sigterm_handler_forgets_the_request(tmp_path):
    from starloop import interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupt.Interrupted), interrupt.raising_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode
    assert signal.getsignal(signal.SIGTERM) == before
    interrupt.check()  # the request ended with the command that received it: later writes in this process go on
    with io.atomic_path(tmp_path / "later.txt") as tmp:
        tmp.write_text("ok")
    assert (tmp_path / "later.txt").read_text() == "ok"


def test_atomic_folder_replace_and_stale_temps_removed(tmp_path):
    folder = tmp_path / "adapter"
    for text in ("one", "two"):
        with io.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "w").write_text(text)
    assert (folder / "w").read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    stale = tmp_path / "iter_1" / "train" / ".adapter.abcd1234.tmp"
    stale.mkdir(parents=True)
    keep = tmp_path / ".hydra"
    keep.mkdir()
    assert io.remove_stale_temps(tmp_path) == 1
    assert not stale.exists() and keep.exists() and folder.exists()


def test_run_lock_removes_stale_temps(tmp_path):
    from starloop.runstate import RunLock

    stale = tmp_path / "run" / "iter_1" / ".generations.csv.zz99aa11.tmp"
    stale.mkdir(parents=True)
    with RunLock(tmp_path / "run"):
        pass
    assert not stale.exists()


def test_done_stage_missing_its_files_refuses_resume(tmp_path):
    from starloop.runstate import check_run_folder

    train = tmp_path / "iter_1" / "train"
    (train / "adapter").mkdir(parents=True)
    (train / "log.jsonl").write_text("")
    io.mark_done(train)
    with pytest.raises(StarloopError, match="adapter_config.json"):
        check_run_folder(tmp_path)


# --- output folder ---------------------------------------------------------------------------------


def test_unwritable_output_folder_refused_before_anything(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, err = cli_inprocess(["train", "model=tiny-random", "data.limit=2", f"out={a_file / 'run'}"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not writable" in err and "a_file" in err


def test_full_disk_refused_with_one_line(tmp_path, monkeypatch):
    from starloop import runstate

    monkeypatch.setattr(runstate.shutil, "disk_usage", lambda p: type("U", (), {"free": 5 * 2**20})())
    code, err = cli_inprocess(["train", "model=tiny-random", "data.limit=2", f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "5 MB free" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


# --- numerical faults ------------------------------------------------------------------------------


@pytest.fixture
def tiny_policy(tmp_path):
    from starloop.config import Config, DataConfig, ModelConfig, TrainerConfig
    from starloop.policy import Policy

    cfg = Config(model=ModelConfig(name="tiny-random"), data=DataConfig(limit=4), out=str(tmp_path),
                 trainer=TrainerConfig(lora_r=4, train_batch_size=2, strategy="sft"), progress=False)
    return Policy(cfg), cfg


def _examples(n=6):
    from starloop.build import Example

    return [Example(prompt=f"Question {i}?", completion=f"Because {i}. The answer is (A)", group=f"q{i}")
            for i in range(n)]


def _train_stage(policy, cfg, k):
    """The train stage of iteration k, on _examples() as the iteration's training data."""
    import json
    from dataclasses import asdict

    from starloop import stages

    run = stages.Run(cfg, Path(cfg.out), {"train": [], "val": []}, policy)
    io.write_text(run.iter(k) / "train_data.jsonl", "".join(json.dumps(asdict(x)) + "\n" for x in _examples()))
    return stages.train(run, k)


def test_nan_steps_stop_the_run_and_keep_the_last_good_adapter(tiny_policy, tmp_path, monkeypatch, caplog):
    from starloop import train

    policy, cfg = tiny_policy
    good = _train_stage(policy, cfg, 1)
    assert good["steps"] > 0
    adapter = tmp_path / "iter_1" / "train" / "adapter"
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}
    policy.use(adapter)

    def nan_loss(model, tok, units, c, totals):
        loss, metrics = real(model, tok, units, c, totals)
        return loss * float("nan"), metrics

    real = strategies.get("sft").batch_loss
    monkeypatch.setattr(strategies.get("sft"), "batch_loss", nan_loss)
    cfg.trainer.inner_epochs = 3  # 9 steps: enough for MAX_NONFINITE_IN_A_ROW in a row
    with caplog.at_level(logging.WARNING), pytest.raises(StarloopError, match="non-finite.*last good adapter"):
        _train_stage(policy, cfg, 2)
    assert sum("step skipped" in r.message for r in caplog.records) == train.MAX_NONFINITE_IN_A_ROW
    assert not (tmp_path / "iter_2" / "train" / "adapter").exists() and not io.is_done(tmp_path / "iter_2" / "train")
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before


def test_one_nan_step_is_skipped_and_training_goes_on(tiny_policy, monkeypatch, caplog):
    from starloop import train

    policy, cfg = tiny_policy
    model = policy.use(None, trainable=True, fresh_seed=0)
    units = strategies.get("sft").units(policy.tok, _examples(), cfg.trainer)
    real, calls = strategies.get("sft").batch_loss, []

    def first_nan(model, tok, u, c, totals):
        calls.append(1)
        loss, metrics = real(model, tok, u, c, totals)
        return (loss * float("nan") if len(calls) == 1 else loss), metrics

    monkeypatch.setattr(strategies.get("sft"), "batch_loss", first_nan)
    with caplog.at_level(logging.WARNING):
        records = train.train(model, policy.tok, units, cfg.trainer, seed=0, progress=False)
    assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)  # 3 batches, 1 skipped
    assert any("step skipped" in r.message for r in caplog.records)


# --- memory faults ---------------------------------------------------------------------------------


def _oom_above(model, max_rows: int):
    """A forward pre-hook on the decoder stack (every path runs it: full forward, or backbone + head) that
    raises the real CUDA out-of-memory exception type for batches of more than max_rows."""
    seen = []
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model

    def hook(module, args, kwargs):
        x = kwargs.get("input_ids")
        x = x if x is not None else (args[0] if args else kwargs.get("inputs_embeds"))
        seen.append(x.shape[0])
        if x.shape[0] > max_rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    return lm.model.register_forward_pre_hook(hook, with_kwargs=True), seen


def test_letter_logit_eval_backs_off_on_oom(tiny, questions, caplog):
    from starloop.evaluate import letter_logit_samples

    model, tok = tiny
    expected = letter_logit_samples(model, tok, questions, batch_size=2, progress=False)
    handle, seen = _oom_above(model, 2)
    try:
        with caplog.at_level(logging.WARNING):
            got = letter_logit_samples(model, tok, questions, batch_size=8, progress=False)
    finally:
        handle.remove()
    # Half of the batch that failed (6 questions, under the cap of 8), whatever limited it.
    assert seen[:3] == [6, 3, 1] and "batch size halved to 1" in caplog.text
    assert [s.extracted for s in got] == [s.extracted for s in expected]
    for a, b in zip(got, expected):
        assert a.extra == pytest.approx(b.extra, abs=1e-4)


def test_reward_scoring_backs_off_on_oom(tiny, questions, caplog):
    from starloop.records import Sample
    from starloop.scoring import add_reward_columns

    model, tok = tiny
    by_id = {q.id: q for q in questions}
    samples = [Sample(question_id=q.id, sample_index=j, prompt=f"Q: {q.question}\n", rationale=f"Think {j}.")
               for q in questions[:3] for j in range(2)]
    ref = [Sample(**{**s.__dict__, "extra": {}}) for s in samples]
    add_reward_columns(model, tok, ref, by_id, batch_size=4)
    handle, seen = _oom_above(model, 4)
    try:
        with caplog.at_level(logging.WARNING):
            add_reward_columns(model, tok, samples, by_id, batch_size=16)
    finally:
        handle.remove()
    assert "out of memory while scoring rewards" in caplog.text and max(seen) == 16
    for a, b in zip(samples, ref):
        assert a.extra["answer_logprob"] == pytest.approx(b.extra["answer_logprob"], abs=1e-4)


def test_training_oom_stops_with_the_knobs_to_turn(tiny_policy):
    from starloop import train

    policy, cfg = tiny_policy
    model = policy.use(None, trainable=True, fresh_seed=0)
    units = strategies.get("sft").units(policy.tok, _examples(), cfg.trainer)
    handle, _ = _oom_above(model, 1)
    try:
        with pytest.raises(StarloopError) as e:
            train.train(model, policy.tok, units, cfg.trainer, seed=0, progress=False)
    finally:
        handle.remove()
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    for knob in ("trainer.train_batch_size", "trainer.grad_accum", "trainer.max_seq_len",
                 "trainer.gradient_checkpointing"):
        assert knob in msg


def test_two_runs_on_one_folder_second_refuses_as_a_process(tmp_path):
    from starloop.runstate import RunLock

    with RunLock(tmp_path / "busy"):
        r = subprocess.run([sys.executable, "-m", "starloop.cli", "train", "model=tiny-random", "data.limit=2",
                            f"out={tmp_path / 'busy'}"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "another starloop run" in r.stderr
    assert not (tmp_path / "busy" / ".hydra").exists()  # refused before Hydra wrote anything


def test_training_does_not_depend_on_the_process_rng(tiny_policy):
    """LoRA dropout draws random numbers: a resumed process must train iteration k like the original one."""
    from starloop import train

    policy, cfg = tiny_policy
    assert cfg.trainer.lora_dropout > 0
    units = strategies.get("sft").units(policy.tok, _examples(), cfg.trainer)
    weights = []
    for earlier_draws in (0, 7):
        model = policy.use(None, trainable=True, fresh_seed=0)
        torch.rand(earlier_draws)  # whatever ran before in the process
        train.train(model, policy.tok, units, cfg.trainer, seed=3, progress=False)
        weights.append({k: v.clone() for k, v in model.state_dict().items() if "lora_" in k})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_step_log_cut_back_to_its_last_complete_line(tmp_path):
    from starloop.loggers import LocalFiles

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "steps.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # SIGKILL mid-append
    b = LocalFiles(tmp_path)
    b.train_step(1, 2, {"step": 2})
    b.close()
    import json

    assert [json.loads(x)["step"] for x in (logs / "steps.jsonl").read_text().splitlines()] == [1, 2]


def test_check_before_the_lock_ignores_a_killed_writers_half_part(tmp_path):
    """A run killed while writing a sampling part leaves `.part_00000.csv.<8>.tmp/part_00000.csv`, cut short.
    The command's check of the folder runs before it takes the run's lock (which removes such temporaries):
    it must not read the half-written file as the run's own, nor a DONE marker inside a temporary. Before,
    the resume of a killed run could stop on "missing column(s)" of that file."""
    from starloop.runstate import RunLock, check_run_folder

    sample = tmp_path / "iter_1" / "sample"
    stale = sample / ".part_00000.csv.r_4imhve.tmp"
    stale.mkdir(parents=True)
    (stale / "part_00000.csv").write_text("question_id,sam")  # cut off mid-header
    (stale / "DONE").write_text("{not json")
    check_run_folder(tmp_path)  # no error: the temporary is not part of the run
    (sample / "part_00001.csv").write_text("question_id,sam")  # a real part, damaged: still refused
    with pytest.raises(StarloopError, match="part_00001.csv"):
        check_run_folder(tmp_path)
    (sample / "part_00001.csv").unlink()
    with RunLock(tmp_path):
        pass
    assert not stale.exists()
