"""Tensor functions of `StaticSampler`'s forward passes (static_sampler.py); no model or state here.

- attention: plain float32 maths or the memory-efficient kernel, each with its log-sum-exp, and the merge
  of two attentions over disjoint key sets (cascade attention: shared prefix + per-sample suffix);
- the elementwise pieces of a layer (norm + residual, rotary, merge, SiLU), which `_Fused` compiles into
  one kernel each on CUDA;
- `_pick`: the token draw inside the decode graph, `gumbel_sample`'s draw (sampling.py) among the top
  CANDIDATES tokens, with the rows it cannot draw exactly flagged.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from starloop.sampling import hashed_uniform

log = logging.getLogger("starloop.fast_sampling")

CANDIDATES = 64  # nucleus candidates looked at inside the decode graph (as `sampling._nucleus` starts)


# --- attention -----------------------------------------------------------------------------------


def _length_bias(lens: torch.Tensor, n_keys: int) -> torch.Tensor:
    """[N, 1, 1, n_keys] float32: 0 on the first lens[n] keys of row n, -inf after them."""
    keep = torch.arange(n_keys, device=lens.device)[None, :] < lens[:, None]
    return torch.where(keep, 0.0, float("-inf"))[:, None, None, :]


def _attend_math(q, k, v, lens, scale):
    """softmax(q k^T * scale) v over the first lens[n] keys of each row n, and its log-sum-exp, in float32.

    q [N, H, M, D], k/v [N, L, H, D] (token-major, as the sampler stores them), lens int [N] (1..L).
    -> ([N, H, M, D], [N, H, M])."""
    k, v = k.transpose(1, 2), v.transpose(1, 2)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale + _length_bias(lens, k.shape[-2])
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.exp(s - lse[..., None]), v.float()), lse


def _attend_efficient(q, k, v, lens, scale):
    """The same through the memory-efficient attention kernel in its variable-length mode: the N rows are
    one packed sequence set (row n's keys start at n x L) and the kernel reads only the first lens[n] keys
    of row n, so padding and unused slots cost no memory traffic. k/v must be contiguous [N, L, H, D]."""
    n, h, m, d = q.shape
    L = k.shape[1]
    qf = q.transpose(1, 2).reshape(1, n * m, h, d)
    cu_q = torch.arange(0, (n + 1) * m, m, device=q.device, dtype=torch.int32)
    cu_k = torch.arange(0, (n + 1) * L, L, device=q.device, dtype=torch.int32)
    out, lse = torch.ops.aten._efficient_attention_forward(
        qf, k.view(1, n * L, h, d), v.view(1, n * L, h, d), None, cu_q, cu_k, m, L, 0.0, 0, True,
        scale=scale, seqlen_k=lens.to(torch.int32))[:2]
    return out.view(n, m, h, d).transpose(1, 2), lse[..., :m]


def _attend_efficient_bias(q, k, v, lens, scale):
    """The same kernel in its batched mode with the lengths as an additive -inf mask: it reads every key
    of the buffer (the fallback where the variable-length mode is unavailable or disagrees)."""
    n, h, m, _ = q.shape
    bias = _length_bias(lens, k.shape[1]).to(q.dtype).expand(n, h, m, k.shape[1])
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k.transpose(1, 2), v.transpose(1, 2), bias, True, scale=scale)[:2]
    return out, lse[..., :m]


def _merge(out_a, lse_a, out_b, lse_b):
    """Attention over the union of two key sets from the attention over each (log-sum-exp weights)."""
    m = torch.maximum(lse_a, lse_b)
    wa, wb = torch.exp(lse_a - m)[..., None], torch.exp(lse_b - m)[..., None]
    return (out_a * wa + out_b * wb) / (wa + wb)


# --- elementwise pieces of a layer, fused by compilation on CUDA ---------------------------------
# Eager, a decode step of an 8B model is ~2,000 small kernels whose fixed cost (~3 us each, even replayed
# from a graph) is as large as reading the weights; compiled, each piece below is one kernel.


def _rms_norm(x, weight, eps: float):
    """The Llama-family RMSNorm (float32 statistics, scaled in the input dtype)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _add_rms_norm(x, delta, weight, eps: float):
    """(x + delta, rms_norm(x + delta)): a residual add and the next norm in one pass."""
    x = x + delta
    return x, _rms_norm(x, weight, eps)


def _rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]), dim=-1)


