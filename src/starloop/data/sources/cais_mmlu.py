"""MMLU on the hub (cais/mmlu), the same questions as the bundled copy."""

from __future__ import annotations

from typing import Any

from starloop.data.rows import Collector, Location, parse_choices
from starloop.data.source import HubSpec, Source


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


SOURCE = Source(
    "cais-mmlu", "MMLU from the hub (cais/mmlu)", "MIT", languages={"en": "all"},
    answer_format="index",
    hub=HubSpec("cais-mmlu", "cais/mmlu", {"dev": "dev", "val": "validation", "test": "test"},
                ("question", "subject", "choices", "answer"), _cais),
)
