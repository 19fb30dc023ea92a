"""MMLU-Pro (Wang et al., NeurIPS 2024): harder MMLU-style questions with up to 10 options (A-J).

Hub schema (TIGER-Lab/MMLU-Pro): question_id, question, options (a list of 3-10), answer (a letter),
answer_index, cot_content, category, src. The validation split (70 rows with worked rationales) serves
as `dev` (few-shot examples); `train`/`val` are carved from test like MMMLU's.
"""

from __future__ import annotations

from typing import Any

from starloop.data.rows import Collector, Location, parse_choices
from starloop.data.source import HubSpec, Source


def _mmlu_pro(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    qid = row.get("question_id")
    c.add(loc, row["category"], row["question"], parse_choices(row["options"], loc), row["answer"],
          key=None if qid in (None, "") else str(qid))


SOURCE = Source(
    "mmlu-pro", "MMLU-Pro: up to 10 options, 14 categories (TIGER-Lab/MMLU-Pro)", "MIT",
    languages={"en": "default"}, options=(3, 10),
    hub=HubSpec("mmlu-pro", "TIGER-Lab/MMLU-Pro", {"dev": "validation", "test": "test"},
                ("question", "options", "answer", "category"), _mmlu_pro),
)
