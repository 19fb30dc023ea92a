"""Multiple-choice questions for starloop: bundled MMLU and its African clinical subset, hub datasets, local files.

    from starloop.data import load_questions, available_languages
    questions = load_questions(cfg.data, "train")   # train | val | test | dev | heldout

See `splits` for how train/val/heldout are made, `rows` for ids (`aligned_id` links translations),
`languages` for language codes.
"""

from starloop.data.languages import available_languages, language_name
from starloop.data.loader import load_questions
from starloop.data.rows import aligned_id, clean_text
from starloop.data.sources import SOURCES
from starloop.data.splits import LOGICAL_SPLITS

__all__ = [
    "LOGICAL_SPLITS",
    "SOURCES",
    "aligned_id",
    "available_languages",
    "clean_text",
    "language_name",
    "load_questions",
]
