"""Sampling on merged LoRA weights (lora_merge.py): the same tokens as the unmerged adapter for the same
seeds (both samplers), the base weights bit-identical afterwards (also after an exception or Ctrl-C inside
the block), the disabled-adapter reference untouched, and a fallback for adapters that cannot be merged."""

from __future__ import annotations

import pytest
import torch

from starloop.config import ModelConfig, TrainerConfig
from starloop.fast_sampling import StaticSampler
from starloop.lora_merge import base_copy_bytes, merged_lora, unmergeable
from starloop.models import attach_lora, load_model
from starloop.sampling import HFSampler, sample_seed


def _lora_model(dtype=torch.float32, **lora):
    """The tiny model with a LoRA (r=8, all linear layers) whose B is random: the adapter changes outputs."""
    base, tok = load_model(ModelConfig(name="tiny-random", dtype=str(dtype).replace("torch.", "")),
                           for_training=True)
    cfg = TrainerConfig(lora_r=8, lora_alpha=16, lora_dropout=0.0, lora_target_modules=["all-linear"])
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", **lora))
    else:
        model = attach_lora(base, cfg, seed=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.requires_grad_(False)
    return model.eval(), tok


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) for k in a)


def _prompts(tok, n):
    return [tok.apply_chat_template([{"role": "user", "content": "word " * (2 * i + 1) + "go"}],
                                    add_generation_prompt=True, tokenize=False) for i in range(n)]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids.to(model.device)).logits.float()


@pytest.fixture(scope="module")
def lora():
    return _lora_model()


def test_merged_logits_equal_unmerged_and_differ_from_base(lora):
    model, _ = lora
    ids = torch.arange(5, 29).view(2, 12)
    unmerged = _logits(model, ids)
    with model.disable_adapter():
        base = _logits(model, ids)
    with merged_lora(model) as merged:
        assert merged
        got = _logits(model, ids)
        assert all(m.merged for n, m in model.named_modules() if hasattr(m, "merged_adapters") and "proj" in n)
    assert (unmerged - base).abs().max() > 0.1  # the adapter matters, so equal logits mean something
    torch.testing.assert_close(got, unmerged, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["hf", "static", "static-fused"])
def test_merged_sampling_draws_the_unmerged_tokens(lora, backend):
    model, tok = lora
    prompts, seeds = _prompts(tok, 4), [sample_seed(0, i) for i in range(4)]

    def sample():
        s = (HFSampler(model, tok, batch_size=4) if backend == "hf" else
             StaticSampler(model, tok, batch_size=3, fuse_projections=backend == "static-fused"))
        out = s.generate(prompts, seeds, max_new_tokens=12, temperature=1.0, top_p=0.9)
        return s, [(g.text, g.n_tokens) for g in out]

    want = sample()[1]
    with merged_lora(model):
        s, got = sample()
        if backend == "static-fused":  # merged LoRA layers count as plain ones: q, k, v in one matmul
            assert len(s._qkv_fused) == len(s.layers)
    assert got == want
    with model.disable_adapter():
        assert sample()[1] != want  # the adapter changes the draws: the comparison above can fail


def test_base_weights_come_back_bit_for_bit_even_after_an_exception():
    model, _ = _lora_model(torch.bfloat16)
    before = _base_weights(model)
    q = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    copies: dict = {}
    with merged_lora(model, copies):
        w, m = q.base_layer.weight, q
        a = m.active_adapters[0]
        want = (before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"].float()
                + (m.lora_B[a].weight.float() @ m.lora_A[a].weight.float()) * m.scaling[a]).to(torch.bfloat16)
        assert torch.equal(w, want)  # one rounding of W + scale * B @ A to bf16
        ptr = w.data_ptr()
    assert _same_bits(_base_weights(model), before) and q.base_layer.weight.data_ptr() == ptr
    assert not q.merged and len(copies) == 14 and base_copy_bytes(model) == sum(
        t.numel() * t.element_size() for t in copies.values())
    buffers = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in copies.values()}
    assert len(buffers) == 1 and base_copy_bytes(model) <= sum(buffers.values()) < base_copy_bytes(model) + 64 * 14
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)), merged_lora(model, copies):
            raise error
        assert _same_bits(_base_weights(model), before) and not q.merged
    # Ten rounds with the kept copies: no drift (peft's unmerge would subtract in bf16 each time).
    for _ in range(10):
        with merged_lora(model, copies):
            pass
    assert _same_bits(_base_weights(model), before)


def test_a_failure_halfway_through_the_merge_restores_what_was_merged(lora, monkeypatch):
    import starloop.lora_merge as lm

    model, _ = lora
    before = _base_weights(model)
    calls = []

    def failing(layer, adapter):
        calls.append(layer)
        if len(calls) == 5:
            raise RuntimeError("out of memory")
        return torch.ones_like(layer.base_layer.weight, dtype=torch.float32)

    monkeypatch.setattr(lm, "delta_weight", failing)
    with pytest.raises(RuntimeError, match="out of memory"), merged_lora(model):
        pass
    assert _same_bits(_base_weights(model), before)


def test_adapters_that_cannot_be_merged_exactly_run_unmerged(caplog):
    model, _ = _lora_model(use_dora=True)
    assert "DoRA" in unmergeable(model)
    ids = torch.arange(5, 17).view(1, 12)
    want = _logits(model, ids)
    with caplog.at_level("INFO", logger="starloop.lora_merge"), merged_lora(model) as merged:
        assert not merged
        assert torch.equal(_logits(model, ids), want)
    assert "unmerged (" in caplog.text and "DoRA" in caplog.text


