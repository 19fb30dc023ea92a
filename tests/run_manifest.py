"""A manifest of a run folder: every output file with a hash of its content, for comparing two runs.

What is inherently not reproducible is normalised before hashing, and nothing else:
  - cli.log is skipped (time stamps, the absolute run folder, wall times in its lines);
  - config.yaml: the absolute run folder (`out:`) is replaced by `<out>`;
  - JSON, JSONL, DONE and CSV files: the keys/columns `wall_s` and `tokens_per_s` (wall times) are dropped,
    and floats are written with 6 significant digits;
  - adapter_config.json: `target_modules` is sorted (the LoRA library writes a set, in an order that changes
    with Python's string hash seed);
  - safetensors: each tensor is rounded to 5 decimals before hashing.
The rounding keeps the manifest the same on machines whose float reductions differ in the last bits
(the runs it compares use one thread, for the same reason); any real change of behaviour moves numbers far
more than that. `python tests/run_manifest.py RUN` prints the manifest of RUN as JSON.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

SKIP = {"cli.log"}
WALL_KEYS = {"wall_s", "tokens_per_s"}


def _num(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _num(v) for k, v in x.items() if k not in WALL_KEYS}
    if isinstance(x, list):
        return [_num(v) for v in x]
    return x


def _cell(s: str) -> str:
    try:
        return s if s.strip() in ("", "nan") or s.lstrip("-").isdigit() else f"{float(s):.6g}"
    except ValueError:
        return s


def _normalised(path: Path, out: Path) -> bytes:
    name = path.name
    if name.endswith(".safetensors"):
        import torch
        from safetensors.torch import load_file

        t = load_file(path)
        return b"".join(k.encode() + torch.round(t[k].float() * 1e5).to(torch.int64).numpy().tobytes()
                        for k in sorted(t))
    text = path.read_text(encoding="utf-8")
    if name == "config.yaml":
        return re.sub(r"(?m)^out: .*$", "out: <out>", text).encode()
    if name == "adapter_config.json":
        cfg = json.loads(text)
        cfg["target_modules"] = sorted(cfg.get("target_modules") or [])
        text = json.dumps(cfg)
    if name.endswith(".json") or name == "DONE":
        return json.dumps(_num(json.loads(text)), sort_keys=True).encode() if text.strip() else b""
    if name.endswith(".jsonl"):
        return "\n".join(json.dumps(_num(json.loads(x)), sort_keys=True) for x in text.splitlines()
                         if x.strip()).encode()
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return b""
        keep = [i for i, c in enumerate(rows[0]) if c not in WALL_KEYS]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([rows[0][i] for i in keep])
        for r in rows[1:]:
            w.writerow([_cell(r[i]) if i < len(r) else "" for i in keep])
        return buf.getvalue().encode()
    return text.encode()


def manifest(out: Path) -> dict[str, str]:
    """{path relative to `out`: sha256 of its normalised content} for every file of the run folder."""
    out = Path(out)
    return {p.relative_to(out).as_posix(): hashlib.sha256(_normalised(p, out)).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in SKIP}


if __name__ == "__main__":
    print(json.dumps(manifest(Path(sys.argv[1])), indent=1, sort_keys=True))
