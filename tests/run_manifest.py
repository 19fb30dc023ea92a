"""A manifest of a run folder: every output file with a hash of its content, for comparing two runs.

What is inherently not reproducible is normalised before hashing, and nothing else:
  - cli.log is skipped (time stamps, the absolute run folder, wall times in its lines), and so is the adapter's
    README.md (the LoRA library's model card, which names the library's version);
  - config.yaml: the absolute run folder (`out:`) is replaced by `<out>`;
  - JSON, JSONL, DONE and CSV files: the keys/columns `wall_s` and `tokens_per_s` (wall times) are dropped,
    and floats are written with 6 significant digits;
  - adapter_config.json: `target_modules` is sorted (the LoRA library writes a set, in an order that changes
    with Python's string hash seed), and `peft_version` (the installed library's) is dropped;
  - safetensors: each tensor is rounded to 5 decimals before hashing.
The rounding keeps the manifest the same on machines whose float reductions differ in the last bits
(the runs it compares use one thread, for the same reason); any real change of behaviour moves numbers far
more than that. `python tests/run_manifest.py RUN` prints the manifest of RUN as JSON.

A manifest compares two runs of one machine. Against a stored expectation written on another machine, whose
vector units (AVX2 or AVX-512) change float sums in the last bits, a rounded value can still cross a rounding
boundary, and training at a high learning rate carries such bits into the weights (a tiny run's second adapter
differs by about 0.1% between vectorised and plain kernels): `snapshot` keeps the normalised content itself (a
tensor: its shape and the sums of its absolute values and squares) and `compare` checks text exactly and numbers,
in text too, within a relative 1%.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

SKIP = {"cli.log", "README.md"}  # README.md: the model card the LoRA library writes, with its own version
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
        cfg.pop("peft_version", None)  # the installed library's, not the run's
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


def _values(path: Path):
    """A file's normalised content as JSON values: rows of cells (numbers as floats) for CSV, objects for
    JSON and JSONL, per-tensor shape and sums for safetensors, text otherwise."""
    name = path.name
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        t = load_file(path)
        # Not the plain sum: it cancels, and a 1% change of the weights can move it by half.
        return {k: [list(t[k].shape), float(t[k].double().abs().sum()), float(t[k].double().pow(2).sum())]
                for k in sorted(t)}
    data = _normalised(path, path.parent)
    if name.endswith(".json") or name == "DONE":
        return json.loads(data) if data else None
    if name.endswith(".jsonl"):
        return [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    if name.endswith(".csv"):
        return [[_as_number(c) for c in row] for row in csv.reader(io.StringIO(data.decode(), newline=""))]
    return data.decode()


_NUMBER = re.compile(r"(-?\d+\.\d+(?:[eE][-+]?\d+)?)")


def _as_number(cell: str):
    """A number cell as a float; a text cell with decimals in it ("A:-23.9887 B:-19.9458") as a list of its
    text and numbers; any other text as it is."""
    try:
        return cell if cell.strip() in ("", "nan") else float(cell)
    except ValueError:
        parts = _NUMBER.split(cell)
        return cell if len(parts) == 1 else [float(x) if i % 2 else x for i, x in enumerate(parts)]


def snapshot(out: Path) -> dict:
    """{path relative to `out`: normalised content (`_values`)} for every file of the run folder."""
    out = Path(out)
    return {p.relative_to(out).as_posix(): _values(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in SKIP}


def compare(got, want, where: str = "", rtol: float = 1e-2, atol: float = 1e-6) -> list[str]:
    """Where `got` differs from `want`: numbers beyond |a - b| <= atol + rtol |b|, anything else exactly."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{where}: keys {sorted(set(got) ^ set(want))} in one only"]
        return [d for k in sorted(want) for d in compare(got[k], want[k], f"{where}/{k}", rtol, atol)]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, expected {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{where}[{i}]", rtol, atol)]
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(want, bool):
        return [] if abs(got - want) <= atol + rtol * abs(want) else [f"{where}: {got!r}, expected {want!r}"]
    return [] if got == want else [f"{where}: {str(got)[:80]!r}, expected {str(want)[:80]!r}"]


if __name__ == "__main__":
    print(json.dumps(manifest(Path(sys.argv[1])), indent=1, sort_keys=True))
