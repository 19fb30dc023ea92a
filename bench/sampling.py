"""Sampling speed: starloop's static sampler against plain `model.generate`, same prompts, same run.

    # GPU: Llama-3.1-8B's shape, random weights, bf16 (the docs/performance.md numbers)
    python bench/sampling.py --shape llama-8b --check --out results/sampling.json
    # real output lengths: 1024 rows through batches of 256, lengths drawn from a stored histogram
    python bench/sampling.py --cases b256:L512:k4:sample:n1024:qwen05b_mmlu_iter1 --continuous-rows 64
    # CPU: the embedded model or the tiny random one, small counts
    python bench/sampling.py --model smollm2-135m --device cpu --cases b8:L64:k1:greedy --new 32
    # with a LoRA adapter attached (r=64, all linear layers): peft's unmerged layers against merged weights
    python bench/sampling.py --model Qwen/Qwen2.5-Coder-1.5B-Instruct --adapter random --skip-plain

A case is `b<rows>:L<prompt length or lo-hi>:k<samples per prompt>:<greedy|sample>[:n<rows>][:<lengths>]`:
b = rows decoded together (the batch), n = rows in all (default b; questions x k), prompts of random token
ids (lengths drawn uniformly in lo..hi when a range is given), `sample` = the STaR defaults (temperature
0.7, top-p 0.95). Without <lengths> every row generates exactly --new tokens (no end-of-sequence: plain
generate gets min_new_tokens, the static sampler no EOS id); new tokens/s = rows x new / wall time,
prefill included. With <lengths> (a histogram in bench/lengths/, see lengths.py) each row stops at a
length drawn from it, forced the same way in every backend, and tok/s counts these useful tokens; the
static sampler runs with row refill and without it (a batch runs until its longest row ends), plain
generate runs n/b batches, and `--continuous-rows` rows go through transformers' continuous batching.
The roofline column is the fastest the case could run on this card: prefill at the measured matmul rate,
then each decode step at max(matmul time, bytes / measured copy bandwidth), where bytes = weights + the KV
cache the step must read (each shared prompt once: the least any sampler reads); with lengths, every step
runs b rows (perfect packing) over the same useful tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time

import lengths as real_lengths
import torch
from common import (
    environment,
    kv_bytes_per_token,
    measure_ceilings,
    out_dir,
    param_counts,
    random_adapter,
    random_model,
    sync,
    table,
    write_json,
)

from starloop.fast_sampling import SamplerStats, StaticSampler
from starloop.lora_merge import merged_lora

GPU_CASES = ["b256:L512:k4:sample", "b256:L512:k1:greedy", "b256:L512:k4:sample:n1024:qwen05b_mmlu_iter1",
             "b256:L512:k4:sample:n1024:qwen05b_mmlu_iter0"]
CPU_CASES = ["b8:L64:k1:greedy", "b8:L64:k4:sample"]
SAMPLE = {"temperature": 0.7, "top_p": 0.95}
STATIC_VARIANTS = {  # StaticSampler options compared side by side (default = the library's defaults)
    "default": {},
    "no-fused-qkv": {"fuse_projections": False},
    "eager-kernels": {"compile_kernels": False},
    "no-graphs": {"cuda_graphs": False},
}


def parse_case(s: str) -> dict:
    b, L, k, mode, *extra = s.split(":")
    lo, _, hi = L[1:].partition("-")
    case = {"case": s, "batch": int(b[1:]), "rows": int(b[1:]), "lo": int(lo), "hi": int(hi or lo), "k": int(k[1:]),
            "mode": mode, "lengths": None}
    for e in extra:
        if e[0] == "n" and e[1:].isdigit():
            case["rows"] = int(e[1:])
        else:
            case["lengths"] = e
    return case


def make_prompts(case: dict, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    n_q = case["rows"] // case["k"]
    qs = [[rng.randrange(3, vocab) for _ in range(rng.randint(case["lo"], case["hi"]))] for _ in range(n_q)]
    return [q for q in qs for _ in range(case["k"])]


def plain_generate(model, prompts, n_new: int, mode: str, lengths=None):
    """Plain transformers generate on one left-padded batch; -> (seconds, new ids [B, n_new]).
    lengths: each row's forced length (`lengths.ForcedLengths`) instead of exactly n_new tokens."""
    dev = model.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    kw = {"max_new_tokens": n_new, "min_new_tokens": n_new, "pad_token_id": 0}
    if lengths is not None:
        from transformers import LogitsProcessorList

        eos = model.config.eos_token_id
        kw = {"max_new_tokens": max(lengths), "pad_token_id": 0, "eos_token_id": eos,
              "logits_processor": LogitsProcessorList([real_lengths.ForcedLengths(lengths, width, eos)])}
    if mode == "sample":
        kw.update(do_sample=True, top_k=0, **SAMPLE)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(0)
    ids, mask = ids.to(dev), mask.to(dev)
    sync(dev)
    t = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    sync(dev)
    return time.perf_counter() - t, out[:, width:].cpu()


