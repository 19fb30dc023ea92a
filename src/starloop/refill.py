"""The decode loop of `StaticSampler` with row refill (continuous batching), as host-side bookkeeping.

The batch has G question slots of c seats each (c = samples per question in this run). A slot holds one
question: its prompt's keys/values once, and its c rows. Every decode step runs all B = G x c rows; a row
that ends (EOS or the token limit) hands its tokens back and its seat idles until every row of its slot
has ended. Free slots take the next waiting questions, several in one prompt pass (`refill_min_free`),
while the other rows keep their place; a newcomer's first token is drawn from its prompt pass (step 0)
and it joins the next decode step at step 1. Without refill the slots are refilled only when all are
free: a batch runs until its longest row ends, as a plain batched `generate` does.

Draws depend on (seed, step, token id) only, and each row keeps its own step count, so a row gets the
same tokens whichever rows share its batch and whenever it entered (tests/test_fast_sampling.py).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence

import torch

Unit = tuple[list[int], list[int]]  # (prompt token ids, the rows that sample it: its seats, in order)


def run_units(sp, units: Sequence[Unit], c: int, seeds: Sequence[int], results: list, n_new: int,
              temperature: float, top_p: float, eos: int | None,
              progress: Callable[[int], None] | None, row_limits: Sequence[int] | None = None) -> None:
    """Generate every row of `units` (each with exactly c rows) on sampler `sp`, writing
    results[row] = (token ids before EOS, whether EOS came) as rows end. A row ends at EOS or after
    min(n_new, row_limits[row]) tokens."""
    st = sp.state_for(len(units), c, max(len(u[0]) for u in units), n_new)
    B, G = st.key[0], st.key[1]
    dev, stats = sp.device, sp.stats
    stats.seats = B
    queue = deque(units)
    held: list[Unit | None] = [None] * G  # the question in each slot
    running = [0] * G  # rows of each slot still running
    free = list(range(G))
    active = torch.zeros(B, dtype=torch.bool)  # host copies: rows running, index of each row's last token
    drawn = torch.zeros(B, dtype=torch.long)
    limit = torch.full((B,), n_new, dtype=torch.long)  # tokens each row may draw
    hist = torch.zeros(B, n_new, dtype=torch.long, device=dev)  # tokens drawn so far, per row
    eos_id = -1 if eos is None else eos
    need = max(1, math.ceil(G * sp.refill_min_free)) if sp.refill else G
    t_start, prefill_s = time.perf_counter(), 0.0

    def finish(rows: list[int]) -> None:
        if not rows:
            return
        got = hist[torch.tensor(rows, device=dev)].tolist()
        for r, ids in zip(rows, got):
            g, j = divmod(r, c)
            ids = ids[: int(drawn[r]) + 1]
            n = ids.index(eos) if eos is not None and eos in ids else len(ids)
            results[held[g][1][j]] = (ids[:n], n < len(ids))
            stats.new_tokens += n
            active[r] = False
            running[g] -= 1
            if running[g] == 0:
                free.append(g)
                if progress:
                    progress(c)

    def fill() -> None:
        stats.refills += bool(active.any())
        slots = sorted(free)[: len(queue)]
        take = [queue.popleft() for _ in slots]
        for g in slots:
            free.remove(g)
        logits = sp.prefill([u[0] for u in take], st, slots).repeat_interleave(c, dim=0)
        if sp.record_logits is not None and len(slots) == G:
            sp.record_logits.append(logits.float().cpu())
        rows = [g * c + j for g in slots for j in range(c)]
        rows_t = torch.tensor(rows, device=dev)
        st.pos0[rows_t] = torch.tensor([len(u[0]) for u in take], device=dev).repeat_interleave(c)
        row_seeds = torch.tensor([seeds[m] for u in take for m in u[1]], dtype=torch.long, device=dev)
        st.seeds[rows_t] = row_seeds
        tok = sp.draw(logits, row_seeds, torch.zeros_like(row_seeds), temperature, top_p)
        hist[rows_t, 0] = tok
        st.tok_in[rows_t] = tok
        for g, u in zip(slots, take):
            held[g], running[g] = u, c
        rows_c = torch.tensor(rows)
        active[rows_c], drawn[rows_c] = True, 0
        if row_limits is not None:
            limit[rows_c] = torch.tensor([min(n_new, row_limits[m]) for u in take for m in u[1]])
        ended = ((tok == eos_id).cpu() | (limit[rows_c] <= 1)).tolist()
        finish([r for r, e in zip(rows, ended) if e])
        stats.rows += len(rows)

    while True:
        if queue and (len(free) == G or (sp.refill and len(free) >= min(need, len(queue)))):
            t0 = time.perf_counter()
            fill()
            prefill_s += time.perf_counter() - t0
            continue
        if not bool(active.any()):
            break
        step = torch.where(active, drawn + 1, 1)  # idle seats rewrite key slot 0 of their own row
        st.step.copy_(step)
        out = sp.decode(st, temperature, top_p)
        tok = sp.draw(out, st.seeds, st.step, temperature, top_p)
        if sp.record_logits is not None:
            sp.record_logits.append((out[0] if isinstance(out, tuple) else out).float().cpu())
        hist[st.rows, st.step] = tok
        st.tok_in.copy_(tok)
        ended = (tok == eos_id).cpu() | (step >= limit - 1)
        stats.steps += 1
        stats.idle_row_steps += int((~active).sum())
        drawn += active.long()
        finish((ended & active).nonzero().squeeze(-1).tolist())
    sp._sync()
    stats.prefill_s += prefill_s
    stats.decode_s += time.perf_counter() - t_start - prefill_s
