"""Local copies of hub datasets: find the files of each split and language under `data.path`, read their rows.

A copy is a folder saved with `datasets`' `save_to_disk`, or parquet / jsonl / json / csv / tsv files in the
hub schema, laid out as on the hub or flat: the split comes from the path (`test/mmlu_YO-NG.csv`,
`yo/dev-00000-of-00001.parquet`, `data/yor/val.tsv`; no split in the path = `test`), the language from a path
part naming the source's config (`YO-NG`, `yo`, `yor`). Files that name no language hold the requested one.
No network and no `datasets` cache are involved for plain files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starloop.data.rows import Location, native_split
from starloop.errors import DataError

_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


@dataclass(frozen=True)
class Unit:
    """A file, or a save_to_disk folder (`split` None when it is a DatasetDict holding several splits)."""

    path: Path
    rel: str
    split: str | None
    disk: bool = False


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def _split_of(rel: str) -> str | None:
    """The deepest split name in a relative path; None if it names none."""
    found = None
    for tok in _tokens(rel):
        found = native_split(tok) or found
    return found


def discover(root: Path) -> list[Unit]:
    """Every readable unit under `root` (or `root` itself when it is a file)."""
    if not root.exists():
        raise DataError(root, "no such file or folder")
    if root.is_file():
        return [Unit(root, root.name, _split_of(root.stem) or "test")]
    units: list[Unit] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if "dataset_dict.json" in names or "state.json" in names:
            dict_like = "dataset_dict.json" in names
            split = None if dict_like else (_split_of(rel_dir) or "test")
            units.append(Unit(here, rel_dir or here.name, split, disk=True))
            dirs.clear()  # its arrow shards are not separate units
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            # cais/mmlu's auxiliary_train (RACE, ARC, ...) is not MMLU; never let it pose as a `train` split.
            if name.lower().endswith(_EXTENSIONS) and "auxiliary" not in _tokens(rel):
                units.append(Unit(here / name, rel, _split_of(rel) or "test"))
    return units


def language_of(unit: Unit, configs: dict[str, str]) -> str | None:
    """The language code whose config (`YO_NG` -> tokens yo, ng) appears as consecutive path tokens."""
    toks = _tokens(unit.rel)
    best: tuple[int, str] | None = None
    for code, config in configs.items():
        want = _tokens(config)
        if not want:
            continue
        for i in range(len(toks) - len(want) + 1):
            if toks[i : i + len(want)] == want and (best is None or len(want) > best[0]):
                best = (len(want), code)
    return best[1] if best else None


def units_by_language(units: list[Unit], configs: dict[str, str]) -> dict[str | None, list[Unit]]:
    """Units grouped by detected language (key None: the path names no language)."""
    out: dict[str | None, list[Unit]] = {}
    for u in units:
        out.setdefault(language_of(u, configs), []).append(u)
    return out


def splits_of(units: list[Unit]) -> set[str]:
    """Native splits these units hold (opens DatasetDict folders to list their splits)."""
    found: set[str] = set()
    for u in units:
        if u.split is not None:
            found.add(u.split)
        else:
            names = json.loads((u.path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
            found |= {s for s in (native_split(n) for n in names) if s}
    return found


def read_units(units: list[Unit], split: str) -> Iterator[tuple[Location, dict[str, Any]]]:
    """(location, row dict) of every row of native `split` in `units`, in path order."""
    for u in sorted(units, key=lambda u: u.rel):
        if u.disk:
            yield from _read_disk(u, split)
        elif u.split == split:
            yield from _read_file(u.path)


def _read_disk(u: Unit, split: str) -> Iterator[tuple[Location, dict[str, Any]]]:
    import datasets  # heavy: only for save_to_disk folders

    try:
        ds = datasets.load_from_disk(str(u.path))
    except (OSError, ValueError) as e:
        raise DataError(u.path, f"cannot read save_to_disk folder: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = [n for n in ds if native_split(n) == split]
        parts = [(f"{u.path}[{n}]", ds[n]) for n in names]
    else:
        parts = [(str(u.path), ds)] if u.split == split else []
    for display, part in parts:
        for i, row in enumerate(part):
            yield Location(display, i + 1), row


def _read_file(path: Path) -> Iterator[tuple[Location, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises its own error types for corrupt files
            raise DataError(path, f"cannot read parquet: {e}") from None
        for i, row in enumerate(rows):
            yield Location(str(path), i + 1), row
        return
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if suffix in (".csv", ".tsv"):
        # Row numbers count the header as row 1, like a spreadsheet (and records.read_samples).
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            for i, row in enumerate(reader, start=2):
                if None in row:
                    raise DataError(path, "more fields than header columns", row=i)
                yield Location(str(path), i), row
        except csv.Error as e:
            raise DataError(path, f"malformed CSV: {e}") from None
    elif suffix == ".json" and text.lstrip().startswith("["):
        for i, row in enumerate(_json(text, path, None)):
            yield Location(str(path), i + 1), row
    else:  # JSON lines
        # split("\n"), not splitlines(): U+2028 may sit unescaped inside a JSON string.
        for i, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                yield Location(str(path), i), _json(line, path, i)


def _json(text: str, path: Path, row: int | None) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON: {e.msg}", row=row if row is not None else e.lineno) from None
    if row is not None and not isinstance(value, dict):
        raise DataError(path, "a JSON line is not an object", row=row)
    return value
