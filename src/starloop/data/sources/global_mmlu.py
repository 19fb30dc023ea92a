"""Global-MMLU (CohereForAI): MMLU in 42 languages, translated and culturally annotated."""

from __future__ import annotations

import re
from typing import Any

from starloop.data.rows import Collector, Location
from starloop.data.source import HubSpec, Source

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


_LANGUAGES = ["am", "ar", "bn", "cs", "de", "el", "en", "es", "fa", "fil", "fr", "ha", "he", "hi", "id", "ig", "it", "ja", "ko", "ky", "lt", "mg", "ms", "ne", "nl", "ny", "pl", "pt", "ro", "ru", "si", "sn", "so", "sr", "sv", "sw", "te", "tr", "uk", "vi", "yo", "zh"]

SOURCE = Source(
    "global-mmlu", "MMLU in 42 languages (CohereForAI/Global-MMLU)", "Apache-2.0",
    languages={c: c for c in _LANGUAGES}, default_language="yo",
    hub=HubSpec("global-mmlu", "CohereForAI/Global-MMLU", {"dev": "dev", "test": "test"},
                ("sample_id", "subject", "question", "option_a", "option_b", "option_c", "option_d", "answer"),
                _global, optional=("sample_id",)),
)