def test_policy_merged_block_keeps_training_and_the_reference_apart():
    from starloop.config import Config
    from starloop.policy import Policy

    cfg = Config()
    cfg.model.name = "tiny-random"
    policy = Policy(cfg)
    before = _base_weights(policy.base)
    ids = torch.arange(5, 17).view(1, 12)
    base_logits = _logits(policy.base, ids)
    with policy.merged() as merged:  # no adapter: nothing to merge
        assert not merged
    model = policy.use(None, trainable=True, fresh_seed=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.2)
    model.eval()
    with policy.merged() as merged:
        assert merged and policy.merged_now
        with pytest.raises(RuntimeError, match="inside Policy.merged"):
            policy.use(None, trainable=True, fresh_seed=5)
    assert not policy.merged_now
    policy.cfg.model.sampler = "vllm"  # vLLM loads the adapter itself: nothing to merge for it
    now = _base_weights(model)
    with policy.merged() as merged:
        assert not merged and _same_bits(_base_weights(model), now)
    policy.cfg.model.sampler = "auto"
    with model.disable_adapter():  # the DPO reference: the base model, exactly
        assert torch.equal(_logits(model, ids), base_logits)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    policy.use(None)
    assert _same_bits(_base_weights(policy.base), before)


def _lora_grads(policy, ids) -> dict[str, torch.Tensor]:
    model = policy.use(None, trainable=True, fresh_seed=6)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    model.eval()  # no dropout: the two runs draw different random numbers before this step
    ids = ids.to(model.device)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_training_after_a_merged_pass_is_bit_identical():
    """A training step after a merged sampling pass gets the gradients it gets without one."""
    from starloop.config import Config
    from starloop.policy import Policy

    cfg = Config()
    cfg.model.name = "tiny-random"
    ids = torch.arange(5, 21).view(2, 8)
    want = _lora_grads(Policy(cfg), ids)
    policy = Policy(cfg)
    policy.use(None, trainable=True, fresh_seed=7)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.5)
    policy.model.eval()
    with policy.merged() as merged:
        assert merged
        _logits(policy.model, ids)
    got = _lora_grads(policy, ids)
    assert want.keys() == got.keys() and len(got) == 28
    assert all(torch.equal(want[n], got[n]) for n in want)


def test_eval_of_a_checkpoint_runs_merged_and_writes_the_unmerged_outputs(tmp_path, monkeypatch):
    import contextlib

    from cli_helpers import run_cli

    import starloop.lora_merge as lm

    model, _ = _lora_model()
    model.save_pretrained(tmp_path / "adapter")
    merged_flags = []
    real = lm.merged_lora

    @contextlib.contextmanager
    def spy(m, copies=None):
        with real(m, copies) as done:
            merged_flags.append(done)
            yield done

    @contextlib.contextmanager
    def unmerged(m, copies=None):
        yield False

    args = ["eval", "model=tiny-random", "model.device=cpu", "eval.limit=3", "eval.max_new_tokens=8",
            "eval.temperature=1.0", "progress=false", f"checkpoint={tmp_path / 'adapter'}"]
    tables = []
    for name, fake in (("merged", spy), ("unmerged", unmerged)):
        monkeypatch.setattr(lm, "merged_lora", fake)
        code, _, err = run_cli([*args, f"out={tmp_path / name}"])
        assert code == 0, err[-2000:]
        tables.append((tmp_path / name / "generations.csv").read_text())
    assert merged_flags == [True]
    assert tables[0] == tables[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_copy_is_page_locked_and_the_weights_come_back():
    model, tok = _lora_model(torch.bfloat16)
    model.to("cuda")
    before = _base_weights(model)
    prompts, seeds = _prompts(tok, 4), [sample_seed(0, i) for i in range(4)]
    copies: dict = {}
    with merged_lora(model, copies) as merged:
        assert merged and all(t.is_pinned() for t in copies.values())
        StaticSampler(model, tok, batch_size=4).generate(prompts, seeds, max_new_tokens=8, temperature=1.0)
    assert _same_bits(_base_weights(model), before)


def test_a_base_copy_too_big_for_host_memory_runs_unmerged(lora, monkeypatch, caplog):
    import starloop.lora_merge as lm

    model, _ = lora
    monkeypatch.setattr(lm, "_host_available", lambda: base_copy_bytes(model))  # the copy would take it all
    copies: dict = {}
    with caplog.at_level("INFO", logger="starloop.lora_merge"), merged_lora(model, copies) as merged:
        assert not merged and not copies
    assert "available host memory" in caplog.text
    monkeypatch.setattr(lm, "_host_available", lambda: 3 * base_copy_bytes(model))
    with merged_lora(model, copies) as merged:
        assert merged


def test_page_locked_copy_is_unlocked_once_its_buffer_goes():
    """The finalizer calls cudaHostUnregister(ptr) alone (it was given the storage as a second argument, a
    TypeError at collection on CUDA that left the memory registered after it was freed)."""
    import gc

    from starloop.lora_merge import page_lock

    class Runtime:  # torch.cuda.cudart()'s two calls, with their real arities
        def __init__(self):
            self.calls = []

        def cudaHostRegister(self, ptr: int, size: int, flags: int) -> int:
            self.calls.append(("register", ptr, size))
            return 0

        def cudaHostUnregister(self, ptr: int) -> int:
            self.calls.append(("unregister", ptr))
            return 0

    rt, buf = Runtime(), torch.empty(4096, dtype=torch.uint8)
    ptr = buf.data_ptr()
    page_lock(buf, rt)
    del buf
    gc.collect()
    assert rt.calls == [("register", ptr, 4096), ("unregister", ptr)]
