"""The sampling benchmark's real-length hook (bench/lengths.py): histograms built from published figures
keep those figures, and every backend stops each row at its drawn length."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _lengths():
    spec = importlib.util.spec_from_file_location("bench_lengths", ROOT / "bench" / "lengths.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_histogram_keeps_the_published_mean_and_truncated_share():
    L = _lengths()
    for name, fig in L.FIGURES.items():
        stored = L.load(name)  # the stored file is what the builder makes from the figures
        assert stored["bins"] == [[lo, hi, round(p, 6)] for lo, hi, p in
                                  L.from_figures(fig["mean"], fig["truncated"], fig["limit"])["bins"]]
        assert abs(L.mean_length(stored) - fig["mean"]) < 0.01
        assert stored["bins"][-1] == [fig["limit"], fig["limit"], fig["truncated"]]
        assert abs(sum(p for *_, p in stored["bins"]) - 1) < 1e-4


def test_draw_follows_the_histogram():
    L = _lengths()
    hist = {"limit": 10, "bins": [[1, 2, 0.5], [10, 10, 0.5]]}  # mean 0.5 x 1.5 + 0.5 x 10 = 5.75
    d = L.draw(hist, 4000, seed=3)
    assert set(d) == {1, 2, 10} and abs(sum(d) / len(d) - 5.75) < 0.3
    assert d == L.draw(hist, 4000, seed=3)


def test_forced_lengths_end_each_row_at_its_length_in_generate_and_static_sampler(tiny):
    from transformers import LogitsProcessorList

    from starloop.fast_sampling import StaticSampler

    L = _lengths()
    model, tok = tiny
    eos = tok.eos_token_id
    prompts = [tok("word " * (i + 2), add_special_tokens=False)["input_ids"] for i in range(4)]
    lengths = [3, 1, 7, 5]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                         eos_token_id=eos, temperature=None, top_p=None, top_k=None,
                         logits_processor=LogitsProcessorList([L.ForcedLengths(lengths, width, eos)]))[:, width:]
    got = [row.tolist().index(eos) + 1 for row in out]  # useful tokens: up to and including EOS
    assert got == lengths
    static = StaticSampler(model, tok, batch_size=2).generate_ids(prompts, [1, 2, 3, 4], max_new_tokens=8,
                                                                 row_limits=lengths)
    assert [len(t) for t, _ in static] == lengths


def test_schedule_arithmetic_matches_the_sampler_loop(tiny):
    """bench/refill_schedule.py's step count, by hand and as the static sampler's refill loop counts it."""
    import sys

    from starloop.fast_sampling import StaticSampler

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_schedule", ROOT / "bench" / "refill_schedule.py")
        sched = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sched)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    lengths = [4, 2, 2, 2]
    # no refill: batch (4, 2) takes 3 decode steps, batch (2, 2) one more; refill: the 2-token row's seat takes
    # the third row after step 1 and the fourth after step 2, while the 4-token row ends at step 3
    assert sched.decode_steps(lengths, 1, 2, refill=False) == 4
    assert sched.decode_steps(lengths, 1, 2, refill=True) == 3
    model, tok = tiny
    prompts = [[100 + i] * 6 for i in range(4)]  # equal lengths: the queue keeps this order
    for refill, want in ((False, 4), (True, 3)):
        sampler = StaticSampler(model, tok, batch_size=2, refill=refill)
        sampler.generate_ids(prompts, [1, 2, 3, 4], max_new_tokens=4, row_limits=lengths)
        assert sampler.stats.steps == want
