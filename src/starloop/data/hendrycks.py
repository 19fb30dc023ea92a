"""MMLU in the hendrycks layout: headerless CSV `question,A,B,C,D,answer`, one file per subject and split.

Files are named `<subject>_<split>[_<lang>].csv` (`virology_val.csv`, `virology_val_zu.csv`) and may sit flat or
in split subfolders (`val/virology_val.csv`). They are found in a folder, a single file, or a `.tar.xz` archive
(the bundled copies, read in memory without extracting). Fields may hold newlines and files may use CRLF, so
rows are read with the csv module, never by splitting lines.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from starloop.data.rows import Collector, Location, native_split
from starloop.errors import DataError
from starloop.records import Question

N_COLUMNS = 6  # question, A, B, C, D, answer
_NAME = re.compile(
    r"^(?P<subject>.+)_(?P<split>dev|val|validation|test|train)(?:_(?P<lang>[a-z]{2,3}))?\.csv$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CsvFile:
    """One subject/split/language file, wherever it lives."""

    name: str  # path relative to the folder or archive root
    display: str  # what errors name
    subject: str
    split: str  # native: dev, val, test, train
    language: str  # file-name suffix; "" = none (the English original in mmlu-afr)
    read: Callable[[], bytes]


def parse_name(name: str) -> tuple[str, str, str] | None:
    """(subject, native split, language suffix) from `virology_val_zu.csv`, or None if not that pattern."""
    m = _NAME.match(Path(name).name)
    if not m:
        return None
    return m["subject"], native_split(m["split"]) or m["split"], (m["lang"] or "").lower()


def _entry(name: str, display: str, read: Callable[[], bytes], single: bool) -> CsvFile | None:
    parsed = parse_name(name)
    if parsed is None:
        if not single:
            return None  # README, auxiliary_train/race.csv, ...: not a subject file
        # A lone user file with any name: its questions form the `test` split of subject <stem>.
        parsed = (Path(name).stem, "test", "")
    subject, split, lang = parsed
    return CsvFile(name, display, subject, split, lang, read)


def scan(path: Path) -> list[CsvFile]:
    """All subject files under a folder, a single CSV file, or a `.tar.xz` archive."""
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_file() and path.name.endswith((".tar.xz", ".tar.gz", ".tar")):
        return _scan_archive(path)
    if path.is_file():
        return [e for e in [_entry(path.name, str(path), path.read_bytes, single=True)] if e]
    files = []
    for f in sorted(path.rglob("*.csv")):
        rel = f.relative_to(path).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        entry = _entry(rel, str(f), f.read_bytes, single=False)
        if entry:
            files.append(entry)
    return files


def _scan_archive(path: Path) -> list[CsvFile]:
    # The archive is read once into memory (7 MB for MMLU, ~0.1 s): xz has no random access, and a load
    # touches most members anyway.
    try:
        with tarfile.open(path, "r:*") as tf:
            blobs = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(path, f"cannot read archive: {e}") from None
    files = []
    for name in sorted(blobs):
        entry = _entry(name, f"{path}:{name}", lambda n=name: blobs[n], single=False)
        if entry:
            files.append(entry)
    return files


def read_rows(data: bytes, display: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based record number, fields) of each non-blank record; DataError on undecodable or malformed input."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            display, f"not valid UTF-8 ({e.reason} at byte {e.start})", row=_row_at(data, e.start)
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    row_no = 0
    try:
        for fields in reader:
            row_no += 1
            if fields:
                yield row_no, fields
    except csv.Error as e:
        raise DataError(display, f"malformed CSV: {e}", row=row_no + 1) from None


def _row_at(data: bytes, offset: int) -> int:
    """The record number holding byte `offset` (counting the valid records before it)."""
    prefix = data[:offset].decode("utf-8", errors="replace")
    records = list(csv.reader(io.StringIO(prefix, newline="")))
    complete = prefix.endswith(("\n", "\r")) or not records
    return len(records) + (1 if complete else 0)


def load_split(
    files: list[CsvFile], split: str, suffix: str | None, collector: Collector, where: str
) -> list[Question]:
    """Questions of native `split` from the files with language `suffix` (None = any), into `collector`.

    Files are read in name order so ids and order are the same on every machine.
    """
    chosen = [f for f in files if f.split == split and (suffix is None or f.language == suffix)]
    if not chosen:
        have = sorted({f.split for f in files if suffix is None or f.language == suffix})
        raise DataError(
            where,
            f"no CSV files for split {split!r}"
            + (f" (language suffix _{suffix})" if suffix else "")
            + f"; expected files named <subject>_{split}.csv; splits found: {', '.join(have) or 'none'}",
        )
    # Subfolder and flat copies of one subject/split get the same ids: Collector reports the repeat.
    for f in sorted(chosen, key=lambda f: (f.subject, f.name)):
        data = f.read()
        if not data.strip():  # truncated to nothing, or a failed copy: never a real subject file
            raise DataError(f.display, "empty file (no rows)")
        for index, (row_no, fields) in enumerate(read_rows(data, f.display)):
            loc = Location(f.display, row_no)
            if len(fields) != N_COLUMNS:
                raise DataError(
                    f.display,
                    f"expected {N_COLUMNS} columns (question, A, B, C, D, answer), got {len(fields)}",
                    row=row_no,
                )
            collector.add(loc, f.subject, fields[0], fields[1:5], fields[5], index=index)
    return collector.questions


def splits_of(files: list[CsvFile], suffix: str | None) -> set[str]:
    """Native splits present for a language suffix."""
    return {f.split for f in files if suffix is None or f.language == suffix}
