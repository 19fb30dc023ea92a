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
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from fuzz_cases import generate_more

SUBJECTS = ("anatomy", "virology")
SPLITS = ("dev", "val", "test")
ROWS = 5  # rows per subject file
# A tiny run folder every case points out= at (created once, by a real run).
RUN_ARGS = ["model=tiny-random", "model.device=cpu", "data.limit=4", "trainer.iterations=1",
            "trainer.samples_per_question=1", "trainer.max_new_tokens=4", "eval.max_new_tokens=4",
            "trainer.val_limit=2", "progress=false"]


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]  # command first
    needles: tuple[str, ...]  # each must appear in the error line
    out: Path | None  # a run folder that must stay untouched (None: not checked)
    inprocess_only: bool = False
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    real: bool = False  # run for real (Hydra not stubbed): the fault happens while the run works


@dataclass
class Result:
    case: Case
    code: object
    stderr: str
    problems: list[str] = field(default_factory=list)


# --- valid inputs ----------------------------------------------------------------------------------


def q_row(subject: str, split: str, i: int) -> list[str]:
    return [f"{subject} {split} question {i}: which option is right?", f"option one {i}", f"option two {i}",
            f"option three {i}", f"option four {i}", "ABCD"[i % 4]]


def csv_bytes(rows: list[list[str]]) -> bytes:
    # Every field quoted, so a file cut anywhere inside a row is malformed (never a shorter valid row).
    return "".join(",".join('"' + f.replace('"', '""') + '"' for f in r) + "\n" for r in rows).encode("utf-8")


def write_dataset(folder: Path) -> None:
    for split in SPLITS:
        d = folder / split
        d.mkdir(parents=True, exist_ok=True)
        for s in SUBJECTS:
            (d / f"{s}_{split}.csv").write_bytes(csv_bytes([q_row(s, split, i) for i in range(ROWS)]))


def hub_rows(n: int = ROWS) -> list[dict]:
    return [{"sample_id": f"anatomy/test/{i}", "subject": "anatomy", "question": f"Global question {i}?",
             "option_a": "a", "option_b": "b", "option_c": "c", "option_d": "d", "answer": "ABCD"[i % 4]}
            for i in range(n)]


def write_preload(path: Path, n: int = 4) -> None:
    from starloop.records import Sample, write_samples

    write_samples(path, [Sample(question_id=f"mmlu/train/anatomy/{i:04d}", sample_index=0,
                                prompt=f"prompt {i}", rationale=f"rationale {i}. The answer is (A)",
                                extracted="A", gold="A", correct=True, status="correct", n_tokens=7)
                         for i in range(n)])