def plain_batches(model, prompts, lengths, batch: int, mode: str) -> float:
    """Plain generate over all rows, `batch` rows a call, each row stopped at its length; -> seconds."""
    return sum(plain_generate(model, prompts[i : i + batch], 0, mode, lengths[i : i + batch])[0]
               for i in range(0, len(prompts), batch))


def continuous_generate(model, prompts, lengths, mode: str) -> tuple[float, int]:
    """transformers' continuous batching (paged attention), each row a request with max_new_tokens = its
    length; -> (seconds, tokens generated)."""
    from transformers import GenerationConfig

    kw = {"do_sample": True, "top_k": 0, **SAMPLE} if mode == "sample" else {"do_sample": False}
    gc = GenerationConfig(max_new_tokens=max(lengths), eos_token_id=model.config.eos_token_id, pad_token_id=0, **kw)
    manager = model.init_continuous_batching(generation_config=gc)
    manager.start()
    sync(model.device)
    t = time.perf_counter()
    try:
        for i, (p, n) in enumerate(zip(prompts, lengths)):
            manager.add_request(p, request_id=f"r{i}", max_new_tokens=n)
        done, n_tok = 0, 0
        while done < len(prompts):
            r = manager.get_result(timeout=1)
            if r is not None and r.is_finished():
                done += 1
                n_tok += len(r.generated_tokens)
            elif r is None and not manager.is_running():
                raise RuntimeError("continuous batching stopped early")
        sync(model.device)
        return time.perf_counter() - t, n_tok
    finally:
        manager.stop(block=True)


def static_generate(sampler: StaticSampler, prompts, n_new: int, mode: str, lengths=None):
    sampler.stats = SamplerStats()
    kw = SAMPLE if mode == "sample" else {"temperature": 0.0, "top_p": 1.0}
    sync(sampler.device)
    t = time.perf_counter()
    out = sampler.generate_ids(prompts, list(range(1, len(prompts) + 1)), max_new_tokens=n_new,
                               eos_token_id=None, row_limits=lengths, **kw)
    sync(sampler.device)
    return time.perf_counter() - t, out, sampler.stats


def _costs(model, prompts, ceil):
    """(parameters outside the input embedding, KV bytes per token, attention FLOPs per (query, key),
    each distinct prompt's length, prefill seconds at the measured matmul rate)."""
    cfg = model.config
    p = param_counts(model)["non_embedding"]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_unit = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    unique = list({tuple(x): len(x) for x in prompts}.values())
    prefill = sum(2 * p * L + attn_unit * L * L / 2 for L in unique) / ceil["matmul_flops"]
    return p, kv_bytes_per_token(cfg, model.dtype.itemsize), attn_unit, unique, prefill


def roofline(case, prompts, n_new, model, ceil) -> dict:
    """Lower bound on the wall time of a case (see the module docstring); -> tokens/s limits."""
    if not ceil:
        return {}
    p, kvt, attn_unit, unique, prefill = _costs(model, prompts, ceil)
    rows, flops_s, bw = len(prompts), ceil["matmul_flops"], ceil["copy_bw"]
    prompt_kv = sum(unique) * kvt
    decode = 0.0
    ctx_sum = sum(len(x) for x in prompts)
    for s in range(n_new):
        flops = 2 * p * rows + attn_unit * (ctx_sum + rows * s)
        nbytes = p * model.dtype.itemsize + prompt_kv + rows * s * kvt
        decode += max(flops / flops_s, nbytes / bw)
    weights_only = rows / (p * model.dtype.itemsize / bw)  # decode steps reading weights only, no prefill
    return {"roofline_tok_s": rows * n_new / (prefill + decode), "weights_only_tok_s": weights_only,
            "roofline_prefill_s": prefill, "roofline_step_ms": 1e3 * decode / n_new}


