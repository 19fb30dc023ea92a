"""Collect `starloop eval` outputs into the extraction fixture (tests/fixtures/extraction/outputs.jsonl).

    python experiments/extraction_collect.py FIXTURE EVAL_DIR [EVAL_DIR ...]

Each EVAL_DIR is an `out=` folder of `starloop eval` (generations.csv + config.yaml). One JSON line per
output: the model, language, prompt strategy, decoding, whether generation hit the token limit, the
option texts and the output text. Records already in FIXTURE keep their hand labels (`label`, `kind`,
`note`); new ones get `label: "?"` for a person to fill in after reading the output in full. The
extractor's own reading is never written, so it cannot leak into the labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from starloop.config import DataConfig
from starloop.data import load_questions
from starloop.errors import StarloopError
from starloop.evaluate import eval_samples_path
from starloop.records import read_samples


def _model_name(name: str) -> str:
    return "qwen2.5-coder-0.5b-instruct" if name.endswith(".gguf") and "qwen" in name.lower() else name


def collect(folder: Path) -> list[dict]:
    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    data = DataConfig(**{k: v for k, v in cfg["data"].items() if k in DataConfig.__dataclass_fields__})
    questions = {q.id: q for q in load_questions(data, data.split)}
    temp = float(cfg["eval"]["temperature"])
    out = []
    for s in read_samples(eval_samples_path(folder)):
        q = questions[s.question_id]
        out.append({
            "id": f"{folder.name}/{s.question_id}",
            "model": _model_name(cfg["model"]["name"]),
            "language": s.language,
            "strategy": cfg["prompt"]["strategy"],
            "decoding": "greedy" if temp == 0 else f"t={temp:g},top_p={cfg['eval']['top_p']:g}",
            "max_new_tokens": cfg["eval"]["max_new_tokens"],
            "truncated": s.truncated,
            "choices": list(q.choices),
            "text": s.rationale,
            "label": "?",
        })
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    fixture = Path(argv[0])
    old = {}
    if fixture.exists():
        for line in fixture.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                old[r["id"]] = r
    records = []
    try:
        for d in argv[1:]:
            records += collect(Path(d))
    except (OSError, KeyError, StarloopError) as e:
        print(f"extraction_collect: {e}", file=sys.stderr)
        return 2
    merged = {r["id"]: {**r, **{k: v for k, v in old.get(r["id"], {}).items()
                                if k in ("label", "kind", "note")}} for r in records}
    for rid, r in old.items():  # keep labelled records whose eval folder is gone
        merged.setdefault(rid, r)
    tmp = fixture.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged.values()), encoding="utf-8")
    tmp.replace(fixture)
    print(f"{fixture}: {len(merged)} outputs ({sum(r['label'] == '?' for r in merged.values())} unlabelled)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
