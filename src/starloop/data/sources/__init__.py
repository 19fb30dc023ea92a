"""The registry of data sources: one line per source module. `data=` choices, presets, language lists and
loaders all derive from `SOURCES` (docs/extending.md shows how to add one)."""

from __future__ import annotations

from starloop.data.source import Source
from starloop.data.sources import afrimmlu, arc, cais_mmlu, commonsense_qa, global_mmlu, mmlu, mmlu_pro, mmmlu

SOURCES: dict[str, Source] = {s.name: s for s in (
    mmlu.MMLU,
    mmlu.MMLU_AFR,
    cais_mmlu.SOURCE,
    mmmlu.SOURCE,
    global_mmlu.SOURCE,
    afrimmlu.SOURCE,
    commonsense_qa.SOURCE,
    arc.CHALLENGE,
    arc.EASY,
    mmlu_pro.SOURCE,
)}

# Hub datasets by name (the rest are bundled archives).
SPECS = {name: s.hub for name, s in SOURCES.items() if s.hub is not None}