def roofline_lengths(prompts, lengths, batch: int, k: int, model, ceil) -> dict:
    """The roofline of a real-length case: prefill of each question once, then sum(lengths) / batch decode
    steps (every seat busy), each reading the weights, each in-flight question's prompt once and the
    rows' generated keys at their mean position, at max(matmul time, bytes / bandwidth); -> tok/s."""
    if not ceil:
        return {}
    p, kvt, attn_unit, unique, prefill = _costs(model, prompts, ceil)
    flops_s, bw = ceil["matmul_flops"], ceil["copy_bw"]
    useful = sum(lengths)
    steps = useful / batch
    gen_pos = sum(n * (n - 1) / 2 for n in lengths) / useful  # mean generated keys behind a useful token
    prompt = sum(unique) / len(unique)
    flops = 2 * p * batch + attn_unit * batch * (prompt + gen_pos)
    nbytes = p * model.dtype.itemsize + (batch / k * prompt + batch * gen_pos) * kvt
    decode = steps * max(flops / flops_s, nbytes / bw)
    return {"roofline_tok_s": useful / (prefill + decode), "roofline_prefill_s": prefill,
            "roofline_step_ms": 1e3 * decode / steps}


def check_tiny(device: str) -> dict:
    """Exact check on this device: the tiny model in float32, static sampler vs the transformers sampler."""
    from starloop.models import bundled_smollm2_tokenizer, tiny_random_model
    from starloop.sampling import HFSampler

    tok = bundled_smollm2_tokenizer()
    model = tiny_random_model().to(device)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked logits: the nucleus fits the in-graph candidates
    model.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": "word " * (7 * i + 1)}],
                                       add_generation_prompt=True, tokenize=False) for i in range(6)]
    prompts = [p for p in prompts for _ in range(3)]
    seeds = list(range(100, 100 + len(prompts)))
    res = {}
    for t, p in [(0.0, 1.0), (0.7, 0.95), (1.0, 1.0)]:
        ref = HFSampler(model, tok, batch_size=18).generate(prompts, seeds, max_new_tokens=40, temperature=t, top_p=p)
        st = StaticSampler(model, tok, batch_size=9)
        got = st.generate(prompts, seeds, max_new_tokens=40, temperature=t, top_p=p)
        res[f"T={t},top_p={p}"] = {"equal": [g.text for g in got] == [g.text for g in ref],
                                   "fallback_rows": st.stats.fallback_rows,
                                   "attention": st._attend.__name__, "graphs": st.cuda_graphs}
    return res


