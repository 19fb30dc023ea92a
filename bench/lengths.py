"""Real output lengths for the sampling benchmark: a stored histogram, per-row lengths drawn from it, and
the hook that makes every backend stop each row at its drawn length.

    python bench/lengths.py      # (re)writes bench/lengths/*.json from the figures below

A histogram is JSON: {"limit": max new tokens, "bins": [[lo, hi, probability], ...], "source": text}; a
row's length is drawn as a bin, then uniformly in lo..hi. The stored ones are built from the published
figures of docs/results.md (Qwen2.5-Coder-0.5B on English MMLU, 384 new tokens at most): the mean length
and the share of rows that hit the limit. The shape between 1 and the limit is assumed: a gamma
distribution (shape 2) cut at the limit, scaled so the mean matches.

The same lengths are forced in every backend: plain `generate` gets `ForcedLengths` (a logits processor
that forbids EOS before a row's length and forces it at its length), transformers' continuous batching
gets each row's length as that request's max_new_tokens, and starloop's static sampler gets them as
`row_limits`. Useful tokens = the sum of the lengths (EOS included).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent / "lengths"

# docs/results.md, experiment 1 (qwen, sft): mean tokens and truncated share of the validation outputs.
FIGURES = {
    "qwen05b_mmlu_iter0": {"mean": 234.0, "truncated": 0.129, "limit": 384,
                           "source": "docs/results.md, Qwen2.5-Coder-0.5B, English MMLU, iteration 0 (base)"},
    "qwen05b_mmlu_iter1": {"mean": 67.0, "truncated": 0.044, "limit": 384,
                           "source": "docs/results.md, Qwen2.5-Coder-0.5B, English MMLU, iteration 1 (after one SFT round)"},
}


def mean_length(hist: dict) -> float:
    return sum(p * (lo + hi) / 2 for lo, hi, p in hist["bins"])


def from_figures(mean: float, truncated: float, limit: int, width: int = 16, shape: float = 2.0) -> dict:
    """Bins of `width` tokens below `limit` holding 1 - truncated of the mass, gamma(shape)-shaped and scaled
    (by bisection) so that the overall mean is `mean`, and `truncated` at exactly `limit`."""
    edges = [(lo, min(lo + width - 1, limit - 1)) for lo in range(1, limit, width)]

    def bins_for(scale: float):
        w = [quad_gamma(lo - 0.5, hi + 0.5, shape, scale) for lo, hi in edges]
        z = sum(w)
        return [[lo, hi, (1 - truncated) * x / z] for (lo, hi), x in zip(edges, w)] + [[limit, limit, truncated]]

    lo_s, hi_s = 1e-3, 1e6
    for _ in range(200):
        mid = math.sqrt(lo_s * hi_s)
        if mean_length({"bins": bins_for(mid)}) < mean:
            lo_s = mid
        else:
            hi_s = mid
    return {"limit": limit, "bins": bins_for(math.sqrt(lo_s * hi_s))}


def quad_gamma(a: float, b: float, shape: float, scale: float, n: int = 64) -> float:
    """Integral of the gamma(shape, scale) density's kernel x^(shape-1) e^(-x/scale) over [a, b] (midpoints)."""
    h = (b - a) / n
    xs = [max(a + (i + 0.5) * h, 1e-9) for i in range(n)]
    return h * sum(x ** (shape - 1) * math.exp(-x / scale) for x in xs)


def load(name_or_path: str) -> dict:
    p = Path(name_or_path)
    if not p.suffix:
        p = HERE / f"{name_or_path}.json"
    return json.loads(p.read_text())


def draw(hist: dict, n: int, seed: int = 0) -> list[int]:
    """n lengths: a bin by its probability, then uniformly inside it."""
    rng = random.Random(seed)
    bins = hist["bins"]
    picks = rng.choices(range(len(bins)), weights=[b[2] for b in bins], k=n)
    return [rng.randint(bins[i][0], bins[i][1]) for i in picks]


class ForcedLengths:
    """Logits processor for `generate` on a left-padded batch of width `prompt_width`: row r gets EOS as its
    lengths[r]-th new token, and never before (so it has exactly lengths[r] useful tokens)."""

    def __init__(self, lengths, prompt_width: int, eos: int):
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.prompt_width, self.eos = prompt_width, eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width  # index of the token being drawn
        lengths = self.lengths.to(scores.device)
        scores = scores.clone()
        scores[lengths > step + 1, self.eos] = float("-inf")
        at_end = lengths == step + 1
        scores[at_end] = float("-inf")
        scores[at_end, self.eos] = 0.0
        return scores


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, f in FIGURES.items():
        hist = {**from_figures(f["mean"], f["truncated"], f["limit"]), "source": f["source"],
                "figures": {"mean": f["mean"], "truncated": f["truncated"]},
                "shape": "gamma(2) below the limit (assumed), scaled to the mean"}
        bins = ",\n  ".join(json.dumps([lo, hi, round(p, 6)]) for lo, hi, p in hist["bins"])
        rest = json.dumps({k: v for k, v in hist.items() if k != "bins"}, indent=1)[1:-2]
        (HERE / f"{name}.json").write_text("{" + rest + ',\n "bins": [\n  ' + bins + "\n ]\n}\n")
        print(name, f"mean {mean_length(hist):.1f}", f"at limit {hist['bins'][-1][2]:.3f}")


if __name__ == "__main__":
    main()
