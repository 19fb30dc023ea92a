"""The static decode loop draws the tokens of the transformers sampler for the same seeds, shares a
question's prompt across its samples without changing them, and the vLLM backend fails cleanly."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from starloop.errors import StarloopError
from starloop.fast_sampling import StaticSampler, VLLMSampler, _attend_math, _merge, _pick, make_sampler
from starloop.sampling import HFSampler, gumbel_sample, sample_seed


def _prompts(tok, n):
    return [tok.apply_chat_template([{"role": "user", "content": "word " * (3 * i + 1) + "go"}],
                                    add_generation_prompt=True, tokenize=False) for i in range(n)]


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_static_matches_hf_sampler(tiny, temperature, top_p):
    model, tok = tiny
    prompts = _prompts(tok, 5)
    seeds = [sample_seed(0, i) for i in range(5)]
    ref = HFSampler(model, tok, batch_size=5).generate(prompts, seeds, max_new_tokens=12,
                                                       temperature=temperature, top_p=top_p)
    got = StaticSampler(model, tok, batch_size=3).generate(prompts, seeds, max_new_tokens=12,
                                                           temperature=temperature, top_p=top_p)
    assert [(g.text, g.n_tokens, g.truncated) for g in got] == [(g.text, g.n_tokens, g.truncated) for g in ref]


def test_fused_qkv_projection_gives_the_same_tokens(tiny):
    model, tok = tiny
    prompts, seeds = _prompts(tok, 3), [5, 6, 7]
    plain = StaticSampler(model, tok, batch_size=3, fuse_projections=False)
    fused = StaticSampler(model, tok, batch_size=3, fuse_projections=True)
    assert len(fused._qkv_fused) == len(fused.layers) and not plain._qkv_fused
    kw = {"max_new_tokens": 10, "temperature": 1.0, "top_p": 0.9}
    assert [g.text for g in fused.generate(prompts, seeds, **kw)] == [g.text for g in plain.generate(prompts, seeds, **kw)]


def test_shared_prompt_samples_match_unshared(tiny):
    """k samples of one question (one shared prefix) get the tokens they get when sampled alone."""
    model, tok = tiny
    prompts = _prompts(tok, 3)
    flat = [p for p in prompts for _ in range(4)]
    seeds = [sample_seed(1, i) for i in range(len(flat))]
    sampler = StaticSampler(model, tok, batch_size=8)
    shared = sampler.generate(flat, seeds, max_new_tokens=10, temperature=1.0, top_p=0.95)
    alone = [StaticSampler(model, tok, batch_size=1).generate([p], [s], max_new_tokens=10, temperature=1.0,
                                                             top_p=0.95)[0] for p, s in zip(flat, seeds)]
    assert [g.text for g in shared] == [g.text for g in alone]
    assert len({g.text for g in shared[:4]}) > 1  # different seeds, different samples
    assert sampler.stats.prefill_tokens == sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)


def test_eos_stops_and_marks_not_truncated(tiny):
    model, tok = tiny
    p = _prompts(tok, 2)
    sampler = StaticSampler(model, tok, batch_size=2)
    out = sampler.generate_ids([tok(x, add_special_tokens=False)["input_ids"] for x in p], [1, 2],
                               max_new_tokens=8, temperature=0.0)
    first = out[0][0][0]
    stopped = sampler.generate_ids([tok(p[0], add_special_tokens=False)["input_ids"]], [1], max_new_tokens=8,
                                   eos_token_id=first)
    assert stopped == [([], True)]
    assert all(len(ids) == 8 and not eos for ids, eos in out)


def test_candidate_pick_equals_gumbel_sample_or_flags():
    torch.manual_seed(0)
    logits = torch.randn(64, 300) * torch.tensor([8.0] * 32 + [0.5] * 32)[:, None]  # peaked and flat rows
    seeds = torch.arange(64) * 31 + 5
    for temperature, top_p in [(0.7, 0.95), (1.0, 1.0), (0.0, 1.0)]:
        tok, flag = _pick(logits, seeds, torch.tensor([7]), temperature, top_p)
        ref = gumbel_sample(logits, seeds, 7, temperature, top_p) if temperature > 0 else logits.argmax(-1)
        ok = torch.ones(64, dtype=torch.bool) if flag is None else ~flag
        assert torch.equal(tok[ok], ref[ok])
        if top_p < 1:
            assert bool(flag[32:].all()) and not bool(flag[:32].any())


def test_cascade_attention_equals_attention_over_all_keys():
    """Prefix (first lens[n] of 6 keys per row) and suffix (first 3 of 4) attended apart and merged by
    log-sum-exp = one softmax over just those keys; keys past a row's length change nothing."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 10, 3, 8), torch.randn(2, 10, 3, 8)  # k, v token-major
    plen, slen = torch.tensor([6, 2]), torch.tensor([3, 3])
    a = _attend_math(q, k[:, :6], v[:, :6], plen, 0.3)
    b = _attend_math(q, k[:, 6:], v[:, 6:], slen, 0.3)
    for n in range(2):
        keep = list(range(int(plen[n]))) + [6, 7, 8]
        kn, vn = k[n : n + 1, keep].transpose(1, 2), v[n : n + 1, keep].transpose(1, 2)
        s = torch.softmax(torch.matmul(q[n : n + 1], kn.transpose(-1, -2)) * 0.3, dim=-1)
        assert torch.allclose(_merge(*a, *b)[n : n + 1], torch.matmul(s, vn), atol=1e-6)
    k2 = k.clone()
    k2[1, 2:6] = 1e4  # past row 1's prompt length: not read
    assert torch.equal(_attend_math(q, k2[:, :6], v[:, :6], plen, 0.3)[0][1], a[0][1])


