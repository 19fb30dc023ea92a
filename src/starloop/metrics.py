"""Accuracy with confidence intervals and grouped summaries of scored samples (pure functions)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from starloop.degenerate import degenerate_rates, parse_flags
from starloop.records import Sample

# Flags that make an output degenerate in content (repetition loops, nothing, wrong language).
CONTENT_FLAGS = {"repetition", "empty", "wrong_language"}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (well behaved near 0, 1 and small n)."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Rounding can put centre - half a hair above p = 0 (or centre + half below p = 1): clamp around p.
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def summarize(samples: Sequence[Sample]) -> dict:
    """Accuracy (with 95% CI), parse rate, mean rationale length and degenerate rates of samples."""
    n = len(samples)
    k = sum(s.correct for s in samples)
    parsed = sum(s.status != "no_answer" for s in samples)
    lo, hi = wilson_interval(k, n)
    out = {
        "n": n,
        "accuracy": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "parse_rate": parsed / n if n else 0.0,
        "mean_tokens": sum(s.n_tokens for s in samples) / n if n else 0.0,
        "truncated_rate": sum(s.truncated for s in samples) / n if n else 0.0,
    }
    # Rates of each degenerate flag, and of outputs that are degenerate in content (not merely cut).
    for flag, rate in degenerate_rates(s.degenerate for s in samples).items():
        if flag != "any":
            out[f"degenerate_{flag}"] = rate
    out["degenerate_rate"] = (
        sum(bool(set(parse_flags(s.degenerate)) & CONTENT_FLAGS) for s in samples) / n if n else 0.0
    )
    out.update(cross_check(samples))
    return out


def cross_check(samples: Sequence[Sample]) -> dict:
    """The forced-choice cross-check of extraction, for samples that carry `extra["forced_choice"]`.

    cross_check_n: outputs with both an extracted letter and a forced choice; cross_check_disagreement:
    the share of those whose extracted letter is not the model's forced choice (a high rate on a new
    model or language points at the extractor); forced_choice_accuracy: the forced choice against the
    gold letter, over all checked outputs. Empty when no sample was checked.
    """
    checked = [s for s in samples if s.extra.get("forced_choice")]
    if not checked:
        return {}
    read = [s for s in checked if s.extracted]
    differ = sum(s.extracted != s.extra["forced_choice"] for s in read)
    return {
        "cross_check_n": len(read),
        "cross_check_disagreement": differ / len(read) if read else 0.0,
        "forced_choice_accuracy": sum(s.extra["forced_choice"] == s.gold for s in checked) / len(checked),
    }


def group_summaries(samples: Iterable[Sample], key: str) -> dict[str, dict]:
    """`summarize` per value of a Sample attribute (e.g. subject, language)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[getattr(s, key)].append(s)
    return {g: summarize(v) for g, v in sorted(groups.items())}


def format_table(rows: dict[str, dict], title: str, cols: Sequence[str] = ("n", "accuracy", "parse_rate")) -> str:
    """A small fixed-width text table (for logs and the terminal)."""
    width = max([len(title)] + [len(k) for k in rows]) + 2
    head = title.ljust(width) + "".join(c.rjust(14) for c in cols)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append((f"{v:.3f}" if isinstance(v, float) else str(v)).rjust(14))
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def mcnemar(before: dict[str, bool], after: dict[str, bool]) -> dict:
    """Exact McNemar test of two evaluations on the same questions (question id -> correct).

    b = right before and wrong after, c = wrong before and right after; under "no change" each of the
    b + c discordant questions goes either way with probability 1/2, so the two-sided p-value is
    min(1, 2 P(Binomial(b + c, 1/2) <= min(b, c))). Only questions in both count."""
    ids = set(before) & set(after)
    b = sum(1 for i in ids if before[i] and not after[i])  # Python ints whatever the values are (numpy bools:
    c = sum(1 for i in ids if after[i] and not before[i])  # their sum stays a numpy int, and 2**n overflows)
    n = b + c
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, j) for j in range(min(b, c) + 1)) / 2**n)
    return {"n": len(ids), "b": b, "c": c, "p": p}


# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal's 1.96).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def clustered_interval(correct: Sequence[bool], clusters: Sequence[str]) -> tuple[float, float] | None:
    """95% interval of a pooled accuracy whose questions come in correlated clusters (languages).

    Cluster-robust (CR1) standard error of the mean, p = sum y / N:
        var = G / (G - 1) * sum_g (sum_{i in g} (y_i - p))^2 / N^2,   half-width t_{G-1, 0.975} sqrt(var).
    A Wilson interval treats every question of every language as independent; when the same questions
    are asked in G languages the pooled accuracy has far fewer independent units. None with < 2 clusters."""
    groups = sorted(set(clusters))
    n = len(correct)
    if len(groups) < 2 or n == 0:
        return None
    p = sum(correct) / n
    resid: dict[str, float] = defaultdict(float)
    for y, g in zip(correct, clusters):
        resid[g] += float(y) - p
    g_n = len(groups)
    var = g_n / (g_n - 1) * sum(e * e for e in resid.values()) / (n * n)
    t = _T975[g_n - 2] if g_n - 1 <= len(_T975) else 1.959963984540054
    half = t * math.sqrt(var)
    return max(0.0, p - half), min(1.0, p + half)
