"""Hub datasets (cais/mmlu, openai/MMMLU, CohereForAI/Global-MMLU, masakhane/afrimmlu) as `Question`s.

One small converter per dataset maps a row of its hub schema onto `Collector.add`; rows come either from
`datasets.load_dataset` (imported lazily, only when no `data.path` is given) or from a local copy
(`local_files`), so tests run the very conversion code real downloads go through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starloop.data.rows import Collector, Location, parse_choices
from starloop.errors import DataError, StarloopError

Converter = Callable[[Collector, Location, dict[str, Any]], None]


@dataclass(frozen=True)
class HubSpec:
    """A hub dataset: repo id, its split names per native split, the columns a row must have."""

    name: str
    repo: str
    splits: dict[str, str]  # native split -> the hub's split name
    columns: tuple[str, ...]
    convert: Converter


def _cais(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    # answer is a ClassLabel int (0-3); choices a list (accept its string form too).
    c.add(
        loc,
        row["subject"],
        row["question"],
        parse_choices(row["choices"], loc),
        row["answer"],
        int_answer=True,
    )


def _mmmlu(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    # The unnamed first column is the row's index in the English test set: unique, so repeats are bad data.
    key = row.get("Unnamed: 0", row.get(""))
    c.add(
        loc,
        row["Subject"],
        row["Question"],
        [row[k] for k in "ABCD"],
        row["Answer"],
        key=None if key in (None, "") else str(key),
    )


_SAMPLE_ID = re.compile(r"^(?P<subject>[^/]+)/(?P<split>[^/]+)/(?P<index>\d+)$")


def _global(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    # sample_id looks like `abstract_algebra/test/0`: its number is the row's index within the subject, so
    # ids line up with cais/mmlu and the bundled MMLU even in a filtered local copy.
    sid = row.get("sample_id")
    m = _SAMPLE_ID.match(str(sid or ""))
    c.add(
        loc,
        row["subject"],
        row["question"],
        [row[f"option_{k}"] for k in "abcd"],
        row["answer"],
        index=int(m["index"]) if m else None,
        key=None if sid in (None, "") else str(sid),
    )


def _afrimmlu(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    # The real dataset stores choices as the repr of a Python list: "['a', 'b', 'c', 'd']".
    c.add(loc, row["subject"], row["question"], parse_choices(row["choices"], loc), row["answer"])


SPECS: dict[str, HubSpec] = {
    s.name: s
    for s in (
        HubSpec(
            "cais-mmlu",
            "cais/mmlu",
            {"dev": "dev", "val": "validation", "test": "test"},
            ("question", "subject", "choices", "answer"),
            _cais,
        ),
        HubSpec(
            "mmmlu",
            "openai/MMMLU",
            {"test": "test"},
            ("Question", "A", "B", "C", "D", "Answer", "Subject"),
            _mmmlu,
        ),
        HubSpec(
            "global-mmlu",
            "CohereForAI/Global-MMLU",
            {"dev": "dev", "test": "test"},
            ("sample_id", "subject", "question", "option_a", "option_b", "option_c", "option_d", "answer"),
            _global,
        ),
        HubSpec(
            "afrimmlu",
            "masakhane/afrimmlu",
            {"dev": "dev", "val": "validation", "test": "test"},
            ("question", "choices", "answer", "subject"),
            _afrimmlu,
        ),
    )
}


def convert_rows(spec: HubSpec, rows: Iterator[tuple[Location, Any]], collector: Collector) -> None:
    """Run every row through the spec's converter, naming file and row on schema errors."""
    required = set(spec.columns) - {"sample_id"}  # Global-MMLU copies without sample_id still load
    for loc, row in rows:
        if not isinstance(row, dict):
            raise DataError(loc.path, f"row is a {type(row).__name__}, not a record", row=loc.row)
        missing = sorted(required - set(row))
        if missing:
            raise DataError(
                loc.path,
                f"missing column(s) {', '.join(missing)}; {spec.repo} rows have {', '.join(spec.columns)}",
                row=loc.row,
            )
        spec.convert(collector, loc, row)


def remote_rows(spec: HubSpec, config: str, split: str) -> Iterator[tuple[Location, Any]]:
    """Rows of one split from the hub (or the `datasets` cache); StarloopError when it cannot be reached."""
    import datasets  # heavy and network-bound: only when a hub source is used without data.path

    hub_split = spec.splits[split]
    try:
        ds = datasets.load_dataset(spec.repo, config, split=hub_split)
    except Exception as e:
        if _is_network_error(e):
            raise StarloopError(
                f"could not download {spec.repo} (config {config}, split {hub_split}) from the Hugging Face Hub "
                f"({type(e).__name__}); without network, copy it to this machine (save_to_disk, or its "
                f"parquet/jsonl/csv files) and set data.path=<that folder>"
            ) from e
        raise
    display = f"hf://datasets/{spec.repo}[{config}]/{hub_split}"
    for i, row in enumerate(ds):
        yield Location(display, i + 1), row


def _is_network_error(e: BaseException) -> bool:
    """True for the many ways datasets/huggingface_hub/requests/httpx say the hub is unreachable."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        name = type(cur).__name__
        if isinstance(cur, (ConnectionError, TimeoutError)) or any(
            k in name for k in ("Connect", "Timeout", "Offline", "LocalEntryNotFound", "HTTP", "Network")
        ):
            return True
        if isinstance(cur, OSError) and any(
            k in str(cur) for k in ("reach", "offline", "connection", "resolve")
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
