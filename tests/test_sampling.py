"""Seeded sampling: batch-independent, reproducible, and distributed as reference sampling."""

from __future__ import annotations

import torch

from starloop.sampling import HFSampler, filter_top_p, gumbel_sample, hashed_uniform, sample_seed


def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(0, "train", 1, "q/1", 0) == sample_seed(0, "train", 1, "q/1", 0)
    seeds = {sample_seed(0, "train", 1, f"q/{i}", j) for i in range(50) for j in range(4)}
    assert len(seeds) == 200


def test_hashed_uniform_range_and_independence():
    u = hashed_uniform(torch.tensor([1, 2, 3]), 5, 10_000)
    assert u.shape == (3, 10_000) and float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    # The same (seed, step) row is identical whatever else is in the batch.
    alone = hashed_uniform(torch.tensor([2]), 5, 10_000)
    assert torch.equal(alone[0], u[1])
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(hashed_uniform(torch.tensor([2]), 6, 10_000)[0], alone[0])


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_top_p(logits, 0.8))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = torch.isfinite(filter_top_p(logits, 0.81))
    assert kept.tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_top_p(logits, 0.1)).tolist() == [[True, False, False, False]]


def test_gumbel_sampling_matches_reference_distribution():
    """Empirical frequencies over many seeds match softmax(logits / T) restricted to the nucleus."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    for temperature, top_p in [(1.0, 1.0), (0.7, 1.0), (1.3, 0.9)]:
        n = 40_000
        seeds = torch.arange(n, dtype=torch.int64) * 7919 + 11
        draws = gumbel_sample(logits.expand(n, -1), seeds, step=3, temperature=temperature, top_p=top_p)
        freq = torch.bincount(draws, minlength=5).float() / n
        # Reference: torch's own categorical sampling of the same target distribution.
        ref_logits = filter_top_p((logits / temperature)[None], top_p)[0]
        ref = ref_logits.softmax(-1)
        gen = torch.Generator().manual_seed(0)
        ref_draws = torch.multinomial(ref, n, replacement=True, generator=gen)
        ref_freq = torch.bincount(ref_draws, minlength=5).float() / n
        assert torch.allclose(freq, ref, atol=0.012), (temperature, top_p, freq, ref)
        assert torch.allclose(freq, ref_freq, atol=0.015)
        assert torch.all(freq[~torch.isfinite(ref_logits)] == 0)


def test_sampler_is_batch_and_order_independent(tiny):
    model, tok = tiny
    prompts = [tok.apply_chat_template([{"role": "user", "content": "word " * (i + 1)}],
                                       add_generation_prompt=True, tokenize=False) for i in range(5)]
    seeds = [sample_seed(0, i) for i in range(5)]
    a = HFSampler(model, tok, batch_size=5).generate(prompts, seeds, max_new_tokens=10, temperature=1.0, top_p=0.9)
    b = HFSampler(model, tok, batch_size=2).generate(prompts[::-1], seeds[::-1], max_new_tokens=10,
                                                     temperature=1.0, top_p=0.9)
    assert [g.text for g in a] == [g.text for g in b[::-1]]
    c = HFSampler(model, tok, batch_size=5).generate(prompts, [s + 1 for s in seeds], max_new_tokens=10,
                                                     temperature=1.0, top_p=0.9)
    assert [g.text for g in a] != [g.text for g in c]
    assert all(g.n_tokens <= 10 for g in a)


def test_greedy_ignores_seeds(tiny):
    model, tok = tiny
    p = [tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)]
    s = HFSampler(model, tok)
    assert s.generate(p, [1], max_new_tokens=8)[0].text == s.generate(p, [2], max_new_tokens=8)[0].text


def test_oom_halves_batch(tiny, monkeypatch):
    model, tok = tiny
    sampler = HFSampler(model, tok, batch_size=4)
    real = sampler._generate_batch
    calls = []

    def flaky(ids_list, *a):
        calls.append(len(ids_list))
        if len(ids_list) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(ids_list, *a)

    monkeypatch.setattr(sampler, "_generate_batch", flaky)
    prompts = ["a b c", "d e", "f", "g h i j"]
    out = sampler.generate(prompts, [1, 2, 3, 4], max_new_tokens=4, temperature=1.0)
    assert len(out) == 4 and sampler.batch_size == 2 and calls[0] == 4


def test_unit_interval_never_reaches_zero_or_one():
    """Every hash value, the extremes included, gives 0 < u < 1 and finite Gumbel noise (24 bits in
    float32 rounded the largest value to exactly 1.0: infinite noise that forced a junk token)."""
    from starloop.sampling import unit_interval

    top = torch.arange(1 << 23, dtype=torch.int64)
    for low in (0, (1 << 9) - 1):  # each 23-bit cell at its smallest and largest 32-bit value
        u = unit_interval((top << 9) | low)
        g = -torch.log(-torch.log(u))
        assert float(u.min()) > 0 and float(u.max()) < 1 and bool(torch.isfinite(g).all())
    assert float(unit_interval(torch.tensor([0xFFFFFFFF]))) < 1.0


def test_hashed_uniform_stays_inside_over_1e8_draws():
    """3,000 seeds x 49,152 token ids (1.5e8 draws; the old 24-bit form reached u = 1.0 here)."""
    vocab, hi, lo = 49_152, 0.0, 1.0
    for start in range(0, 3_000, 250):
        u = hashed_uniform(torch.arange(start, start + 250, dtype=torch.int64), 0, vocab)
        hi, lo = max(hi, float(u.max())), min(lo, float(u.min()))
        assert bool(torch.isfinite(-torch.log(-torch.log(u))).all())
    assert 0.0 < lo and hi < 1.0


def test_top_p_one_on_large_vocab_never_draws_junk_tokens():
    """Chi-square at top_p = 1 on a 49,152-token vocabulary: four tokens hold all the mass, the others
    ~1e-11 each. 6,000 draws must follow the four-token distribution and never pick the rest (before
    the fix about 17 of them landed on junk tokens). The static sampler's in-graph draw agrees."""
    from starloop.decode_kernels import _pick

    vocab, rows, chunk = 49_152, 6_000, 500
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits_row = torch.full((vocab,), -30.0)
    logits_row[:4] = torch.log(probs)
    counts = torch.zeros(5)
    for start in range(0, rows, chunk):
        seeds = torch.arange(start, start + chunk, dtype=torch.int64) * 7919 + 13
        logits = logits_row.expand(chunk, vocab)
        tok = gumbel_sample(logits, seeds, 3, 1.0, 1.0)
        if start == 0:
            assert torch.equal(tok, _pick(logits, seeds, torch.tensor(3), 1.0, 1.0)[0])
        counts += torch.bincount(tok.clamp(max=4), minlength=5).float()
    assert counts[4] == 0, f"{int(counts[4])} draws of tokens with probability ~1e-11"
    expected = probs * rows
    chi2 = float((((counts[:4] - expected) ** 2) / expected).sum())
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001
