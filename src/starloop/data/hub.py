"""Rows of hub datasets as `Question`s, through each source's converter (`starloop.data.sources`).

Rows come either from `datasets.load_dataset` (imported lazily, only when no `data.path` is given) or from
a local copy (`local_files`), so tests run the very conversion code real downloads go through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starloop.data.rows import Collector, Location
from starloop.data.source import HubSpec
from starloop.errors import DataError, StarloopError


def convert_rows(spec: HubSpec, rows: Iterator[tuple[Location, Any]], collector: Collector) -> None:
    """Run every row through the spec's converter, naming file and row on schema errors."""
    required = set(spec.columns) - set(spec.optional)
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
        ds = datasets.load_dataset(spec.repo, config or None, split=hub_split)
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
