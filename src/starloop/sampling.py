"""Generation behind one small interface: prompts + per-sample seeds -> generations.

Reproducibility: each sample carries its own seed (derived from (seed, iteration, question, sample)
by `sample_seed`). Sampling uses the Gumbel-max trick with noise from a counter-based hash of
(sample seed, step, token id), so the tokens a sample gets do not depend on which other samples
share its batch, the batch size, or the order of the prompts. Greedy decoding is temperature 0.

Backends behind the same `Sampler.generate` signature: `HFSampler` here (transformers `generate`),
`StaticSampler` (starloop.static_sampler, a static KV cache) and `VLLMSampler` (starloop.vllm_sampler);
`starloop.fast_sampling.make_sampler` picks one from model.sampler.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from starloop.oom import halved_batch_size

log = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF


def sample_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (e.g. global seed, iteration, question id, sample index)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finalizer on int64 tensors holding 32-bit values (products wrap; low bits exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def hashed_uniform(seeds: torch.Tensor, step: int, token_ids: torch.Tensor | int) -> torch.Tensor:
    """Uniform(0,1) noise, a pure function of (seed, step, token id). seeds: int64 [B].

    token_ids: [B, k] ids to draw noise for, or an int V meaning every id 0..V-1 ([B, V] out).
    """
    if isinstance(token_ids, int):
        token_ids = torch.arange(token_ids, device=seeds.device, dtype=torch.int64)[None, :]
    s = _mix32((seeds.to(torch.int64) & _M32) ^ ((step * 0x9E3779B1) & _M32))
    x = _mix32((s[:, None] ^ ((token_ids.to(torch.int64) * 0x27D4EB2F) & _M32)) & _M32)
    return unit_interval(x)


UNIFORM_BITS = 23  # float32 holds (2^23 - 1) + 0.5 exactly; with 24 bits it rounds to 2^24, and u to 1.0


def unit_interval(x: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) float32 from 32-bit hash values: the top UNIFORM_BITS bits, centred in their cell.

    u = (floor(x / 2^(32-b)) + 0.5) / 2^b lies in [2^-(b+1), 1 - 2^-(b+1)], both ends exact in float32,
    so the Gumbel noise -log(-log u) is finite for every x. (With b = 24 the largest value rounded to
    exactly 1.0: infinite noise, and that token won whatever its probability.)"""
    b = UNIFORM_BITS
    return ((x >> (32 - b)).to(torch.float32) + 0.5) / float(1 << b)


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the smallest set of tokens with probability mass >= top_p to -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Keep a token if the mass strictly before it is < top_p (so the top token is always kept).
    remove_sorted = probs.cumsum(dim=-1) - probs >= top_p
    remove = torch.zeros_like(remove_sorted).scatter(-1, idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def _nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate scores with -inf outside the nucleus, candidate ids), both [B, k].

    Exactly `filter_top_p`, but over the top-k only, with k grown until every row's nucleus fits:
    sampling then hashes and compares k entries per row instead of the whole vocabulary.
    """
    vocab = scores.shape[-1]
    log_z = torch.logsumexp(scores, dim=-1, keepdim=True)
    k = min(vocab, 64)
    while True:
        vals, ids = scores.topk(k, dim=-1)  # sorted, descending
        probs = torch.exp(vals - log_z)
        before = probs.cumsum(dim=-1) - probs
        if k == vocab or bool((before[:, -1] + probs[:, -1] >= top_p).all()):
            return vals.masked_fill(before >= top_p, float("-inf")), ids
        k = min(vocab, k * 8)


def gumbel_sample(logits: torch.Tensor, seeds: torch.Tensor, step: int, temperature: float, top_p: float):
    """Draw one token per row from softmax(logits / T) restricted to the top-p nucleus.

    argmax(log p + Gumbel) is an exact sample of p; Gumbel = -log(-log(u)), u hashed from the token id,
    so the draw does not depend on the candidate set's order or size.
    """
    scores = logits.float() / temperature
    if top_p < 1.0:
        scores, ids = _nucleus(scores, top_p)
    else:
        ids = torch.arange(scores.shape[-1], device=scores.device)[None, :].expand_as(scores)
    u = hashed_uniform(seeds, step, ids)
    pick = torch.argmax(scores - torch.log(-torch.log(u)), dim=-1, keepdim=True)
    return ids.gather(-1, pick).squeeze(-1)


@dataclass
class Generation:
    text: str
    n_tokens: int
    truncated: bool  # stopped by max_new_tokens rather than an end-of-sequence token


class Sampler(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """One generation per prompt, in prompt order. `progress(n)` is called as prompts finish."""
        ...


class _SeededLogitsProcessor:
    """Turns greedy `generate` into seeded Gumbel sampling: adds per-row noise, argmax picks the sample."""

    def __init__(self, seeds: torch.Tensor, prompt_len: int, temperature: float, top_p: float):
        self.seeds, self.prompt_len = seeds, prompt_len
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        tok = gumbel_sample(scores, self.seeds.to(scores.device), step, self.temperature, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tok[:, None], 0.0)


class HFSampler:
    """Batched generation with transformers' `generate`, prompts sorted by length to cut padding.

    On CUDA out-of-memory the batch size is halved and the batch retried (logged).
    """

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size

    @torch.no_grad()
    def generate(self, prompts, seeds, *, max_new_tokens, temperature=0.0, top_p=1.0, progress=None):
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        enc = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))  # longest first: OOM early
        results: list[Generation | None] = [None] * len(prompts)
        pos = 0
        while pos < len(order):
            idx = order[pos : pos + self.batch_size]
            try:
                gens = self._generate_batch([enc[i] for i in idx], [seeds[i] for i in idx],
                                            max_new_tokens, temperature, top_p)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                self.batch_size = halved_batch_size(e, self.batch_size, "sampling")
                continue
            for i, g in zip(idx, gens):
                results[i] = g
            pos += len(idx)
            if progress:
                progress(len(idx))
        return results  # type: ignore[return-value]

    def _generate_batch(self, ids_list, seeds, max_new_tokens, temperature, top_p) -> list[Generation]:
        device = self.model.device
        pad = self.tok.pad_token_id
        width = max(len(x) for x in ids_list)
        input_ids = torch.full((len(ids_list), width), pad, dtype=torch.long)
        attn = torch.zeros((len(ids_list), width), dtype=torch.long)
        for r, ids in enumerate(ids_list):  # left padding
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attn[r, width - len(ids) :] = 1
        kwargs: dict = {
            "input_ids": input_ids.to(device),
            "attention_mask": attn.to(device),
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "pad_token_id": pad,
            "eos_token_id": self.tok.eos_token_id,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        if temperature > 0:
            from transformers import LogitsProcessorList

            proc = _SeededLogitsProcessor(torch.tensor(seeds, dtype=torch.int64), width, temperature, top_p)
            kwargs["logits_processor"] = LogitsProcessorList([proc])
        out = self.model.generate(**kwargs)[:, width:].cpu()
        gens = []
        eos = self.tok.eos_token_id
        for row in out.tolist():
            n = len(row)
            stopped = False
            for j, t in enumerate(row):
                if t == eos:
                    n, stopped = j, True
                    break
            gens.append(Generation(self.tok.decode(row[:n], skip_special_tokens=True), n, not stopped))
        return gens