def test_make_sampler_picks_backend(tiny):
    model, tok = tiny
    assert isinstance(make_sampler(SimpleNamespace(sampler="auto"), model, tok, 4), HFSampler)  # CPU
    assert isinstance(make_sampler(SimpleNamespace(sampler="static"), model, tok, 4), StaticSampler)
    assert isinstance(make_sampler(SimpleNamespace(sampler="hf"), model, tok, 4), HFSampler)


def test_vllm_sampler_errors_cleanly_without_vllm(tiny, monkeypatch):
    model, tok = tiny
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(StarloopError, match="vllm") as e:
        VLLMSampler(model, tok)
    assert "\n" not in str(e.value)
    with pytest.raises(StarloopError, match="vllm"):
        make_sampler(SimpleNamespace(sampler="vllm"), model, tok, 4)


def test_static_matches_hf_sampler_on_qwen2_layout(tiny):
    """Qwen2 (the experiments' stronger model) adds q/k/v biases to the Llama layout."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      initializer_range=0.2, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:  # non-zero biases, so that dropping one would change the tokens
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                assert proj.bias is not None
                proj.bias.normal_(0, 0.5)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    prompts, seeds = _prompts(tok, 4), [sample_seed(2, i) for i in range(4)]
    kw = {"max_new_tokens": 10, "temperature": 1.0, "top_p": 0.9}
    ref = HFSampler(model, tok, batch_size=4).generate(prompts, seeds, **kw)
    got = StaticSampler(model, tok, batch_size=4).generate(prompts, seeds, **kw)
    assert [g.text for g in got] == [g.text for g in ref]


def test_input_require_grads_hook_reaches_no_kernel(tiny):
    """Gradient checkpointing registers a hook that marks the embedding output as requiring grad, even
    under no_grad. No tensor the sampler hands its (compiled, on CUDA) kernels may require grad: a
    compiled kernel's guard on it fails, and each step recompiles until the recompile limit."""
    model, tok = tiny
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in _prompts(tok, 3)]
    kw = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9}
    plain = StaticSampler(model, tok, batch_size=3).generate_ids(prompts, [3, 4, 5], **kw)
    sampler = StaticSampler(model, tok, batch_size=3)
    seen = []

    def spy(fn):
        def call(*args):
            # Activations only: the weights of a full fine-tune require grad, with or without the hook.
            seen.extend(a.requires_grad for a in args
                        if isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter))
            return fn(*args)
        return call

    for ks in (sampler.kd, sampler.kp):
        for k in ks.__dict__.values():
            k.fn, k.compiled = spy(k.fn), None
    model.enable_input_require_grads()
    try:
        with torch.no_grad():
            assert model.get_input_embeddings()(torch.tensor([1])).requires_grad  # the hook is there
        hooked = sampler.generate_ids(prompts, [3, 4, 5], **kw)
    finally:
        model.disable_input_require_grads()
    assert seen and not any(seen)
    assert hooked == plain
