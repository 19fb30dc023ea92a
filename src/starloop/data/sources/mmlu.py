"""The bundled MMLU (Hendrycks et al.) and its human-translated clinical subset in 11 African languages."""

from starloop.data.source import Source

MMLU = Source(
    "mmlu", "MMLU dev/val/test, 57 subjects (Hendrycks et al., ICLR 2021), bundled", "MIT")

MMLU_AFR = Source(
    "mmlu-afr",
    "MMLU clinical subset (3 subjects) human-translated into 11 African languages (Alhanai et al. 2024), bundled",
    "MIT",
    languages={c: ("" if c == "en" else c)
               for c in ("en", "af", "am", "bm", "ig", "nso", "sn", "st", "tn", "ts", "xh", "zu")},
    default_language="zu",
)