def _rope(q, k, cos, sin):
    """Rotary embedding of q [N, Hq, L, D] and k [N, Hkv, L, D]; cos/sin [N, L, D]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rope_decode(q, k, cos, sin, c: int):
    """Rotated q [B, Hq, 1, D] laid out for both attentions (prefix [G, Hkv, c*rep, D], suffix
    [B, Hkv, rep, D]) and rotated k [B, Hkv, 1, D]; rows are question-major (B = G*c)."""
    q, k = _rope(q, k, cos, sin)
    b, hq, _, d = q.shape
    n_kv = k.shape[1]
    rep = hq // n_kv
    qs = q.reshape(b, n_kv, rep, d)
    qp = q.reshape(b // c, c, n_kv, rep, d).permute(0, 2, 1, 3, 4).reshape(b // c, n_kv, c * rep, d)
    return qp.contiguous(), qs.contiguous(), k


def _merge_cascade(op, lp, os_, ls, c: int):
    """Merge the prefix attention (op [G, Hkv, c*rep, D], lp) and the suffix attention (os_ [B, Hkv, rep, D],
    ls) into the attention output [B, 1, Hq*D] in the suffix's dtype."""
    g, n_kv, m, d = op.shape
    rep, b = m // c, g * c
    op = op.float().reshape(g, n_kv, c, rep, d).permute(0, 2, 1, 3, 4).reshape(b, n_kv, rep, d)
    lp = lp.reshape(g, n_kv, c, rep).permute(0, 2, 1, 3).reshape(b, n_kv, rep)
    return _merge(op, lp, os_.float(), ls).to(os_.dtype).reshape(b, 1, n_kv * rep * d)


def _silu_mul(gate, up):
    return F.silu(gate) * up


# The prompt pass (any prompt length) compiles these once with dynamic shapes; the decode step compiles
# the functions above per batch shape: static-shape kernels run several times faster there (aligned,
# vectorized loads), which matters for ~600 small kernels a step. Distinct functions keep the two
# compilations apart.
def _rms_norm_any(x, weight, eps: float):
    return _rms_norm(x, weight, eps)


def _add_rms_norm_any(x, delta, weight, eps: float):
    return _add_rms_norm(x, delta, weight, eps)


def _silu_mul_any(gate, up):
    return _silu_mul(gate, up)


class _Fused:
    """`fn`, compiled when asked; a compiler failure falls back to `fn` for good."""

    def __init__(self, fn, compile_it: bool, dynamic: bool):
        self.fn = fn
        self.compiled = torch.compile(fn, dynamic=dynamic) if compile_it else None

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001 -- a compiler failure costs speed, never the run
                log.warning("compiling %s failed (%s); running it eagerly", self.fn.__name__,
                            str(e).splitlines()[0][:200])
                self.compiled = None
        return self.fn(*args)


# --- sampling inside the graph -------------------------------------------------------------------


def _pick(logits: torch.Tensor, seeds: torch.Tensor, step: torch.Tensor, temperature: float, top_p: float):
    """(token [B], needs_exact [B] bool): `gumbel_sample`'s draw where needs_exact is False.

    Greedy and top_p = 1 are exact everywhere. With top_p < 1 the nucleus is searched among the top
    CANDIDATES tokens only, as `sampling._nucleus` starts; rows whose nucleus is wider are flagged.
    `step` is a tensor so that one captured graph serves every step."""
    if temperature <= 0:
        return torch.argmax(logits.float(), dim=-1), None
    scores = logits.float() / temperature
    vocab = scores.shape[-1]
    if top_p >= 1.0:
        u = hashed_uniform(seeds, step, vocab)  # type: ignore[arg-type]
        return torch.argmax(scores - torch.log(-torch.log(u)), dim=-1), None
    k = min(vocab, CANDIDATES)
    log_z = torch.logsumexp(scores, dim=-1, keepdim=True)
    vals, ids = scores.topk(k, dim=-1)
    probs = torch.exp(vals - log_z)
    before = probs.cumsum(dim=-1) - probs
    needs_exact = (before[:, -1] + probs[:, -1] < top_p) & (k < vocab)
    vals = vals.masked_fill(before >= top_p, float("-inf"))
    u = hashed_uniform(seeds, step, ids)  # type: ignore[arg-type]
    pick = torch.argmax(vals - torch.log(-torch.log(u)), dim=-1, keepdim=True)
    return ids.gather(-1, pick).squeeze(-1), needs_exact
