"""AfriMMLU (Masakhane): a subset of MMLU human-translated into 17 African languages."""

from __future__ import annotations

from typing import Any

from starloop.data.languages import iso3
from starloop.data.rows import Collector, Location, parse_choices
from starloop.data.source import HubSpec, Source


def _afrimmlu(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    # The real dataset stores choices as the repr of a Python list: "['a', 'b', 'c', 'd']".
    c.add(loc, row["subject"], row["question"], parse_choices(row["choices"], loc), row["answer"])


_LANGUAGES = ["am", "en", "ee", "fr", "ha", "ig", "rw", "ln", "lg", "om", "sn", "st", "sw", "tw", "wo", "xh", "yo", "zu"]

SOURCE = Source(
    "afrimmlu", "MMLU subset in 17 African languages (masakhane/afrimmlu)", "Apache-2.0",
    languages={c: iso3(c) for c in _LANGUAGES}, default_language="yor",
    hub=HubSpec("afrimmlu", "masakhane/afrimmlu", {"dev": "dev", "val": "validation", "test": "test"},
                ("question", "choices", "answer", "subject"), _afrimmlu),
)
