"""Time cross-entropy forward + backward: fastbpe.lm.nn's readable and fast versions against
torch.nn.functional.cross_entropy.

    python benches/ce_bench.py [--tokens 1024] [--vocab 50257] [--dtype float32] [--steps 10]
                               [--threads N]

The three run in turn each round (so load from other processes hits them alike); the table
gives the median ms of a forward + backward and that time over torch's.
"""

from __future__ import annotations

import argparse, os, statistics, sys, time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))  # runs from a checkout without installing
from fastbpe.lm import nn  # noqa: E402


def step(fn, logits, targets):
    logits.grad = None
    t0 = time.perf_counter()
    fn(logits, targets).backward()
    return (time.perf_counter() - t0) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logits = (torch.randn(args.tokens, args.vocab) * 2).to(getattr(torch, args.dtype)).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,))
    impls = {"readable": nn.readable_cross_entropy, "fast": nn.cross_entropy, "F.cross_entropy": F.cross_entropy}
    times = {name: [] for name in impls}
    for i in range(args.warmup + args.steps):
        for name, fn in impls.items():
            ms = step(fn, logits, targets)
            if i >= args.warmup:
                times[name].append(ms)
    base = statistics.median(times["F.cross_entropy"])
    print(f"cross-entropy forward+backward, {args.tokens} x {args.vocab} {args.dtype}, "
          f"{torch.get_num_threads()} threads, median of {args.steps}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:16s} {med:9.2f} ms  {med / base:5.2f}x F.cross_entropy  (min {min(ts):.2f} ms)")


if __name__ == "__main__":
    main()
