"""Bad-input fuzzing of the CLI: every broken input must give one stderr line naming it and exit code 2.

    python bench/fuzz.py                       # ~600 cases, 40 of them as real processes
    python bench/fuzz.py --seed 3 --subprocess 10 --keep /tmp/fuzz

Broken inputs, generated from a seed: datasets (truncated files, wrong column counts, bad answers, empty
questions or choices, invalid or mixed encodings, empty files, missing splits, duplicate files; local copies
of hub datasets with missing columns, bad JSON, bad values), configs (unknown keys, wrong types,
out-of-range and unknown enum values, malformed overrides, bytes that are not UTF-8, missing model
folders, bad devices), preload files (missing columns, bad values, truncation, encodings), checkpoint
folders (missing or corrupt adapter files), damaged run folders (completed stages missing files, corrupt
saved config, changed config), and output folders (not writable, disk full, in use); and the categories of
`bench/fuzz_cases.py` (another command's folder, NaN settings, data edited between runs, damaged run files,
bad preload values, adapters of another model, an empty or over-long out=, a full disk while sampling).

Each case passes if: exit code 2, exactly one non-empty stderr line starting with "error:", that line
names the file / row / key at fault, no traceback, and the run folder it points `out=` at is unchanged
(same files, bytes and modification times). Most cases run in this process through `starloop.cli.main`
(with the Hydra launch stubbed out: an input that gets that far was accepted, which fails the case); a
seeded sample also runs as real `python -m starloop.cli` processes. Prints failures, then
"N passed, M failed" (exit code 1 if any failed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))


# Also reached through this module by the tests (tests/test_hostile_inputs.py, test_fuzz_sample.py).
from fuzz_inputs import RUN_ARGS, Case, Result, snapshot, write_dataset
from fuzz_settings import generate

# --- running cases ---------------------------------------------------------------------------------


class _Accepted(Exception):
    """The input passed every check and the run would start."""


def run_inprocess(argv: list[str], real: bool = False) -> tuple[object, str]:
    """starloop.cli.main(argv) as the CLI runs it, with Hydra's launch stubbed unless `real`: (exit code, stderr)."""
    from starloop import cli

    err, out = io.StringIO(), io.StringIO()
    old = cli._run_hydra

    def accepted(*a, **k):
        raise _Accepted()

    if not real:
        cli._run_hydra = accepted
    code: object = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                cli.main(list(argv))
            except SystemExit as e:
                code = e.code if e.code is not None else 0
            except _Accepted:
                code = "accepted (the run would start)"
            except BaseException:  # noqa: BLE001 - a traceback is what the check looks for
                traceback.print_exc(file=err)
                code = 1
    finally:
        cli._run_hydra = old
    return code, err.getvalue()


def run_subprocess(argv: list[str], timeout: float = 300) -> tuple[object, str]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT / "src"))
    try:
        r = subprocess.run([sys.executable, "-m", "starloop.cli", *argv], capture_output=True, timeout=timeout,
                           env=env, check=False)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    return r.returncode, r.stderr.decode("utf-8", "replace")


def check(case: Case, code: object, stderr: str, before: dict) -> list[str]:
    problems = []
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if code != 2:
        problems.append(f"exit code {code}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    elif not lines[0].startswith("error: "):
        problems.append("line does not start with 'error: '")
    else:
        missing = [n for n in case.needles if n not in lines[0]]
        if missing:
            problems.append(f"does not name {missing}")
    if case.out is not None and snapshot(case.out) != before:
        problems.append(f"wrote into {case.out}")
    return problems


def run_case(case: Case, subprocess_mode: bool = False) -> Result:
    with case.patch() if case.patch else contextlib.nullcontext():
        before = snapshot(case.out)
        code, stderr = run_subprocess(case.argv) if subprocess_mode else run_inprocess(case.argv, case.real)
    return Result(case, code, stderr, check(case, code, stderr, before))


def make_run(folder: Path, command: str = "train") -> None:
    """The existing run folder every case points out= at: a real one-iteration tiny run (or an eval)."""
    done = folder / ("iter_1/val/DONE" if command == "train" else "metrics.json")
    if done.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-m", "starloop.cli", command, *RUN_ARGS,
                        f"data.path={folder.parent / 'data_ok'}", f"out={folder}"],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"could not create the run folder (exit {r.returncode}):\n{r.stderr[-3000:]}")


def prepare(root: Path, seed: int, scale: float = 1.0) -> list[Case]:
    root.mkdir(parents=True, exist_ok=True)
    write_dataset(root / "data_ok")
    make_run(root / "run")
    make_run(root / "eval_run", "eval")
    return generate(root, seed, root / "run", scale)


def describe(r: Result) -> str:
    c = r.case
    tail = r.stderr.strip().splitlines()[-1][:300] if r.stderr.strip() else "(no stderr)"
    return f"[{c.category}] {c.name}: {'; '.join(r.problems)}\n      argv: {' '.join(c.argv[1:])[:400]!r}\n" \
           f"      stderr: {tail!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subprocess", type=int, default=40, help="cases also run as real processes (default 40)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the number of generated file cases")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging_quiet()

    root = args.keep or Path(tempfile.mkdtemp(prefix="starloop-fuzz-"))
    t0 = time.time()
    cases = prepare(root, args.seed, args.scale)
    results = [run_case(c) for c in cases]
    t_in = time.time() - t0
    rng = random.Random(args.seed + 1)
    eligible = [c for c in cases if not c.inprocess_only]
    sub = rng.sample(eligible, min(args.subprocess, len(eligible)))
    t1 = time.time()
    sub_results = [run_case(c, subprocess_mode=True) for c in sub]
    t_sub = time.time() - t1
    failed = [r for r in results + sub_results if r.problems]
    for r in failed:
        print("FAILED " + describe(r))
    by_cat: dict[str, list[int]] = {}
    for r in results + sub_results:
        s = by_cat.setdefault(r.case.category, [0, 0])
        s[0 if not r.problems else 1] += 1
    print("by category: " + ", ".join(f"{k} {v[0]}/{v[0] + v[1]}" for k, v in by_cat.items()))
    print(f"{len(results)} in-process cases ({t_in:.0f} s), {len(sub_results)} as processes ({t_sub:.0f} s)")
    passed = len(results) + len(sub_results) - len(failed)
    print(f"{passed} passed, {len(failed)} failed")
    if args.keep is None and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def logging_quiet() -> None:
    import logging

    logging.getLogger().setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
