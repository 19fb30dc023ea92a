"""Are a training step's LoRA gradients the same from one run to the next, with and without `deterministic=true`?

    # GPU: Llama-3.1-8B's width, 4 layers, random weights, bf16, 8 padded sequences of up to 448 tokens
    python bench/determinism.py --shape llama-8b --layers 4 --out results/determinism.json
    # CPU: tiny shape, same code path
    python bench/determinism.py --shape tiny --device cpu --seq 64

Each mode (off: torch's defaults; on: `starloop.reproducibility.deterministic_kernels`) runs in its own process,
since cuBLAS reads its workspace setting once. In each, one batch goes through forward and backward --repeats times
under training's attention kernels (`starloop.train.attention_kernels`), from the same weights, and the LoRA
gradients of every repeat are compared bit for bit with the first's. Repeats inside one process see the same
kernel choices, so "identical" here is necessary, not sufficient, for two runs to agree; a difference here is
a difference between runs. The digest of the first repeat's gradients compares two runs of the script (two
processes, or two machines of one kind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time

import torch
from common import SHAPES, environment, random_adapter, random_model, sync, table, write_json

from starloop.reproducibility import deterministic_kernels
from starloop.train import attention_kernels


def batch(vocab: int, n: int, seq: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of seq/2 to seq tokens, right-padded to seq (training's padding), and their attention mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    lengths = torch.linspace(seq // 2, seq, n).long()
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return (ids * mask).to(device), mask.to(device)


def one_mode(args) -> dict:
    """Gradients of --repeats passes in this process, against the first."""
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with deterministic_kernels(args.mode == "on"):
        shape = args.shape
        if args.layers:  # the shape with fewer layers, under a name of its own (the table's entry stays as it is)
            shape = f"{args.shape}-{args.layers}-layers"
            SHAPES.setdefault(shape, {**SHAPES[args.shape], "num_hidden_layers": args.layers})
        model = random_adapter(random_model(shape, device, dtype), r=16)
        params = [p for n, p in model.named_parameters() if "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        ids, mask = batch(model.config.vocab_size, args.batch, args.seq, device)
        first, diffs, times, digests = None, [], [], []
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            sync(device)
            t = time.perf_counter()
            with attention_kernels():
                out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
                out.loss.backward()
            sync(device)
            times.append(time.perf_counter() - t)
            grads = torch.cat([p.grad.float().flatten() for p in params])
            digests.append(hashlib.sha256(grads.cpu().numpy().tobytes()).hexdigest()[:16])
            if first is None:
                first = grads
            else:
                diffs.append(float((grads - first).abs().max()))
    # digest: of the first repeat's gradients, to compare across processes (two runs of this script)
    return {"mode": args.mode, "identical": all(d == 0.0 for d in diffs), "max_abs_diff": max(diffs),
            "digest": digests[0], "distinct_digests": len(set(digests)), "grad_norm": float(first.norm()),
            "step_s": statistics.median(times[1:]), **environment(device)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama-8b", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=4, help="decoder layers (0: the shape's own)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=448, help="padded length (448 = 64 mod 128, as in docs/results.md)")
    ap.add_argument("--repeats", type=int, default=5, help="passes per mode (at least 2: the first is compared)")
    ap.add_argument("--mode", choices=("off", "on"), help="one mode in this process (default: both, each in its own)")
    ap.add_argument("--out", help="JSON file of the results")
    args = ap.parse_args(argv)
    if args.repeats < 2:
        ap.error("--repeats: at least 2 (each repeat is compared with the first)")
    if args.mode:
        rows = [one_mode(args)]
    else:
        rows = []
        same = [f"--{k}={getattr(args, k)}" for k in ("shape", "layers", "device", "batch", "seq", "repeats")]
        for mode in ("off", "on"):
            done = subprocess.run([sys.executable, __file__, *same, f"--mode={mode}"], capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                sys.exit(f"determinism.py --mode={mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(table(rows, [("mode", "deterministic"), ("identical", "gradients identical"),
                           ("max_abs_diff", "max abs difference"), ("digest", "first repeat's digest"),
                           ("step_s", "step s"), ("card", "card")]))
    if args.mode:
        print(json.dumps(rows[0]))
    write_json(args.out, {"args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
