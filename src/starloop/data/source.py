"""What a data source is: one `Source` row per benchmark, and the `HubSpec` of the hub datasets.

A source is one module under `starloop/data/sources/` defining a `Source` (with, for a hub dataset, a
converter from one row of its hub schema to `Collector.add`), plus one line in that package's registry.
Everything else derives from the registry: the `data=` choices and presets, the languages `data.language`
accepts, and which loader reads the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starloop.data.rows import Collector, Location

Converter = Callable[[Collector, Location, dict[str, Any]], None]


@dataclass(frozen=True)
class HubSpec:
    """A hub dataset: repo id, its split names per native split, the columns a row must have."""

    name: str
    repo: str
    splits: dict[str, str]  # native split -> the hub's split name
    columns: tuple[str, ...]
    convert: Converter
    optional: tuple[str, ...] = ()  # columns a local copy may lack (Global-MMLU's sample_id)


@dataclass(frozen=True)
class Source:
    """One benchmark: where its rows come from and what its questions look like."""

    name: str  # the `data=` name
    title: str  # one line: what it is, who made it
    license: str
    # our language code -> the source's own name for it: the hub config, or the CSV file-name suffix
    # ("" = unsuffixed files)
    languages: dict[str, str] = field(default_factory=lambda: {"en": ""})
    default_language: str = "en"
    options: tuple[int, int] = (4, 4)  # fewest and most answer options of a question
    answer_format: str = "letter"  # letter (A-J) | index (0-based int) | label (the row's own labels)
    hub: HubSpec | None = None  # None: a bundled Hendrycks-layout archive in resources/data


def labelled_answer(labels: list[Any], key: Any, where: Location) -> int:
    """0-based index of answer `key` among a row's choice `labels` (`A`-`E`, or digits `1`-`4` as ARC
    sometimes has: a digit label is the option's position starting at 1)."""
    from starloop.errors import DataError

    k = str(key).strip()
    labels = [str(x).strip() for x in labels]
    if k in labels:
        return labels.index(k)
    if k.isdigit() and 1 <= int(k) <= len(labels):
        return int(k) - 1
    raise DataError(where.path, f"answer key {k!r} is not one of the choice labels {', '.join(labels)}",
                    row=where.row)