def snapshot(folder: Path | None) -> dict:
    if folder is None or not folder.exists():
        return {}
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file():
            st = p.stat()
            snap[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            snap[rel] = "dir"
    return snap


# --- case generators -------------------------------------------------------------------------------


class Gen:
    def __init__(self, root: Path, rng: random.Random, run: Path, data_ok: Path, preload_ok: Path):
        self.root, self.rng, self.run, self.data_ok, self.preload_ok = root, rng, run, data_ok, preload_ok
        self.cases: list[Case] = []
        self.n = 0

    def folder(self, kind: str) -> Path:
        self.n += 1
        d = self.root / "cases" / f"{kind}_{self.n:04d}"
        d.mkdir(parents=True)
        return d

    def base(self, command: str, *extra: str, out: Path | None = None) -> list[str]:
        return [command, *RUN_ARGS, f"data.path={self.data_ok}", *extra, f"out={out or self.run}"]

    def add(self, category: str, name: str, argv: list[str], needles, out: Path | None = None, **kw) -> None:
        self.cases.append(Case(category, name, argv, tuple(needles), self.run if out is None else out, **kw))


def _row_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each line, end excluding the newline."""
    spans, start = [], 0
    for i, b in enumerate(data):
        if b == 0x0A:
            spans.append((start, i))
            start = i + 1
    return spans


def _reader_for(split: str, rng: random.Random) -> tuple[str, list[str]]:
    """A command + overrides that read native `split` of the CSV dataset."""
    if split == "dev":
        return "eval", ["data.split=dev"]
    if split == "val":
        return rng.choice([("eval", ["data.split=val"]), ("train", [])])
    return rng.choice([("eval", ["data.split=test"]), ("train", [])])


def gen_datasets(g: Gen, n: int) -> None:
    rng = g.rng
    kinds = ["truncate", "columns", "answer", "empty_question", "choices", "encoding", "utf16", "empty_file",
             "blank_file", "header", "duplicate", "missing_split", "no_csv", "nonexistent", "nul"]
    weights = [14, 10, 12, 4, 5, 10, 2, 3, 2, 3, 2, 2, 1, 1, 2]
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        d = g.folder("data")
        shutil.copytree(g.data_ok, d, dirs_exist_ok=True)
        split = rng.choice(SPLITS)
        subject = rng.choice(SUBJECTS)
        f = d / split / f"{subject}_{split}.csv"
        rows = [q_row(subject, split, i) for i in range(ROWS)]
        r = rng.randrange(ROWS)  # 0-based row to break
        command, extra = _reader_for(split, rng)
        needles: list[str] = [f.name, f"row {r + 1}"]
        if kind == "truncate":
            data = f.read_bytes()
            start, end = _row_spans(data)[r]
            cut = rng.randint(1, end - start - 1)  # strictly inside the row
            f.write_bytes(data[: start + cut])
        elif kind == "columns":
            if rng.random() < 0.5:
                del rows[r][rng.randrange(6)]
            else:
                rows[r].insert(rng.randrange(7), "extra")
            f.write_bytes(csv_bytes(rows))
        elif kind == "answer":
            rows[r][5] = rng.choice(["E", "Z", "", "AB", "1", "A B", "?", "é", "0", "-", "answer", "(A", "F"])
            f.write_bytes(csv_bytes(rows))
        elif kind == "empty_question":
            rows[r][0] = rng.choice(["", "   ", "\n"])
            f.write_bytes(csv_bytes(rows))
        elif kind == "choices":
            if rng.random() < 0.5:
                for j in rng.sample(range(1, 5), 3):
                    rows[r][j] = ""
            else:
                j = rng.randrange(1, 4)  # not the last choice (trailing empties are dropped)
                rows[r][j] = ""
                rows[r][5] = "ABCD"[j - 1]
            f.write_bytes(csv_bytes(rows))
        elif kind == "encoding":
            data = bytearray(f.read_bytes())
            start, end = _row_spans(bytes(data))[r]
            pos = rng.randint(start + 1, end - 1)
            bad = rng.choice([b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xe9", b"\xa0\xa1", b"\xed\xa0\x80"])
            if rng.random() < 0.5:  # a row re-encoded as Latin-1 among UTF-8 rows (mixed encodings)
                rows[r][0] += " café"
                data = bytearray(csv_bytes(rows))
                start, end = _row_spans(bytes(data))[r]
                line = bytes(data[start:end]).decode("utf-8").encode("latin-1")
                data[start:end] = line
            else:
                data[pos:pos] = bad
            f.write_bytes(bytes(data))
            needles.append("UTF-8")
        elif kind == "utf16":
            f.write_bytes(csv_bytes(rows).decode("utf-8").encode("utf-16"))
            needles = [f.name, "UTF-8"]
        elif kind in ("empty_file", "blank_file"):
            f.write_bytes(b"" if kind == "empty_file" else b"\n\n  \n")
            needles = [f.name, "empty"]
        elif kind == "header":
            f.write_bytes(csv_bytes([["question", "A", "B", "C", "D", "answer"], *rows]))
            needles = [f.name, "row 1"]
        elif kind == "duplicate":
            shutil.copy(f, d / f.name)  # the same subject/split flat and in its split folder
            needles = ["duplicate", f.name]
        elif kind == "missing_split":
            for s in SUBJECTS:
                (d / split / f"{s}_{split}.csv").unlink()
            if split == "val":  # a missing val split is carved from test by design: not an error
                split = "dev"
                for s in SUBJECTS:
                    (d / "dev" / f"{s}_dev.csv").unlink()
            command, extra = ("eval", ["data.split=dev"]) if split == "dev" else ("train", [])
            needles = ["data.split" if split == "dev" else "data.train_split"]
        elif kind == "no_csv":
            for p in d.rglob("*.csv"):
                p.rename(p.with_suffix(".txt"))
            needles = [str(d), "no MMLU CSV"]
        elif kind == "nonexistent":
            shutil.rmtree(d)
            needles = [str(d), "no such file"]
        elif kind == "nul":
            data = bytearray(f.read_bytes())
            start, end = _row_spans(bytes(data))[r]
            data[end - 1 : end - 1] = b"\x00"  # inside the quoted answer: the answer is no letter
            f.write_bytes(bytes(data))
        argv = [command, *RUN_ARGS, f"data.path={d}", *extra, f"out={g.run}"]
        g.add("dataset", f"{kind} {f.relative_to(d)} row {r + 1}", argv, needles)


def _write_rows(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        cols = list(dict.fromkeys(k for x in rows for k in x))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        path.write_text(buf.getvalue(), encoding="utf-8")


def gen_hub(g: Gen, n: int) -> None:
    """Local copies of hub datasets (Global-MMLU, AfriMMLU, cais/mmlu schemas) with broken rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = g.rng
    kinds = ["missing_column", "bad_json", "not_object", "bad_answer", "bad_utf8", "empty", "extra_field",
             "corrupt_parquet", "duplicate_id", "afri_choices", "cais_answer", "empty_question"]
    for _ in range(n):
        kind = rng.choice(kinds)
        d = g.folder("hub")
        rows = hub_rows()
        r = rng.randrange(len(rows))
        fmt = rng.choice(["jsonl", "csv", "json"])
        name, lang = "global-mmlu", "yo"
        if kind == "missing_column":
            fmt = rng.choice(["jsonl", "json"])
            col = rng.choice(["question", "option_a", "option_c", "answer", "subject"])
            del rows[r][col]
            needles = [col, f"row {r + 1}"]
        elif kind == "bad_answer":
            row_no = r + 2 if fmt == "csv" else r + 1  # csv rows count the header
            rows[r]["answer"] = rng.choice(["E", "", "AB", "x", "5"])
            needles = [f"row {row_no}", "answer"]
        elif kind == "empty_question":
            rows[r]["question"] = rng.choice(["", "  "])
            needles = [f"row {r + 2 if fmt == 'csv' else r + 1}", "empty question"]
        elif kind == "duplicate_id":
            rows[r]["sample_id"] = rows[(r + 1) % len(rows)]["sample_id"]
            needles = ["duplicate row id"]
        elif kind == "afri_choices":
            name, lang, fmt = "afrimmlu", "yor", "jsonl"
            rows = [{"question": f"q{i}", "choices": "['a', 'b', 'c', 'd']", "answer": "A", "subject": "anatomy"}
                    for i in range(ROWS)]
            rows[r]["choices"] = rng.choice(["['a', 'b'", "not a list", "{'a': 1}", "7"])
            needles = [f"row {r + 1}", "choices"]
        elif kind == "cais_answer":
            name, lang, fmt = "cais-mmlu", "en", "jsonl"
            rows = [{"question": f"q{i}", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": i % 4}
                    for i in range(ROWS)]
            rows[r]["answer"] = rng.choice([4, 9, -1, "E"])
            needles = [f"row {r + 1}", "answer"]
        elif kind in ("bad_json", "not_object", "bad_utf8", "empty"):
            fmt = "jsonl"
        elif kind == "extra_field":
            fmt = "csv"
        elif kind == "corrupt_parquet":
            fmt = "parquet"
        path = d / f"test.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
            data = path.read_bytes()
            path.write_bytes(data[: rng.randrange(4, len(data) - 8)])
            needles = ["parquet"]
        else:
            _write_rows(path, rows, fmt)
        if kind == "bad_json":
            lines = path.read_text(encoding="utf-8").splitlines()
            lines[r] = lines[r][: rng.randint(1, len(lines[r]) - 1)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles = ["invalid JSON", f"row {r + 1}"]
        elif kind == "not_object":
            lines = path.read_text(encoding="utf-8").splitlines()
            lines[r] = json.dumps(rng.choice([[1, 2], "text", 3, None]))
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles = ["not an object", f"row {r + 1}"]
        elif kind == "bad_utf8":
            data = path.read_bytes()
            pos = rng.randrange(1, len(data) - 1)
            path.write_bytes(data[:pos] + rng.choice([b"\xff", b"\xc3\x28", b"\x80"]) + data[pos:])
            needles = ["UTF-8"]
        elif kind == "empty":
            path.write_bytes(rng.choice([b"", b"\n\n"]))
            needles = ["no rows"]
        elif kind == "extra_field":
            lines = path.read_text(encoding="utf-8").splitlines()
            lines[r + 1] += ",surplus"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles = ["more fields", f"row {r + 2}"]
        if kind != "empty":
            needles = [path.name, *needles]
        argv = ["eval", *RUN_ARGS, f"data={name}", f"data.language={lang}", f"data.path={d}", "data.split=test",
                f"out={g.run}"]
        g.add("hub", f"{kind} {path.name}", argv, needles)


def _dataclass_fields():
    from starloop.config import Config

    for group in dataclasses.fields(Config):
        default = getattr(Config(), group.name)
        if dataclasses.is_dataclass(default):
            for f in dataclasses.fields(default):
                yield f"{group.name}.{f.name}", f.type, getattr(default, f.name)
        else:
            yield group.name, group.type, default


def gen_configs(g: Gen) -> None:
    import torch

    from starloop.config import CHOICES, RANGES
    from starloop.hydra_config import GROUP_OPTIONS

    rng = g.rng
    def command() -> str:
        return rng.choice(["train", "eval"])

    # Unknown keys.
    groups = ["model", "data", "prompt", "eval", "trainer", "logger", ""]
    for grp in groups:
        for name in rng.sample(["foo", "lr_rate", "batchsize", "limit2", "seeed", "x", "max_tokens", "learning_rate",
                                "iteration", "dropout"], 4):
            key = f"{grp}.{name}" if grp else name
            prefix = rng.choice(["", "", "+", "++"])
            g.add("config", f"unknown key {prefix}{key}", g.base(command(), f"{prefix}{key}=1"), [key])
    # Wrong types.
    bad_for = {"int": ["abc", "1.5", "[1]", "{a: 1}", "true2"], "float": ["abc", "[1]", "fast", "{}"],
               "bool": ["maybe", "[true]", "yes please", "2x"], "list": ["7", "{a: 1}"],
               "str": ["[1, 2]", "{a: 1}"]}
    for key, typ, _ in _dataclass_fields():
        t = str(typ)
        kind = ("list" if "list" in t else "bool" if "bool" in t else "float" if "float" in t
                else "int" if "int" in t else "str" if "str" in t else None)
        if kind is None or key in ("out",):
            continue
        for v in rng.sample(bad_for[kind], 2 if kind in ("int", "float", "bool") else 1):
            g.add("config", f"wrong type {key}={v}", g.base(command(), f"{key}={v}"), [key])
    # Out of range.
    for key, (lo, hi) in RANGES.items():
        if lo is not None:
            for v in {lo - 1 if isinstance(lo, int) else lo - 0.5, -1000}:
                g.add("config", f"below range {key}={v}", g.base(command(), f"{key}={v}"), [key])
        if hi is not None:
            v = hi + 1 if isinstance(hi, int) else hi + 0.5
            g.add("config", f"above range {key}={v}", g.base(command(), f"{key}={v}"), [key])
    # Unknown enum values.
    for key in CHOICES:
        for v in ("nope", "SFT2", "none_of_these"):
            g.add("config", f"bad choice {key}={v}", g.base(command(), f"{key}={v}"), [key])
    for grp in [*GROUP_OPTIONS, "prompt", "trainer", "launcher"]:
        if grp == "model":
            continue  # model=NAME is a path or hub id: covered below
        g.add("config", f"bad group option {grp}", g.base(command(), f"{grp}=nope_option"), [grp])
    # Malformed overrides.
    for o, needle in [("data.limit", "data.limit"), ("data.limit=[1,", "data.limit"), ("trainer.lr=1e-4)", "trainer.lr"),
                      ("data..limit=3", "data..limit"), ("~data.limit", "data.limit"), ("data.limit=${oops}", "data.limit"),
                      ("data.limit=", "data.limit"), ("trainer.lr='0.1", "trainer.lr"), ("eval.mode=[generate", "eval.mode"),
                      ("+data.limit=3", "data.limit"), ("seed=1,2", "seed"), ("trainer.lr=${trainer.nope}", "trainer.lr"),
                      ("data.subjects=nope", "data.subjects"), ("trainer.lora_target_modules=7", "trainer.lora_target_modules")]:
        g.add("config", f"malformed {o}", g.base(command(), o), [needle])
    # Bytes that are not UTF-8 (arrive as lone surrogates).
    for key in ("data.path", "out", "trainer.lr", "model.name", "data.language", "trainer.preload_data_for_training",
                "checkpoint", "data.subjects"):
        for bad in ("\udcff", "caf\udce9", "\udcc3("):  # bytes ff; e9 (Latin-1 é); c3 + "("
            g.add("config", f"non-UTF-8 {key}", g.base(command(), f"{key}=x{bad}y"), [key, "UTF-8"])
    g.add("config", "non-UTF-8 key", g.base("train", "da\udcffta.limit=3"), ["da\\udcffta.limit", "UTF-8"])
    # Values that compose but name nothing real.
    for o, needle in [("data.language=xx", "data.language"), ("data.language=klingon", "data.language"),
                      ("data.subjects=[nope]", "data.subjects"), ("data.subjects=[anatomy,nope]", "data.subjects"),
                      ("model.device=nope", "model.device"), ("model.device=cuda:99", "model.device"),
                      ("model.device=tpu", "model.device"), ("model.dtype=nope", "model.dtype"),
                      ("model.dtype=Tensor", "model.dtype"), ("model=./no_such_model", "model.name"),
                      ("model=/no/such/model", "model.name"), ("model.name=/no/such/file.gguf", "model.name"),
                      (f"model={g.data_ok}", "model.name"), ("data.train_split=dev", "data.train_split")]:
        g.add("config", f"unresolvable {o}", g.base(command(), o), [needle])
    if not torch.cuda.is_available():
        g.add("config", "cuda without a GPU", g.base("train", "model.device=cuda"), ["model.device", "CUDA"])
    g.add("config", "dpo with one sample", g.base("train", "trainer.strategy=dpo", "trainer.samples_per_question=1"),
          ["trainer.samples_per_question"])


def gen_preload(g: Gen, n: int) -> None:
    rng = g.rng
    kinds = ["missing_column", "bad_int", "bad_utf8", "nonexistent", "folder", "extra_field", "truncate",
             "empty_id", "empty_file", "header_only", "utf16"]
    for _ in range(n):
        kind = rng.choice(kinds)
        d = g.folder("preload")
        path = d / "generated.csv"
        shutil.copy(g.preload_ok, path)
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        header = lines[0].split(",")
        r = rng.randrange(1, len(lines))  # a data line; its row number (header = row 1) is r + 1
        needles = [path.name, f"row {r + 1}"]
        if kind == "missing_column":
            col = rng.choice(["question_id", "prompt", "rationale"])
            i = header.index(col)
            lines = [",".join(x for j, x in enumerate(ln.split(",")) if j != i) for ln in lines]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles = [path.name, col]
        elif kind == "bad_int":
            col = rng.choice(["sample_index", "n_tokens"])
            i = header.index(col)
            parts = lines[r].split(",")
            parts[i] = rng.choice(["x", "1.5", "two", "1e3"])
            lines[r] = ",".join(parts)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append(col)
        elif kind == "bad_utf8":
            data = path.read_bytes()
            pos = rng.randrange(len(data) // 3, len(data) - 1)
            path.write_bytes(data[:pos] + rng.choice([b"\xff", b"\xe9", b"\x80\x80"]) + data[pos:])
            needles = [path.name, "UTF-8"]
        elif kind == "utf16":
            path.write_bytes(text.encode("utf-16"))
            needles = [path.name, "UTF-8"]
        elif kind == "nonexistent":
            path.unlink()
            needles = [path.name, "not found"]
        elif kind == "folder":
            path.unlink()
            path.mkdir()
            needles = [path.name, "not found"]
        elif kind == "extra_field":
            lines[r] += ",surplus"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append("more fields")
        elif kind == "truncate":
            r = len(lines) - 1
            cut = rng.randint(1, len(lines[r]) - 2)
            path.write_text("\n".join(lines[:r]) + "\n" + lines[r][:cut], encoding="utf-8")
            needles = [path.name, f"row {r + 1}"]
        elif kind == "empty_id":
            lines[r] = "," + lines[r].split(",", 1)[1]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append("question_id")
        elif kind == "empty_file":
            path.write_bytes(b"")
            needles = [path.name, "missing column"]
        elif kind == "header_only":
            path.write_text(lines[0] + "\n", encoding="utf-8")
            needles = [path.name, "no rows"]
        key = rng.choice(["trainer.preload_data_for_training", "trainer.preload_data_for_val"])
        g.add("preload", f"{kind} ({key})", g.base("train", f"{key}={path}"), needles)


def gen_checkpoints(g: Gen, n: int) -> None:
    rng = g.rng
    adapter = g.run / "iter_1" / "train" / "adapter"
    kinds = ["no_config", "no_weights", "bad_json", "not_dict", "no_peft_type", "truncated_weights",
             "garbage_weights", "nonexistent", "a_file", "empty_folder", "iter_without_adapter", "config_utf8"]
    for _ in range(n):
        kind = rng.choice(kinds)
        d = g.folder("ckpt")
        ck = d / "adapter"
        shutil.copytree(adapter, ck)
        target, needles = ck, []
        weights, cfgf = ck / "adapter_model.safetensors", ck / "adapter_config.json"
        if kind == "no_config":
            cfgf.unlink()
            needles = ["checkpoint", "adapter_config.json"]
        elif kind == "no_weights":
            weights.unlink()
            needles = [weights.name, "missing"]
        elif kind == "bad_json":
            cfgf.write_text(cfgf.read_text()[: rng.randint(1, 40)], encoding="utf-8")
            needles = [cfgf.name]
        elif kind == "config_utf8":
            cfgf.write_bytes(b'{"peft_type": "LORA\xff"}')
            needles = [cfgf.name]
        elif kind == "not_dict":
            cfgf.write_text(rng.choice(["[]", "3", '"LORA"', "null"]), encoding="utf-8")
            needles = [cfgf.name]
        elif kind == "no_peft_type":
            c = json.loads(cfgf.read_text())
            c.pop("peft_type", None)
            cfgf.write_text(json.dumps(c), encoding="utf-8")
            needles = [cfgf.name, "peft_type"]
        elif kind == "truncated_weights":
            data = weights.read_bytes()
            weights.write_bytes(data[: rng.randrange(0, len(data) - 1)])
            needles = [weights.name]
        elif kind == "garbage_weights":
            weights.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))
            needles = [weights.name]
        elif kind == "nonexistent":
            target = d / "nothing_here"
            needles = ["checkpoint", "nothing_here"]
        elif kind == "a_file":
            target = weights
            needles = ["checkpoint", weights.name]
        elif kind == "empty_folder":
            shutil.rmtree(ck)
            ck.mkdir()
            needles = ["checkpoint", "adapter_config.json"]
        elif kind == "iter_without_adapter":
            it = d / "iter_1"
            (it / "train").mkdir(parents=True)
            shutil.rmtree(ck)
            target = it
            needles = ["checkpoint", "iter_1"]
        out = d / "eval_out"
        shutil.copytree(g.run / "iter_0", out / "iter_0")  # an existing folder that must stay untouched
        g.add("checkpoint", kind, g.base("eval", f"checkpoint={target}", out=out), needles, out=out)


def gen_run_folders(g: Gen) -> None:
    """Resuming a run whose folder was damaged (files lost, saved config corrupt) or with another config."""
    damages = [
        ("iter_1/train/adapter/adapter_model.safetensors", "delete", "adapter_model.safetensors"),
        ("iter_1/train/adapter/adapter_config.json", "delete", "adapter_config.json"),
        ("iter_1/train/log.jsonl", "delete", "log.jsonl"),
        ("iter_1/val/metrics.json", "delete", "metrics.json"),
        ("iter_0/val/generations.csv", "delete", "generations.csv"),
        ("iter_1/sample/generations.csv", "delete", "generations.csv"),
        ("iter_1/train/adapter/adapter_model.safetensors", "garbage", "adapter_model.safetensors"),
        ("config.yaml", "garbage", "config.yaml"),
        ("config.yaml", "latin1", "config.yaml"),
        ("config.yaml", "list", "config.yaml"),
    ]
    for rel, how, needle in damages:
        d = g.folder("runfolder") / "run"
        shutil.copytree(g.run, d)
        p = d / rel
        if how == "delete":
            p.unlink()
        elif how == "garbage":
            p.write_bytes(b"\x00\x01 not : [ valid")
        elif how == "latin1":
            p.write_bytes(b"model: caf\xe9\n")
        elif how == "list":
            p.write_text("- 1\n- 2\n", encoding="utf-8")
        g.add("run folder", f"{how} {rel}", g.base("train", out=d), [needle], out=d)
    for o, key in [("trainer.lr=0.5", "trainer.lr"), ("seed=7", "seed"), ("trainer.samples_per_question=3",
                   "trainer.samples_per_question"), ("data.limit=3", "data.limit"), ("trainer.strategy=reinforce",
                   "trainer.strategy")]:
        g.add("run folder", f"resume with {o}", g.base("train", o), [key])


@contextlib.contextmanager
def _disk_full():
    from starloop import runstate

    old = runstate.MIN_FREE_BYTES
    runstate.MIN_FREE_BYTES = 1 << 62
    try:
        yield
    finally:
        runstate.MIN_FREE_BYTES = old


@contextlib.contextmanager
def _busy(folder: Path):
    """The folder's lock held as another process holds it (its own open file, not this process's RunLock)."""
    import fcntl

    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def gen_outputs(g: Gen) -> None:
    d = g.folder("outputs")
    a_file = d / "a_file"
    a_file.write_text("x")
    for out, needle in [(a_file / "run", "a_file"), (a_file, "a_file"), (Path("/proc/starloop_run"), "/proc"),
                        (Path("/proc/self/starloop_run"), "/proc/self")]:
        for command in ("train", "eval"):
            g.add("output", f"{command} out={out}", g.base(command, out=out), [needle, "not writable"], out=g.run)
    g.add("output", "train disk full", g.base("train"), [str(g.run), "MB free"], inprocess_only=True,
          patch=_disk_full)
    g.add("output", "eval disk full", g.base("eval", out=d / "ev"), [str(d / "ev"), "MB free"], out=d / "ev",
          inprocess_only=True, patch=_disk_full)
    busy = d / "busy_run"
    shutil.copytree(g.run, busy)
    g.add("output", "train on a run folder in use", g.base("train", out=busy), ["another starloop run"], out=busy,
          patch=lambda: _busy(busy))


def generate(root: Path, seed: int, run: Path, scale: float = 1.0) -> list[Case]:
    data_ok = root / "data_ok"
    if not data_ok.exists():
        write_dataset(data_ok)
    preload_ok = root / "preload_ok.csv"
    write_preload(preload_ok)
    shutil.rmtree(root / "cases", ignore_errors=True)
    g = Gen(root, random.Random(seed), run, data_ok, preload_ok)
    gen_datasets(g, int(170 * scale))
    gen_hub(g, int(50 * scale))
    gen_configs(g)
    gen_preload(g, int(50 * scale))
    gen_checkpoints(g, int(30 * scale))
    gen_run_folders(g)
    gen_outputs(g)
    generate_more(g, root / "eval_run", _dataclass_fields)
    return g.cases


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
    done = folder / ("iter_1/val/DONE" if command == "train" else "results.csv")
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
