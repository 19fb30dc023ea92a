"""OpenAI MMMLU: MMLU test professionally translated into 14 languages (Yoruba: YO_NG)."""

from __future__ import annotations

from typing import Any

from starloop.data.rows import Collector, Location
from starloop.data.source import HubSpec, Source


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


_LOCALES = ("AR_XY", "BN_BD", "DE_DE", "ES_LA", "FR_FR", "HI_IN", "ID_ID", "IT_IT", "JA_JP", "KO_KR", "PT_BR",
            "SW_KE", "YO_NG", "ZH_CN")

SOURCE = Source(
    "mmmlu", "MMLU test translated into 14 languages by professional translators (openai/MMMLU)", "MIT",
    languages={loc.split("_")[0].lower(): loc for loc in _LOCALES}, default_language="YO_NG",
    hub=HubSpec("mmmlu", "openai/MMMLU", {"test": "test"},
                ("Question", "A", "B", "C", "D", "Answer", "Subject"), _mmmlu),
)
