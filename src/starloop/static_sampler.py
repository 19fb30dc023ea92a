"""`StaticSampler` (model.sampler=static): a decode loop of its own over the model's modules.

- the k samples of a question share its prompt: the prompt is prefilled once and its keys/values are
  stored once per question; each decode step attends to that shared prefix once per question
  (cascade attention: prefix and per-sample suffix attended separately and merged by log-sum-exp);
- row refill (continuous batching): the batch is a set of seats, c per question slot; when every row of
  a question slot has ended (EOS or its limit) the slot takes the next waiting question (its prompt is
  prefilled while the other rows wait one step), so the batch stays full until the queue is empty
  (refill.py runs this loop). With one sample per question (c = 1) each row is refilled as it ends;
- preallocated (static) key/value buffers, each row at its own step: attention reads only the keys a
  row has (per-row key lengths), so padding and unused slots cost nothing, and on CUDA each decode step
  (model and sampler) is one CUDA-graph replay, captured once per batch shape and decoding setting;
- on CUDA the elementwise parts of a layer (norm + residual, rotary, merge, SiLU) are compiled into one
  kernel each, and q/k/v are one matmul: eager, a step of an 8B model is ~2,000 small kernels;
- buffers sized in buckets and kept across calls, so the parts of a sampling stage reuse one set of
  compiled kernels and graphs; batch size sized from free GPU memory when not given (`auto_batch_size`).
The tensor functions (attention, layer pieces, in-graph draw) are in decode_kernels.py.
docs/performance.md has the measurements and what limits them.
Tokens are those of `HFSampler` for the same seeds: the same hashed Gumbel-max draw (sampling.py) on
the same logits, step numbering from 0 at the first new token of each row, whatever row it shares the
batch with or when it entered. Inside the graph, nucleus sampling looks at the 64 most likely tokens;
a row whose nucleus is wider is flagged and drawn again, exactly, by `gumbel_sample` (`fallback_rows`).

Supported architectures: the Llama family (llama, mistral, qwen2, qwen3), plain or with LoRA adapters
(peft layers are called as they are: merged into the base weights by `lora_merge.merged_lora` in the
stages, they run as plain Linear layers, q/k/v fused); see `static_unsupported` (sampler_support.py). For others
`make_sampler` (fast_sampling.py) falls back to `HFSampler` with a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from starloop.decode_kernels import (
    _add_rms_norm,
    _add_rms_norm_any,
    _attend_efficient,
    _attend_efficient_bias,
    _attend_math,
    _Fused,
    _merge_cascade,
    _pick,
    _rms_norm,
    _rms_norm_any,
    _rope,
    _rope_decode,
    _silu_mul,
    _silu_mul_any,
)
from starloop.errors import StarloopError
from starloop.oom import halved_batch_size, is_oom
from starloop.refill import run_units
from starloop.sampler_support import _causal_lm, auto_batch_size, static_unsupported
from starloop.sampling import Generation, gumbel_sample

log = logging.getLogger("starloop.fast_sampling")


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


# --- the decode loop -----------------------------------------------------------------------------


@dataclass
class _State:
    """Static buffers of one batch shape (B rows = G question slots x c seats), kept across calls."""

    key: tuple  # (B, G, Lp, S): rows, question slots, prompt capacity, generated-key capacity
    kp: list[torch.Tensor]  # per layer [G, Lp, Hkv, D]: each slot's shared prompt keys (right-padded)
    vp: list[torch.Tensor]
    ks: list[torch.Tensor]  # per layer [B, S, Hkv, D]: each row's generated keys
    vs: list[torch.Tensor]
    plen: torch.Tensor  # [G] int32 prompt length of each question slot (keys its rows read)
    pos0: torch.Tensor  # [B] prompt length of each row (position of its first new token)
    seeds: torch.Tensor  # [B]
    tok_in: torch.Tensor  # [B] last token of each row
    step: torch.Tensor  # [B] index of the token each row draws (its key slot is step - 1)
    rows: torch.Tensor  # [B] 0..B-1
    graphs: dict = field(default_factory=dict)  # (temperature, top_p) -> (graph, outputs)


@dataclass
class SamplerStats:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    capture_s: float = 0.0
    steps: int = 0
    rows: int = 0
    new_tokens: int = 0
    fallback_rows: int = 0
    prefill_tokens: int = 0
    refills: int = 0  # prefill passes that filled question slots while other rows were decoding
    idle_row_steps: int = 0  # decode-step seats that held no running row (1 - this / (steps x B): occupancy)
    seats: int = 0  # rows of the batch shape (B)


class StaticSampler:
    """Static-cache decode loop with the prompt shared by its samples and row refill; CUDA graphs on GPU.

    batch_size: rows (samples) decoded together; None = sized from free GPU memory at the first call
    (`auto_batch_size`), 16 on CPU. refill: a question slot whose rows have all ended takes the next
    waiting question (False: a batch runs until its longest row ends, then the next batch starts).
    refill_min_free: with refill, the fraction of question slots that must be free before they are
    refilled together (one prompt pass for several questions instead of one each). cuda_graphs /
    compile_sampling / compile_kernels (the elementwise parts of a layer) / fuse_projections (q, k, v in
    one matmul): None = on for CUDA. prefix_align: prompt buffers hold a multiple of this many tokens
    (calls with prompts up to that length reuse the buffers and graphs). max_prefill_tokens: prompt
    tokens per prefill chunk.
    """

    def __init__(self, model, tokenizer, batch_size: int | None = 64, *, refill: bool = True,
                 refill_min_free: float = 1 / 16, cuda_graphs: bool | None = None,
                 compile_sampling: bool | None = None, compile_kernels: bool | None = None,
                 fuse_projections: bool | None = None, prefix_align: int | None = None,
                 max_prefill_tokens: int = 32768):
        reason = static_unsupported(model)
        if reason:
            raise StarloopError(f"model.sampler=static: {reason}")
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.lm = _causal_lm(model)
        self.inner = self.lm.model
        cfg = self.lm.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.rep = self.n_heads // self.n_kv
        self.layers = list(self.inner.layers)
        self.head = self.lm.get_output_embeddings()
        p = next(self.lm.parameters())
        self.device, self.dtype = p.device, p.dtype
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else (cuda_graphs and on_cuda)
        self.prefix_align = prefix_align or (256 if on_cuda else 8)
        self.refill, self.refill_min_free = refill, refill_min_free
        self.max_prefill_tokens = max_prefill_tokens
        self._attend = self._choose_attention() if on_cuda else _attend_math
        fuse = on_cuda if compile_kernels is None else (compile_kernels and on_cuda)
        # Kernel sets: decode (static shapes) and prompt pass (dynamic shapes).
        self.kd = SimpleNamespace(**{n: _Fused(f, fuse, dynamic=False) for n, f in (
            ("norm", _rms_norm), ("add_norm", _add_rms_norm), ("silu_mul", _silu_mul),
            ("rope_decode", _rope_decode), ("merge", _merge_cascade))})
        self.kp = SimpleNamespace(**{n: _Fused(f, fuse, dynamic=True) for n, f in (
            ("norm", _rms_norm_any), ("add_norm", _add_rms_norm_any), ("silu_mul", _silu_mul_any),
            ("rope", _rope))})
        mlp = self.layers[0].mlp
        self.fused_mlp = all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj")) and \
            getattr(cfg, "hidden_act", None) in ("silu", "swish")
        # q, k, v projections concatenated into one weight (plain Linear layers, or LoRA layers merged into
        # theirs: an unmerged LoRA layer keeps its own forward). A copy (1.6 GB for an 8B model): weights
        # changed later (a merged block left, lora_merge.py) need a new sampler.
        self._qkv_fused: dict[int, tuple] = {}
        fuse_qkv = on_cuda if fuse_projections is None else fuse_projections
        for ly in self.layers if fuse_qkv else ():
            a = ly.self_attn
            mods = tuple(m.base_layer if getattr(m, "merged", False) else m for m in (a.q_proj, a.k_proj, a.v_proj))
            biases = [m.bias for m in mods]
            if any(type(m) is not torch.nn.Linear for m in mods) or len({b is None for b in biases}) > 1:
                continue
            with torch.no_grad():
                self._qkv_fused[id(a)] = (torch.cat([m.weight for m in mods]),
                                          None if biases[0] is None else torch.cat(biases))
        self.fused_norm = all(hasattr(n, "variance_epsilon") and hasattr(n, "weight") for n in
                              [self.inner.norm] + [m for ly in self.layers
                                                   for m in (ly.input_layernorm, ly.post_attention_layernorm)])
        self._pick_compiled = _pick
        if (on_cuda if compile_sampling is None else compile_sampling) and on_cuda:
            self._pick_compiled = torch.compile(_pick, dynamic=False)
        self._state: _State | None = None
        self._pool = None
        self.stats = SamplerStats()
        self.record_logits: list[torch.Tensor] | None = None  # set to [] to keep each step's logits (checks)

    def _choose_attention(self):
        """The first efficient kernel that is there and agrees with the float32 maths; else the maths."""
        g = torch.Generator(device=self.device).manual_seed(0)
        q = torch.randn(2, self.n_kv, 8, self.head_dim, device=self.device, generator=g).to(self.dtype)
        k = torch.randn(2, 80, self.n_kv, self.head_dim, device=self.device, generator=g).to(self.dtype)
        v = torch.randn(2, 80, self.n_kv, self.head_dim, device=self.device, generator=g).to(self.dtype)
        lens = torch.tensor([80, 50], device=self.device, dtype=torch.int32)
        scale = self.head_dim**-0.5
        o2, l2 = _attend_math(q, k, v, lens, scale)
        for fn in (_attend_efficient, _attend_efficient_bias):
            try:
                o1, l1 = fn(q, k, v, lens, scale)
                err = float((o1.float() - o2).norm() / o2.norm()) + float((l1 - l2).abs().max())
                if err < 2e-2:
                    return fn
                log.warning("%s disagrees with the reference (%.3g)", fn.__name__, err)
            except (RuntimeError, NotImplementedError) as e:
                log.warning("%s unavailable (%s)", fn.__name__, str(e).splitlines()[0][:200])
        log.warning("no efficient attention kernel agrees with the reference; using plain maths")
        return _attend_math

    # -- public interface --

    @torch.no_grad()
    def generate(self, prompts, seeds, *, max_new_tokens, temperature=0.0, top_p=1.0, progress=None):
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        enc = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        rows = self.generate_ids(enc, seeds, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, eos_token_id=self.tok.eos_token_id, progress=progress)
        return [Generation(self.tok.decode(ids, skip_special_tokens=True), len(ids), not stopped)
                for ids, stopped in rows]

    @torch.no_grad()
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], seeds: Sequence[int], *, max_new_tokens: int,
                     temperature: float = 0.0, top_p: float = 1.0, eos_token_id: int | None = None,
                     progress: Callable[[int], None] | None = None,
                     row_limits: Sequence[int] | None = None) -> list[tuple[list[int], bool]]:
        """(new token ids before EOS, whether EOS came) per prompt, in prompt order. row_limits: tokens
        per prompt, each at most max_new_tokens (a benchmark's stand-in for real output lengths)."""
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt")
        if len(prompt_ids) != len(seeds):
            raise ValueError("one seed per prompt")
        if not prompt_ids or max_new_tokens < 1:
            return [([], False) for _ in prompt_ids]
        self.plan_batch(max_new_tokens, len(prompt_ids) // len({tuple(p) for p in prompt_ids}),
                        max(len(p) for p in prompt_ids))
        # Identical prompts (the k samples of a question) form one unit with one shared prefix.
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prompt_ids):
            groups.setdefault(tuple(p), []).append(i)
        units = []  # (prompt, member rows), at most batch_size members each
        for p, members in groups.items():
            for s in range(0, len(members), self.batch_size):
                units.append((list(p), members[s : s + self.batch_size]))
        results: list[tuple[list[int], bool] | None] = [None] * len(prompt_ids)
        # One run per unit size c (seats per question slot), longest prompts first (OOM early).
        by_count: dict[int, list] = {}
        for u in units:
            by_count.setdefault(len(u[1]), []).append(u)
        for c in sorted(by_count):
            todo = sorted(by_count[c], key=lambda u: -len(u[0]))
            while todo:
                try:
                    run_units(self, todo, c, seeds, results, max_new_tokens, temperature, top_p, eos_token_id,
                              progress, row_limits)
                except (torch.OutOfMemoryError, RuntimeError) as e:
                    if is_oom(e):
                        self._drop_state()  # the graphs and buffers of the failed batch size
                    self.batch_size = halved_batch_size(e, self.batch_size, "sampling", floor=c)
                # Units whose rows have all ended are kept; the others run again (their draws are seeded,
                # so they give the same tokens).
                todo = [u for u in todo if any(results[r] is None for r in u[1])]
        return results  # type: ignore[return-value]

    def plan_batch(self, max_new_tokens: int, k: int, max_prompt: int = 1024) -> int:
        """The batch size, sized now (from free memory, for prompts up to max_prompt tokens) if unset."""
        if self.batch_size is None:
            self.batch_size = auto_batch_size(self.lm, max_prompt, max_new_tokens, k, self.max_prefill_tokens)
        return self.batch_size

    # -- buffers --

    def _drop_state(self):
        self._state = None
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def state_for(self, n_units: int, c: int, max_prompt: int, n_new: int) -> _State:
        """Buffers for question slots of c seats: kept when they fit (same slots, enough capacity), so
        the calls of one sampling stage reuse one set of compiled kernels and graphs."""
        on_cuda = self.device.type == "cuda"
        G = max(1, self.batch_size // c)
        if n_units < G:  # fewer questions than slots: a power of two, so few distinct shapes
            G = min(G, 1 << (n_units - 1).bit_length())
        B = G * c
        Lp = _round_up(max_prompt, self.prefix_align)
        S = _round_up(max(n_new - 1, 1), 64 if on_cuda else 1)
        st = self._state
        if st is not None and st.key[:2] == (B, G) and st.key[2] >= Lp and st.key[3] >= S:
            return st
        self._drop_state()
        dev, dt = self.device, self.dtype
        n_layers = len(self.layers)

        def z(*shape, dtype=dt):
            return torch.zeros(*shape, device=dev, dtype=dtype)

        self._state = _State(
            key=(B, G, Lp, S),
            kp=[z(G, Lp, self.n_kv, self.head_dim) for _ in range(n_layers)],
            vp=[z(G, Lp, self.n_kv, self.head_dim) for _ in range(n_layers)],
            ks=[z(B, S, self.n_kv, self.head_dim) for _ in range(n_layers)],
            vs=[z(B, S, self.n_kv, self.head_dim) for _ in range(n_layers)],
            plen=torch.ones(G, device=dev, dtype=torch.int32), pos0=z(B, dtype=torch.long),
            seeds=z(B, dtype=torch.long), tok_in=z(B, dtype=torch.long),
            step=torch.ones(B, device=dev, dtype=torch.long), rows=torch.arange(B, device=dev),
        )
        return self._state

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _pick(self, logits, seeds, step, temperature: float, top_p: float):
        # Only the full-vocabulary draw (top_p = 1) is worth compiling: its hash runs over every token id,
        # a dozen elementwise passes over [B, V] that compilation fuses into one. Greedy is one argmax, and
        # the nucleus path hashes just the candidates.
        if temperature <= 0 or top_p < 1.0 or self._pick_compiled is _pick:
            return _pick(logits, seeds, step, temperature, top_p)
        try:
            return self._pick_compiled(logits, seeds, step, temperature, top_p)
        except Exception as e:  # noqa: BLE001 -- a compiler failure costs speed, never the run
            log.warning("compiled sampling failed (%s); sampling eagerly", str(e).splitlines()[0][:200])
            self._pick_compiled = _pick
            return _pick(logits, seeds, step, temperature, top_p)

    def draw(self, logits, seeds: torch.Tensor, step: torch.Tensor, temperature: float, top_p: float):
        """Token per row; rows whose nucleus is wider than the candidates are drawn exactly here.
        logits: [N, V], or (logits, token, needs_exact) replayed from a graph; seeds, step: [N]."""
        if isinstance(logits, tuple):
            logits, tok, needs_exact = logits
        else:
            tok, needs_exact = self._pick(logits, seeds, step, temperature, top_p)
        if needs_exact is not None and bool(needs_exact.any()):
            rows = needs_exact.nonzero().squeeze(-1)
            tok = tok.clone()
            tok[rows] = gumbel_sample(logits[rows], seeds[rows], step[rows], temperature, top_p)
            self.stats.fallback_rows += int(rows.numel())
        return tok

    # -- model maths --

    def _norm(self, ks, module, x):
        return ks.norm(x, module.weight, module.variance_epsilon) if self.fused_norm else module(x)

    def _add_norm(self, ks, module, x, delta):
        """(x + delta, module(x + delta))."""
        if self.fused_norm:
            return ks.add_norm(x, delta, module.weight, module.variance_epsilon)
        x = x + delta
        return x, module(x)

    def _mlp(self, ks, mlp, h):
        if self.fused_mlp:
            return mlp.down_proj(ks.silu_mul(mlp.gate_proj(h), mlp.up_proj(h)))
        return mlp(h)

    def _qkv(self, attn, h):
        """Projected (and, for qwen3, normed) q [N, Hq, L, D], k/v [N, Hkv, L, D] of h [N, L, H], not rotated."""
        n, L = h.shape[:2]
        fused = self._qkv_fused.get(id(attn))
        if fused is not None:  # one matmul for q, k and v
            qkv = F.linear(h, *fused)
            nq, nk = self.n_heads * self.head_dim, self.n_kv * self.head_dim
            q, k, v = qkv[..., :nq], qkv[..., nq : nq + nk], qkv[..., nq + nk :]
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        q = q.view(n, L, -1, self.head_dim)
        k = k.view(n, L, -1, self.head_dim)
        v = v.view(n, L, -1, self.head_dim).transpose(1, 2)
        if getattr(attn, "q_norm", None) is not None:
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v

    def _embed(self, ids):
        """The embedding module's output (a LoRA on it applies), detached: with gradient checkpointing,
        `enable_input_require_grads` hooks the module to mark its output as requiring grad even under
        no_grad, and a compiled kernel given such a tensor fails its guard and recompiles every call."""
        return self.inner.embed_tokens(ids).detach()

    def _layers(self, ks, x, attention):
        """Run the decoder layers on x [N, L, H] with kernel set ks; attention(layer index, attn module, h)
        -> o_proj input. Returns (x, h = final_norm(x))."""
        layers = self.layers
        h = self._norm(ks, layers[0].input_layernorm, x)
        for li, layer in enumerate(layers):
            attn = layer.self_attn
            x, h = self._add_norm(ks, layer.post_attention_layernorm, x, attn.o_proj(attention(li, attn, h)))
            nxt = layers[li + 1].input_layernorm if li + 1 < len(layers) else self.inner.norm
            x, h = self._add_norm(ks, nxt, x, self._mlp(ks, layer.mlp, h))
        return x, h

    def prefill(self, prompts: list[list[int]], st: _State, slots: list[int]) -> torch.Tensor:
        """Run the prompts (right-padded, in chunks), store their keys/values in question slots `slots`;
        -> last logits [len(prompts), V]."""
        dev, out = self.device, []
        lmax = max(len(p) for p in prompts)
        per_chunk = max(1, self.max_prefill_tokens // lmax)
        st.plen[torch.tensor(slots, device=dev)] = torch.tensor([len(p) for p in prompts], device=dev,
                                                               dtype=torch.int32)
        for g0 in range(0, len(prompts), per_chunk):
            chunk = prompts[g0 : g0 + per_chunk]
            n, L = len(chunk), max(len(p) for p in chunk)
            where = torch.tensor(slots[g0 : g0 + n], device=dev)
            ids = torch.zeros(n, L, dtype=torch.long)
            for r, p in enumerate(chunk):
                ids[r, : len(p)] = torch.tensor(p)
            x = self._embed(ids.to(dev))
            cos, sin = self.inner.rotary_emb(x, torch.arange(L, device=dev)[None, :].expand(n, L))

            def attention(li, attn, h, where=where, n=n, L=L, cos=cos, sin=sin):
                q, k, v = self._qkv(attn, h)
                q, k = self.kp.rope(q, k, cos, sin)
                st.kp[li][where, :L] = k.transpose(1, 2)
                st.vp[li][where, :L] = v.transpose(1, 2)
                # Right padding: a prompt token only sees earlier (real) tokens under the causal mask.
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling,
                                                   enable_gqa=self.rep > 1)
                return o.transpose(1, 2).reshape(n, L, -1)

            _, h = self._layers(self.kp, x, attention)
            last = torch.tensor([len(p) - 1 for p in chunk], device=dev)
            out.append(self.head(h[torch.arange(n, device=dev), last]))
        self.stats.prefill_tokens += sum(len(p) for p in prompts)
        return torch.cat(out)

    def _decode_logits(self, st: _State) -> torch.Tensor:
        """One decode step for all rows: st.tok_in at position st.pos0 + st.step - 1 -> logits [B, V]."""
        B, G = st.key[0], st.key[1]
        c = B // G
        slot = st.step - 1  # each row's key slot
        x = self._embed(st.tok_in)[:, None, :]  # [B, 1, H]
        cos, sin = self.inner.rotary_emb(x, (st.pos0 + slot)[:, None])
        n_keys = st.step.to(torch.int32)  # generated keys each row attends, this step's included

        def attention(li, attn, h):
            q, k, v = self._qkv(attn, h)
            qp, qs, k = self.kd.rope_decode(q, k, cos, sin, c)
            st.ks[li][st.rows, slot] = k[:, :, 0]
            st.vs[li][st.rows, slot] = v[:, :, 0]
            # Shared prompt: the c samples' queries of a question attend its prefix in one pass; then
            # each sample's own generated tokens; merged by log-sum-exp.
            op, lp = self._attend(qp, st.kp[li], st.vp[li], st.plen, attn.scaling)
            os_, ls = self._attend(qs, st.ks[li], st.vs[li], n_keys, attn.scaling)
            return self.kd.merge(op, lp, os_.to(self.dtype), ls, c)

        _, h = self._layers(self.kd, x, attention)
        return self.head(h)[:, 0]

    def decode(self, st: _State, temperature: float, top_p: float):
        """Logits of one decode step, or (logits, token, needs_exact) replayed from a CUDA graph."""
        if not self.cuda_graphs:
            return self._decode_logits(st)
        gkey = (temperature, top_p)
        if gkey not in st.graphs:
            try:
                self._capture(st, temperature, top_p)
            except Exception as e:  # e.g. an op that cannot be captured: run eagerly instead
                if is_oom(e):
                    raise
                log.warning("CUDA graph capture failed (%s); decoding without graphs", str(e).splitlines()[0][:200])
                self.cuda_graphs = False
                torch.cuda.synchronize()
                return self._decode_logits(st)
        graph, outs = st.graphs[gkey]
        graph.replay()
        return outs

    def _capture(self, st: _State, temperature: float, top_p: float) -> None:
        """Record one decode step (model + sampling) as a CUDA graph."""
        gkey = (temperature, top_p)
        t0 = time.perf_counter()

        def step():
            logits = self._decode_logits(st)
            tok, needs_exact = self._pick(logits, st.seeds, st.step, temperature, top_p)
            return logits, tok, needs_exact

        # Warm up on a side stream (library handles, compilation), then capture. Both only
        # rewrite each row's current key slot, with the values the replay writes again.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outs = step()
        st.graphs[gkey] = (graph, outs)
        self._sync()
        self.stats.capture_s += time.perf_counter() - t0
