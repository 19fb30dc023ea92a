"""Markdown pieces shared by `starloop report` and sweep summaries: tables and percentages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; "–" for a missing value (None or NaN)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; `|` and line breaks inside cells are escaped."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out
