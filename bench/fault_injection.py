"""Preemption test: kill a real `starloop train` at random moments, rerun it, and check it reaches the same result.

    python bench/fault_injection.py                 # 20 kills, seed 0
    python bench/fault_injection.py --kills 5 --seed 3 --keep /tmp/fi

A reference run goes uninterrupted first. Then, for each of N seeded random points in time (any stage:
start-up, sampling, reward scoring, training, validation, saving), a fresh run is started, sent SIGTERM or
SIGKILL (seeded choice) at that point, and the same command is run again until it completes. It passes if:
- after SIGTERM the process exits with 143 and prints "interrupted: rerun the same command to resume"
  (or had already finished), with no traceback;
- the rerun exits 0 and leaves no temporaries of atomic writes (`.<name>.XXXXXXXX.tmp`);
- no sampling part file is left behind (a finished stage keeps its samples in generations.csv alone);
- metrics.jsonl (minus wall_s), every generations.csv / train_data.jsonl, and every adapter's
  tensors equal the reference run's exactly;
- logs/steps.jsonl holds each (iteration, step) once.
Then three more faults, once each: a second `train` and an `eval` started on the folder of a run in progress
(each refused in one line; the run finishes equal to the reference), the disk filling up while sampling (one
line, exit code 2; the rerun finishes equal to the reference), and `starloop eval` pointed at the finished
reference run (refused in one line, nothing in it changed).
Prints one line per kill and fault and ends with "N passed, M failed" (exit code 1 if any failed).

The run is tiny (random two-layer model, 8 questions, 2 iterations) and uses weighted SFT on the
answer-likelihood reward, so that every iteration really trains although the random model never answers
correctly. CPU only; each kill costs about one run (~40-60 s on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_ARGS = [
    "model=tiny-random", "model.device=cpu", "data.limit=8", "trainer.iterations=2",
    "trainer.samples_per_question=2", "trainer.max_new_tokens=10", "eval.max_new_tokens=10",
    "trainer.val_limit=4", "trainer.strategy=weighted_sft", "trainer.reward=answer_logprob", "progress=false",
]
INTERRUPTED = "interrupted: rerun the same command to resume"
_STALE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
# Per-process bookkeeping that is not a result: never compared.
_IGNORED = {".lock", "cli.log", ".write_probe"}


def command(out: Path, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "starloop.cli", "train", *RUN_ARGS, *(extra or []), f"out={out}"]


def _env() -> dict[str, str]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start(out: Path, extra: list[str] | None = None, nice: int = 10) -> subprocess.Popen:
    # Niced: the machine may be shared. preexec_fn is safe here: this script starts no threads.
    return subprocess.Popen(command(out, extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=(lambda: os.nice(nice)) if nice else None)  # noqa: PLW1509


def run(out: Path, extra: list[str] | None = None, timeout: float = 900, nice: int = 10) -> subprocess.CompletedProcess:
    p = start(out, extra, nice)
    try:
        so, se = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        so, se = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, so, se)


def kill_after(out: Path, delay: float, sig: int, extra: list[str] | None = None,
               when: Path | None = None, timeout: float = 900) -> tuple[subprocess.CompletedProcess, str]:
    """Start a run, send `sig` `delay` seconds after start (or after `when` appears); -> (result, stage)."""
    p = start(out, extra)
    t0 = time.time()
    if when is not None:
        while not when.exists() and p.poll() is None and time.time() - t0 < timeout:
            time.sleep(0.02)
        t0 = time.time()
    while p.poll() is None and time.time() - t0 < delay:
        time.sleep(0.01)
    stage = latest_artifact(out)
    if p.poll() is None:
        p.send_signal(sig)
    try:
        so, se = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        so, se = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, so, se), stage


def latest_artifact(out: Path) -> str:
    """The most recently written result file (where the run was when it was killed)."""
    if not out.exists():
        return "start-up"
    files = [f for f in out.rglob("*") if f.is_file() and f.name not in _IGNORED and ".hydra" not in f.parts]
    if not files:
        return "start-up"
    return max(files, key=lambda f: f.stat().st_mtime_ns).relative_to(out).as_posix()


def stale_temps(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_dir() and _STALE.match(p.name))


def metrics_lines(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in rows:
        r.pop("wall_s", None)
    return rows


def compare(ref: Path, out: Path) -> list[str]:
    """Differences between a resumed run and the reference (empty = equal)."""
    import torch
    from safetensors.torch import load_file

    problems = []
    if not (out / "metrics.jsonl").exists():
        return ["metrics.jsonl missing"]
    if metrics_lines(out) != metrics_lines(ref):
        problems.append("metrics.jsonl differs")
    problems += [f"{f.relative_to(out)} left behind" for f in sorted(out.glob("**/part_*.csv"))]
    for pattern in ("**/generations.csv", "**/train_data.jsonl"):
        for f in sorted(ref.glob(pattern)):
            rel = f.relative_to(ref)
            g = out / rel
            if not g.exists():
                problems.append(f"{rel} missing")
            elif g.read_bytes() != f.read_bytes():
                problems.append(f"{rel} differs")
    for f in sorted(ref.glob("iter_*/train/adapter/adapter_model.safetensors")):
        rel = f.relative_to(ref)
        g = out / rel
        if not g.exists():
            problems.append(f"{rel} missing")
            continue
        a, b = load_file(str(f)), load_file(str(g))
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"{rel} tensors differ")
    for f in sorted(ref.glob("iter_*/**/DONE")):
        if not (out / f.relative_to(ref)).exists():
            problems.append(f"{f.relative_to(ref)} missing")
    steps = out / "logs" / "steps.jsonl"
    if steps.exists():
        keys = [(r["iteration"], r["step"]) for r in map(json.loads, steps.read_text(encoding="utf-8").splitlines())]
        if len(keys) != len(set(keys)):
            problems.append(f"logs/steps.jsonl repeats (iteration, step) {min(k for k in keys if keys.count(k) > 1)}")
        ref_steps = ref / "logs" / "steps.jsonl"
        if ref_steps.exists() and len(keys) != len(ref_steps.read_text(encoding="utf-8").splitlines()):
            problems.append("logs/steps.jsonl has another number of lines than the reference's")
    return problems


# A run whose sampling parts hit a full disk (the same CLI, with the part writer failing as ENOSPC does).
_DISK_FULL = (
    "import errno, sys\nfrom pathlib import Path\n"
    "try:\n    from starloop.stages import sampling as writer\n"
    "except ImportError:\n    from starloop import loop as writer\n"
    "real = writer.write_samples\n"
    "def full(path, samples):\n"
    "    if 'part_' in Path(path).name:\n"
    "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
    "    real(path, samples)\n"
    "writer.write_samples = full\nfrom starloop.cli import main\nmain(sys.argv[1:])\n")


def _one_line(r: subprocess.CompletedProcess, *needles: str) -> list[str]:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or \
            any(n not in lines[0] for n in needles):
        return [f"want exit 2 and one line naming {list(needles)}; got exit {r.returncode}: {r.stderr[-1500:]}"]
    return []


def other_faults(ref: Path, root: Path) -> dict[str, list[str]]:
    """The faults besides kills: {name: problems}."""
    results: dict[str, list[str]] = {}
    # A second train and an eval on the folder of a run in progress.
    out = root / "busy"
    shutil.rmtree(out, ignore_errors=True)
    p = start(out)
    t0 = time.time()
    while not (out / "config.yaml").exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.05)
    second = subprocess.run(command(out), capture_output=True, text=True, env=_env(), check=False)
    ev = subprocess.run([sys.executable, "-m", "starloop.cli", "eval", *RUN_ARGS, f"out={out}"], capture_output=True,
                        text=True, env=_env(), check=False)
    _, se = p.communicate()
    problems = _one_line(second, "another starloop run") + _one_line(ev, str(out))
    if p.returncode != 0:
        problems.append(f"the run in progress failed (exit {p.returncode}): {se[-1500:]}")
    else:
        problems += compare(ref, out)
    results["second train and an eval during a run"] = problems
    # The disk fills up while sampling; the rerun resumes.
    out = root / "disk_full"
    shutil.rmtree(out, ignore_errors=True)
    full = subprocess.run([sys.executable, "-c", _DISK_FULL, "train", *RUN_ARGS, f"out={out}"], capture_output=True,
                          text=True, env=_env(), check=False)
    problems = _one_line(full, "no space left", "part_")
    r = run(out)
    problems += [f"rerun exit code {r.returncode}: {r.stderr[-1500:]}"] if r.returncode else compare(ref, out)
    results["disk full while sampling, then rerun"] = problems
    # starloop eval pointed at a train run.
    before = {f: f.stat().st_mtime_ns for f in ref.rglob("*") if f.is_file()}
    ev = subprocess.run([sys.executable, "-m", "starloop.cli", "eval", *RUN_ARGS, f"out={ref}"], capture_output=True,
                        text=True, env=_env(), check=False)
    problems = _one_line(ev, "starloop train")
    if {f: f.stat().st_mtime_ns for f in ref.rglob("*") if f.is_file()} != before:
        problems.append("the train run's files changed")
    results["eval into a train run"] = problems
    return results


def check_kill(ref: Path, out: Path, killed: subprocess.CompletedProcess, sig: int,
               extra: list[str] | None = None, max_reruns: int = 2) -> list[str]:
    """Checks on the killed process and on the rerun(s) that complete it; returns the problems found."""
    problems = []
    if sig == signal.SIGTERM and killed.returncode not in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
        problems.append(f"SIGTERM exit code {killed.returncode} (want 143)\n{killed.stderr[-2000:]}")
    if sig == signal.SIGTERM and killed.returncode == 128 + signal.SIGTERM:
        if INTERRUPTED not in killed.stderr:
            problems.append("SIGTERM: no 'interrupted' message on stderr")
        if "Traceback" in killed.stderr:
            problems.append(f"SIGTERM: traceback on stderr\n{killed.stderr[-2000:]}")
    if sig == signal.SIGKILL and killed.returncode not in (0, -signal.SIGKILL):
        problems.append(f"SIGKILL run exited {killed.returncode}\n{killed.stderr[-2000:]}")
    for _ in range(max_reruns):
        r = run(out, extra)
        if r.returncode == 0:
            break
    else:
        return problems + [f"rerun exit code {r.returncode}: {r.stderr.strip()[-2000:]}"]
    if stale_temps(out):
        problems.append(f"temporaries left after the rerun: {stale_temps(out)}")
    return problems + compare(ref, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="number of kill points (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and signals")
    ap.add_argument("--signal", choices=("both", "term", "kill"), default="both")
    ap.add_argument("--keep", type=Path, default=None, help="keep run folders here (default: a temp folder)")
    ap.add_argument("--no-other-faults", action="store_true", help="only the kills (not the busy folder, full "
                                                                   "disk and eval-into-a-run faults)")
    args = ap.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="starloop-fi-"))
    root.mkdir(parents=True, exist_ok=True)
    ref = root / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.time()
    p = start(ref)
    t_work = None  # when the run is past start-up (imports, data, lock): its config.yaml exists
    while p.poll() is None:
        if t_work is None and (ref / "config.yaml").exists():
            t_work = time.time() - t0
        time.sleep(0.02)
    duration = time.time() - t0
    stderr = p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        print(f"reference run failed (exit {p.returncode}):\n{stderr[-3000:]}", file=sys.stderr)
        return 2
    t_work = t_work if t_work is not None else 0.0
    print(f"reference run: {duration:.1f} s (start-up {t_work:.1f} s); {args.kills} kills (seed {args.seed})",
          flush=True)
    rng = random.Random(args.seed)
    passed = failed = 0
    for i in range(args.kills):
        # One kill in ten lands in start-up; the others spread uniformly over the stages that write results.
        delay = rng.uniform(0.0, t_work) if rng.random() < 0.1 else rng.uniform(t_work, duration)
        sig = {"term": signal.SIGTERM, "kill": signal.SIGKILL}.get(args.signal) or rng.choice(
            [signal.SIGTERM, signal.SIGKILL])
        out = root / f"kill_{i:02d}"
        shutil.rmtree(out, ignore_errors=True)
        killed, stage = kill_after(out, delay, sig)
        problems = check_kill(ref, out, killed, sig)
        status = "ok" if not problems else "FAILED"
        print(f"kill {i + 1:2d}/{args.kills} {signal.Signals(sig).name:7s} at {delay:5.1f} s "
              f"(last written: {stage}; exit {killed.returncode}): {status}", flush=True)
        for p in problems:
            print("    " + p.replace("\n", "\n    "), flush=True)
        if problems:
            failed += 1
        else:
            passed += 1
            if args.keep is None:
                shutil.rmtree(out, ignore_errors=True)
    if not args.no_other_faults:
        for name, problems in other_faults(ref, root).items():
            print(f"{name}: {'ok' if not problems else 'FAILED'}", flush=True)
            for p in problems:
                print("    " + p.replace("\n", "\n    "), flush=True)
            passed, failed = (passed + 1, failed) if not problems else (passed, failed + 1)
    if args.keep is None and not failed:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
