"""Decode steps a schedule needs for given output lengths, without a model: what bounds row refill.

    python bench/refill_schedule.py                     # the stored histograms, 1024 rows, 4 samples a question

Mirrors the slot bookkeeping of src/starloop/refill.py: G = batch / c slots of c seats; a slot is busy
until the longest of its question's rows ends; free slots are refilled once at least G/16 are free (or
the queue is shorter). `c = 1` is refill per row (no shared prompt); `batch = rows` is one wave.
"""

from __future__ import annotations

import argparse
import math

import lengths as real_lengths


def decode_steps(lengths: list[int], c: int, batch: int, refill: bool, min_free: float = 1 / 16) -> int:
    G = batch // c
    queue = [lengths[i : i + c] for i in range(0, len(lengths), c)]
    left = [0] * G  # decode steps each slot still needs
    free, steps = list(range(G)), 0
    need = max(1, math.ceil(G * min_free))
    while True:
        if queue and (len(free) == G or (refill and len(free) >= min(need, len(queue)))):
            for g in sorted(free)[: len(queue)]:
                left[g] = max(queue.pop(0)) - 1  # the first token comes from the prompt pass
                free.remove(g)
                if left[g] <= 0:
                    free.append(g)
            continue
        if len(free) == G:
            return steps
        steps += 1
        for g in range(G):
            if g not in free:
                left[g] -= 1
                if left[g] == 0:
                    free.append(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", nargs="*", default=list(real_lengths.FIGURES))
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    print("| lengths | useful tokens | ideal steps | no refill | slot refill | row refill (c=1) | one wave |")
    print("|---|---|---|---|---|---|---|")
    for name in args.lengths:
        ls = real_lengths.draw(real_lengths.load(name), args.rows, seed=1)
        print(f"| {name} | {sum(ls)} | {math.ceil(sum(ls) / args.batch)} | "
              f"{decode_steps(ls, args.k, args.batch, False)} | {decode_steps(ls, args.k, args.batch, True)} | "
              f"{decode_steps(ls, 1, args.batch, True)} | {decode_steps(ls, args.k, args.rows, False)} |")


if __name__ == "__main__":
    main()
