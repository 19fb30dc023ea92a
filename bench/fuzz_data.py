"""Broken datasets for `bench/fuzz.py`: local MMLU CSV folders and local copies of hub datasets."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path

from fuzz_inputs import ROWS, RUN_ARGS, SPLITS, SUBJECTS, Gen, csv_bytes, hub_rows, q_row


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
