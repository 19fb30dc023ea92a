"""CommonsenseQA (Talmor et al., NAACL 2019): 5-option commonsense questions, STaR's own benchmark.

Hub schema (tau/commonsense_qa): id, question, question_concept, choices {label: [A-E], text: [...]},
answerKey. The test split has no answer keys, so train and validation are the native splits; `heldout`
and `test` do not exist.
"""

from __future__ import annotations

from typing import Any

from starloop.data.rows import Collector, Location
from starloop.data.source import HubSpec, Source, labelled_answer


def _csqa(c: Collector, loc: Location, row: dict[str, Any]) -> None:
    ch = row["choices"]
    c.add(loc, "commonsense", row["question"], list(ch["text"]),
          labelled_answer(list(ch["label"]), row["answerKey"], loc), key=str(row.get("id") or "") or None,
          int_answer=True)


SOURCE = Source(
    "commonsense-qa", "CommonsenseQA, 5 options (tau/commonsense_qa; STaR's benchmark)", "MIT",
    languages={"en": ""}, options=(5, 5), answer_format="label",
    hub=HubSpec("commonsense-qa", "tau/commonsense_qa", {"train": "train", "val": "validation"},
                ("question", "choices", "answerKey"), _csqa),
)