def profile(sampler: StaticSampler, prompts, mode: str, n_new: int) -> dict:
    """GPU time per kernel over one warm run of n_new tokens, with CUDA graphs and without."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    res, before = {}, sampler.cuda_graphs
    for graphs in (True, False) if sampler.device.type == "cuda" else (False,):
        sampler.cuda_graphs = graphs
        static_generate(sampler, prompts, n_new, mode)  # captures / compiles outside the profile
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t, _, st = static_generate(sampler, prompts, n_new, mode)
        events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
        events.sort(key=lambda e: -e.self_device_time_total)
        busy = sum(e.self_device_time_total for e in events) / 1e3  # ms
        tab = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
        name = "graphs" if graphs else "eager"
        print(f"\nprofile ({name}): wall {1e3 * t:.0f} ms, GPU busy {busy:.0f} ms, decode {1e3 * st.decode_s:.0f} ms, "
              f"prefill {1e3 * st.prefill_s:.0f} ms\n{tab}", flush=True)
        res[name] = {"wall_ms": 1e3 * t, "gpu_busy_ms": busy, "decode_ms": 1e3 * st.decode_s,
                     "top": [(e.key[:90], e.count, e.self_device_time_total / 1e3) for e in events[:25]]}
    sampler.cuda_graphs = before
    return res


def logit_fidelity(model, prompts, n_steps: int = 16) -> dict:
    """Teacher-forced logits of the static sampler's greedy tokens against a float32 forward of the same
    model: relative error of the static sampler's bf16 logits and of transformers' own bf16 forward."""
    prompts = sorted(prompts, key=len, reverse=True)  # the batch's row order: recorded rows line up
    sampler = StaticSampler(model, None, batch_size=len(prompts))
    sampler.record_logits = []
    out = sampler.generate_ids(prompts, list(range(len(prompts))), max_new_tokens=n_steps, temperature=0.0)
    static = torch.stack(sampler.record_logits, 1)  # [B, n, V]
    sampler._drop_state()
    seqs = [p + toks for p, (toks, _) in zip(prompts, out)]

    @torch.no_grad()
    def forward_logits():
        rows = []
        for p, seq in zip(prompts, seqs):
            logits = model(input_ids=torch.tensor([seq], device=model.device)).logits[0]
            rows.append(logits[len(p) - 1 : len(p) - 1 + n_steps].float().cpu())
        return torch.stack(rows)

    hf = forward_logits()
    dtype = model.dtype
    model.float()
    ref = forward_logits()
    model.to(dtype)

    def rel(a):
        return float((a - ref).norm() / ref.norm())

    return {"static_vs_fp32": rel(static), "transformers_bf16_vs_fp32": rel(hf),
            "static_argmax_agrees_fp32": float((static.argmax(-1) == ref.argmax(-1)).float().mean()),
            "transformers_argmax_agrees_fp32": float((hf.argmax(-1) == ref.argmax(-1)).float().mean())}


def _error(e: Exception, what: str = "") -> str:
    import traceback

    traceback.print_exc()
    return f"{what}{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def fixed_case(case, model, args, ceil, n_new, checks):
    """Every row generates exactly n_new tokens; plain generate (2nd run) against each static variant."""
    on_cuda = model.device.type == "cuda"
    prompts = make_prompts(case, model.config.vocab_size)
    base = {"case": case["case"], **roofline(case, prompts, n_new, model, ceil)}
    new_tokens = len(prompts) * n_new
    try:
        if not args.skip_plain:
            plain_generate(model, prompts[:2], 2, case["mode"])  # warm-up (kernels, handles)
            # The first full run grows the allocator's pool step by step (a new, larger cache every
            # step); the later runs reuse it. Both are kept: the last is the baseline.
            times = [plain_generate(model, prompts, n_new, case["mode"])[0] for _ in range(args.plain_runs)]
            base["plain_cold_tok_s"] = new_tokens / times[0]
            base["plain_tok_s"] = new_tokens / times[-1]
            base["plain_step_ms"] = 1e3 * times[-1] / n_new
    except Exception as e:  # noqa: BLE001 -- one failing case must not lose the others' numbers
        base["error"] = _error(e, "plain: ")
    out_rows = []
    for variant in args.static_variants:
        r = {**base, "variant": variant}
        try:
            if on_cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sampler = StaticSampler(model, None, batch_size=case["batch"], **STATIC_VARIANTS[variant])
            t_cold, _, _ = static_generate(sampler, prompts, n_new, case["mode"])
            t_warm, out, st = static_generate(sampler, prompts, n_new, case["mode"])
            assert all(len(ids) == n_new for ids, _ in out)
            r.update(static_tok_s=new_tokens / t_warm, static_cold_tok_s=new_tokens / t_cold,
                     static_prefill_s=st.prefill_s, static_step_ms=1e3 * st.decode_s / max(st.steps, 1),
                     fallback_rows=st.fallback_rows, capture_s=t_cold - t_warm)
            if on_cuda:
                r["static_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if args.profile and variant == args.static_variants[0] and "profile" not in checks:
                checks["profile"] = profile(sampler, prompts, case["mode"], args.profile_steps)
            sampler._drop_state()
            del sampler
            if "plain_tok_s" in r:
                r["speedup"] = r["static_tok_s"] / r["plain_tok_s"]
            if "roofline_tok_s" in r:
                r["of_roofline"] = r["static_tok_s"] / r["roofline_tok_s"]
        except Exception as e:  # noqa: BLE001 -- one failing case must not lose the others' numbers
            r["error"] = _error(e)
        out_rows.append(r)
    return out_rows


def real_length_case(case, model, args, ceil, n_new, checks):
    """Rows stop at lengths drawn from a stored histogram; useful tokens/s of plain generate (n / b batches),
    transformers' continuous batching (first --continuous-rows rows), starloop without and with refill."""
    hist = real_lengths.load(case["lengths"])
    prompts = make_prompts(case, model.config.vocab_size)
    k, limit = case["k"], hist["limit"]
    lengths = real_lengths.draw(hist, len(prompts), seed=1)
    useful = sum(lengths)
    from starloop.sampler_support import auto_batch_size

    base = {"case": case["case"], "useful_tokens": useful, "mean_length": useful / len(lengths),
            "auto_rows": auto_batch_size(model, max(map(len, prompts)), limit, k),
            **roofline_lengths(prompts, lengths, case["batch"], k, model, ceil)}
    try:
        if not args.skip_plain:
            b = case["batch"]
            plain_generate(model, prompts[:b], 0, case["mode"], lengths[:b])  # grows the allocator's pool
            base["plain_tok_s"] = useful / plain_batches(model, prompts, lengths, b, case["mode"])
    except Exception as e:  # noqa: BLE001
        base["error"] = _error(e, "plain: ")
    if args.continuous_rows:
        try:
            n = args.continuous_rows
            t, got = continuous_generate(model, prompts[:n], lengths[:n], case["mode"])
            base["continuous_tok_s"] = sum(lengths[:n]) / t
            base["continuous_rows"], base["continuous_tokens_seen"] = n, got
        except Exception as e:  # noqa: BLE001
            base["continuous_error"] = _error(e, "generate_batch: ")
    out_rows = []
    sampler = StaticSampler(model, None, batch_size=case["batch"])
    b = case["batch"]
    t0 = time.perf_counter()  # compiles and captures for this batch shape: 2 tokens per row of one batch
    static_generate(sampler, prompts[:b], limit, case["mode"], [2] * len(prompts[:b]))
    base["capture_s"] = time.perf_counter() - t0
    for variant, refill in (("no refill", False), ("refill", True)):
        r = {**base, "variant": variant}
        try:
            sampler.refill = refill
            t_warm, out, st = static_generate(sampler, prompts, limit, case["mode"], lengths)
            assert [len(ids) for ids, _ in out] == lengths
            r.update(static_tok_s=useful / t_warm, static_prefill_s=st.prefill_s,
                     static_step_ms=1e3 * st.decode_s / max(st.steps, 1), steps=st.steps, refills=st.refills,
                     occupancy=1 - st.idle_row_steps / max(st.steps * st.seats, 1),
                     fallback_rows=st.fallback_rows)
            if "plain_tok_s" in r:
                r["speedup"] = r["static_tok_s"] / r["plain_tok_s"]
            if "roofline_tok_s" in r:
                r["of_roofline"] = r["static_tok_s"] / r["roofline_tok_s"]
        except Exception as e:  # noqa: BLE001
            r["error"] = _error(e)
        out_rows.append(r)
    if len(out_rows) == 2 and "static_tok_s" in out_rows[0] and "static_tok_s" in out_rows[1]:
        out_rows[1]["refill_gain"] = out_rows[1]["static_tok_s"] / out_rows[0]["static_tok_s"]
    sampler._drop_state()
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["llama-8b", "tiny"], default=None, help="random-weight model shape")
    ap.add_argument("--model", default=None, help="instead of --shape: tiny-random or smollm2-135m (real weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--new", type=int, default=None, help="new tokens per row (default 256 GPU, 32 CPU)")
    ap.add_argument("--check", action="store_true", help="token-exactness checks before timing")
    ap.add_argument("--skip-plain", action="store_true", help="time the static sampler only")
    ap.add_argument("--plain-runs", type=int, default=2, help="timed plain generate runs per case (last counts)")
    ap.add_argument("--static-variants", nargs="*", default=["default"], choices=list(STATIC_VARIANTS))
    ap.add_argument("--continuous-rows", type=int, default=0,
                    help="real-length cases: rows through transformers' continuous batching (0 = skip)")
    ap.add_argument("--profile", action="store_true", help="kernel time table of the first case (warm)")
    ap.add_argument("--profile-steps", type=int, default=48)
    ap.add_argument("--adapter", choices=["random"], default=None,
                    help="attach a random LoRA (r=64, all linear layers) and time each case unmerged and merged")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    on_cuda = torch.device(args.device).type == "cuda"
    cases = [parse_case(c) for c in (args.cases or (GPU_CASES if on_cuda else CPU_CASES))]
    n_new = args.new or (256 if on_cuda else 32)
    env = environment(args.device)
    ceil = measure_ceilings(args.device)
    print(env, {k: f"{v:.4g}" for k, v in ceil.items()}, flush=True)
    torch._dynamo.config.cache_size_limit = 64  # one compiled sampler per (batch, temperature, top-p)

    checks = {}
    if args.check:
        checks["tiny_exact"] = check_tiny(args.device)
        print("tiny exactness:", checks["tiny_exact"], flush=True)

    if args.model:
        from starloop.config import ModelConfig
        from starloop.models import load_model

        model, _ = load_model(ModelConfig(name=args.model, device=args.device))
        name = args.model
    else:
        shape = args.shape or ("llama-8b" if on_cuda else "tiny")
        model = random_model(shape, args.device, torch.bfloat16 if on_cuda else torch.float32)
        name = f"random {shape}"
    if args.adapter:
        model = random_adapter(model)
        name += " + random LoRA r=64 (all linear)"
    vocab = model.config.vocab_size
    print(f"model: {name}, {param_counts(model)['total'] / 1e9:.3f} B parameters, {model.dtype}", flush=True)

    if args.check:
        prompts = make_prompts(parse_case("b16:L200-300:k4:greedy"), vocab, seed=1)
        checks["logits_vs_fp32"] = logit_fidelity(model, prompts)
        print("teacher-forced logits against a float32 forward:", checks["logits_vs_fp32"], flush=True)

    rows = []
    json_path = args.out or (out_dir() and f"{out_dir()}/sampling.json")
    for case in cases:
        run = real_length_case if case["lengths"] else fixed_case
        for lora in ("unmerged", "merged") if args.adapter else (None,):
            t0 = time.perf_counter()
            with merged_lora(model) if lora == "merged" else contextlib.nullcontext():
                merge_s = time.perf_counter() - t0  # the first merge also copies the base to host memory
                case_rows = run(case, model, args, ceil, n_new, checks)
            for r in case_rows:
                if lora:
                    r.update(adapter=lora, merge_s=merge_s if lora == "merged" else None)
                    r["variant"] = f"{r['variant']}, LoRA {lora}"
                rows.append(r)
                print(r, flush=True)
                write_json(json_path, {"env": env, "ceilings": ceil, "model": name, "new_tokens": n_new,
                                       "checks": checks, "rows": rows}, quiet=True)

    cols = [("case", "case"), ("variant", "starloop variant"), ("plain_tok_s", "plain tok/s"),
            ("continuous_tok_s", "generate_batch tok/s"), ("static_tok_s", "starloop tok/s"),
            ("speedup", "ratio"), ("roofline_tok_s", "roofline tok/s"), ("of_roofline", "of roofline"),
            ("plain_step_ms", "plain ms/step"), ("static_step_ms", "starloop ms/step"),
            ("roofline_step_ms", "roofline ms/step"), ("static_prefill_s", "prefill s"),
            ("plain_cold_tok_s", "plain 1st run tok/s"), ("static_cold_tok_s", "starloop 1st run tok/s"),
            ("occupancy", "seat occupancy"), ("refills", "refills"), ("capture_s", "1st-run overhead s"),
            ("fallback_rows", "fallback rows"), ("merge_s", "LoRA merge s"), ("error", "error")]
    print(f"\n{env['card']}, {env['date']}, {name}, {n_new} new tokens per row, torch {env['torch']}, "
          f"transformers {env['transformers']}")
    print(table(rows, cols), flush=True)
    write_json(json_path, {"env": env, "ceilings": ceil, "model": name, "new_tokens": n_new, "checks": checks, "rows": rows})


if __name__ == "__main__":
    main()
