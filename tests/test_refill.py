"""Row refill in the static sampler: finished rows hand their seat to waiting questions without changing
any row's tokens (against the same sampler without refill, and against the transformers sampler), for any
queue length; and the batch size sized from free memory."""

from __future__ import annotations

import pytest

from starloop.fast_sampling import StaticSampler, make_sampler
from starloop.sampler_support import CPU_BATCH_SIZE, auto_batch_size, rows_for_memory
from starloop.sampling import HFSampler, sample_seed


def _ids(tok, n, k=1):
    prompts = [tok.apply_chat_template([{"role": "user", "content": "word " * (2 * i + 1) + "go"}],
                                       add_generation_prompt=True, tokenize=False) for i in range(n)]
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(k)]


@pytest.mark.parametrize("n,k,batch", [(0, 1, 4), (1, 1, 4), (3, 1, 4), (11, 1, 4), (5, 3, 6), (2, 3, 9)])
def test_refill_gives_the_tokens_of_unrefilled_and_unended_rows(tiny, n, k, batch):
    """Rows ended at different steps (per-row limits): with refill, without it, and cut from a run where
    no row ends early, every row has the same tokens; refill needs fewer decode steps and idle seats
    when the queue outlasts the batch."""
    model, tok = tiny
    prompts = _ids(tok, n, k)
    seeds = [sample_seed(3, i) for i in range(len(prompts))]
    kw = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.95}
    full = StaticSampler(model, tok, batch_size=batch).generate_ids(prompts, seeds, **kw)
    assert all(len(ids) == 12 for ids, _ in full)
    limits = [1 + (7 * i) % 12 for i in range(len(prompts))]  # 1, 8, 3, 10, 5, 12, 7, ...
    eos = full[-1][0][2] if full else None  # the last row's third token ends it (and any row that draws it)

    def cut(ids, lim):
        ids = ids[:lim]
        return (ids[: ids.index(eos)], True) if eos in ids else (ids, False)

    want = [cut(ids, lim) for (ids, _), lim in zip(full, limits)]
    if n * k > 2:
        assert want[-1] == (full[-1][0][:2], True)
    runs = {}
    for refill in (True, False):
        sampler = StaticSampler(model, tok, batch_size=batch, refill=refill, refill_min_free=0.0)
        runs[refill] = sampler
        assert sampler.generate_ids(prompts, seeds, row_limits=limits, eos_token_id=eos, **kw) == want
        assert sampler.stats.new_tokens == sum(len(ids) for ids, _ in want)
    if n * k > batch:
        assert runs[True].stats.refills > 0 and runs[False].stats.refills == 0
        assert runs[True].stats.steps < runs[False].stats.steps
        assert runs[True].stats.idle_row_steps < runs[False].stats.idle_row_steps


def test_refill_matches_hf_sampler(tiny):
    """Against the transformers sampler, more questions than seats."""
    model, tok = tiny
    prompts = [tok.decode(p) for p in _ids(tok, 7)]
    seeds = [sample_seed(4, i) for i in range(7)]
    kw = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 1.0}
    ref = HFSampler(model, tok, batch_size=7).generate(prompts, seeds, **kw)
    sampler = StaticSampler(model, tok, batch_size=2)
    got = sampler.generate(prompts, seeds, **kw)
    assert [(g.text, g.n_tokens, g.truncated) for g in got] == [(g.text, g.n_tokens, g.truncated) for g in ref]


def test_buffers_are_kept_across_calls(tiny):
    """A second call with shorter prompts reuses the first call's buffers (and, on CUDA, its graphs)."""
    model, tok = tiny
    sampler = StaticSampler(model, tok, batch_size=4)
    prompts = _ids(tok, 6)
    kw = {"max_new_tokens": 6, "temperature": 0.0}
    first = sampler.generate_ids(prompts, list(range(6)), **kw)
    state = sampler._state
    assert sampler.generate_ids(prompts[:4], list(range(4)), **kw) == first[:4]
    assert sampler._state is state


def test_rows_for_memory_on_made_up_numbers():
    # per row: 1000 B/token x (100 new + 200 prompt / 4 samples) + 6 x 4 B x 1000 vocab = 174,000 B
    assert rows_for_memory(1e8, 1000, 1000, 200, 100, 4) == 512  # 0.9e8 / 174e3 = 517 -> multiple of 64
    assert rows_for_memory(1e7, 1000, 1000, 200, 100, 4, reserve_bytes=1e6) == 44  # 8e6 / 174e3 = 45.97
    assert rows_for_memory(1e3, 1000, 1000, 200, 100, 4) == 4  # nothing fits: one question still runs
    assert rows_for_memory(1e13, 1000, 1000, 200, 100, 4) == 1024  # capped
    # k = 3: 1000 x (100 + 66.7) + 24,000 = 190,667 B; 5e7 / 190,667 = 262 -> 256 (of 64) -> 255 (of 3)
    assert rows_for_memory(1e8, 1000, 1000, 200, 100, 3, utilization=0.5) == 255


def test_unset_batch_size_on_cpu_is_the_small_default(tiny):
    model, tok = tiny
    assert auto_batch_size(model, 500, 256, 4) == CPU_BATCH_SIZE
    from types import SimpleNamespace

    for kind in ("static", "hf"):
        assert make_sampler(SimpleNamespace(sampler=kind), model, tok, None).batch_size == CPU_BATCH_SIZE
    sampler = StaticSampler(model, tok, batch_size=None)
    sampler.generate_ids(_ids(tok, 2), [1, 2], max_new_tokens=2)
    assert sampler.batch_size == CPU_BATCH_SIZE
