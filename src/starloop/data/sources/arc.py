"""AI2 Reasoning Challenge (Clark et al. 2018): grade-school science questions, Challenge and Easy sets.

Hub schema (allenai/ai2_arc, configs ARC-Challenge and ARC-Easy): id, question, choices {text, label},
answerKey. Most questions have 4 options, some 3 or 5; labels are letters (A-E) or digits (1-4), and a
digit key is the option's position starting at 1.
"""

from __future__ import annotations

from typing import Any

from starloop.data.rows import Collector, Location
from starloop.data.source import HubSpec, Source, labelled_answer


def _arc(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    ch = row["choices"]
    c.add(loc, "science", row["question"], list(ch["text"]),
          labelled_answer(list(ch["label"]), row["answerKey"], loc), key=str(row.get("id") or "") or None,
          int_answer=True)


def _arc_source(name: str, config: str, what: str) -> Source:
    return Source(
        name, f"ARC {what}: grade-school science, 3-5 options (allenai/ai2_arc {config})", "CC-BY-SA-4.0",
        languages={"en": config}, options=(3, 5), answer_format="label",
        hub=HubSpec(name, "allenai/ai2_arc", {"train": "train", "val": "validation", "test": "test"},
                    ("question", "choices", "answerKey"), _arc),
    )


CHALLENGE = _arc_source("arc-challenge", "ARC-Challenge", "Challenge set")
EASY = _arc_source("arc-easy", "ARC-Easy", "Easy set")
